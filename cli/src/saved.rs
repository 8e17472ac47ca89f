//! Saved sessions on disk: what lets `join` (started again after its process died)
//! come back to its session on the relay, with its ID and nothing lost.
//!
//! One file per session under the data folder (`sessions/join-HOST_PORT-N.session`),
//! written whole to a temporary name, flushed to disk (`fsync`) and renamed into
//! place, so that a crash leaves either the old or the new file, never a mix; the
//! core adds a hash, so a damaged file is noticed and set aside with a note, never
//! half read.
//!
//! Each file has a lock file beside it (`.lock`, an advisory `flock`) held for the
//! process's life. A second `join` started while the first runs (two terminals on one
//! machine) finds slot 0 taken and uses slot 1: it neither steals the first one's
//! session nor is refused. A process that dies releases its lock with it, so the
//! next start takes that slot and resumes.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use p2pchat_tcp::SessionStore;

use crate::keys;

/// How many sessions to the same relay one data folder keeps side by side.
const SLOTS: usize = 16;

/// A session slot this process holds (its lock), and where its file is.
pub struct SessionSlot {
    path: PathBuf,
    /// Held for the process's life: the slot is ours while it is.
    _lock: File,
}

impl SessionSlot {
    /// Takes the first free slot for sessions of `kind` (`join`) with `target` (the
    /// relay's `HOST:PORT`).
    pub fn claim(kind: &str, target: &str) -> Result<SessionSlot, String> {
        let dir = keys::data_dir()
            .ok_or("neither XDG_DATA_HOME nor HOME is set: nowhere to save the session")?
            .join("sessions");
        SessionSlot::claim_in(&dir, kind, target)
    }

    /// [`SessionSlot::claim`], in folder `dir`.
    fn claim_in(dir: &Path, kind: &str, target: &str) -> Result<SessionSlot, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let safe: String = target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        for n in 0..SLOTS {
            let path = dir.join(format!("{kind}-{safe}-{n}.session"));
            let lock_path = path.with_extension("lock");
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
            match lock.try_lock() {
                Ok(()) => return Ok(SessionSlot { path, _lock: lock }),
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", lock_path.display()));
                }
            }
        }
        Err(format!(
            "{SLOTS} sessions with {target} are in use from {}; close one",
            dir.display()
        ))
    }

    /// Where the session is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved session, if there is one (an unreadable file is reported as an
    /// error, a missing one is `None`).
    pub fn load(&self) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Forgets the saved session (it ended, or cannot be used).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// What the driver saves through, and what the frontend commits with right
    /// before it shows what the driver handed on (see [`SessionStore`]).
    pub fn store(&self) -> (Box<dyn SessionStore>, Committer) {
        let file = std::sync::Arc::new(std::sync::Mutex::new(SessionFile {
            path: self.path.clone(),
            prepared: false,
            renamed: false,
            warned: false,
        }));
        (Box::new(Committer(file.clone())), Committer(file))
    }
}

/// Writes a saved session to its file: durably to a temporary name, then renamed
/// into place.
struct SessionFile {
    path: PathBuf,
    /// A prepared session waits under the temporary name.
    prepared: bool,
    /// A rename happened that the folder has not been flushed for yet.
    renamed: bool,
    /// Whether a failure was reported (once is enough).
    warned: bool,
}

impl SessionFile {
    fn temporary(&self) -> PathBuf {
        self.path.with_extension("session.new")
    }

    fn prepare(&mut self, saved: &[u8]) -> std::io::Result<()> {
        // The last rename becomes durable (the folder flushed) here, not right
        // after it: between a rename and the write that shows its events, no time
        // is lost (a power cut may then find the session one step older).
        if self.renamed
            && let Some(dir) = self.path.parent()
        {
            File::open(dir)?.sync_all()?;
            self.renamed = false;
        }
        let mut options = OpenOptions::new();
        options.create(true).truncate(true).write(true);
        // The session holds end-to-end keys: the owner's eyes only.
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(self.temporary())?;
        file.write_all(saved)?;
        file.sync_all()?;
        self.prepared = true;
        Ok(())
    }

    fn commit(&mut self) -> std::io::Result<()> {
        if !self.prepared {
            return Ok(());
        }
        self.prepared = false;
        std::fs::rename(self.temporary(), &self.path)?;
        self.renamed = true;
        Ok(())
    }

    fn warn(&mut self, e: &std::io::Error) {
        if !self.warned {
            self.warned = true;
            eprintln!(
                "warning: cannot save the session to {}: {e}; if this process dies, starting it again will not resume the session",
                self.path.display()
            );
        }
    }
}

/// A handle on a session file that the driver prepares into and that either side
/// commits (whichever comes first; the other finds nothing waiting).
#[derive(Clone)]
pub struct Committer(std::sync::Arc<std::sync::Mutex<SessionFile>>);

impl Committer {
    /// Puts the prepared session in place, if one waits.
    pub fn commit(&self) {
        if let Ok(mut file) = self.0.lock()
            && let Err(e) = file.commit()
        {
            file.warn(&e);
        }
    }
}

impl SessionStore for Committer {
    fn prepare(&mut self, saved: &[u8]) {
        if let Ok(mut file) = self.0.lock()
            && let Err(e) = file.prepare(saved)
        {
            file.warn(&e);
        }
    }

    fn commit(&mut self) {
        Committer::commit(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_takes_the_next_slot_and_a_released_one_is_taken_again() {
        let dir = std::env::temp_dir().join(format!("p2pchat-saved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let claim = || SessionSlot::claim_in(&dir, "join", "127.0.0.1:9").unwrap();
        let first = claim();
        let second = claim();
        assert_ne!(first.path(), second.path());
        assert!(first.path().ends_with("join-127.0.0.1_9-0.session"));
        let (mut store, committer) = first.store();
        store.prepare(b"saved");
        assert_eq!(first.load().unwrap(), None, "prepared, not yet in place");
        committer.commit();
        assert_eq!(first.load().unwrap().as_deref(), Some(&b"saved"[..]));
        let path = first.path().to_owned();
        drop(first);
        let again = claim();
        assert_eq!(again.path(), path);
        again.clear();
        assert_eq!(again.load().unwrap(), None);
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
