//! Saved sessions on disk: what lets a frontend (`p2pchat join`, `connect`,
//! `listen`), started again after its process died, come back to its session, with
//! its ID and nothing lost.
//!
//! One file per session under the data folder (`sessions/KIND-TARGET-N.session`),
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
//!
//! Beside it, `.shown` records the last message shown from each sender, written
//! right after a burst is shown and before the saved session covering it is put in
//! place: a restarted process skips what was shown, so a message is never lost and
//! is shown twice only if the process dies between those two writes.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use p2pchat_tcp::SessionStore;

use crate::notice::SessionNotice;

/// Whether a session is saved on disk as it goes (see [`crate::saved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saving {
    /// Not saved: a crash ends the session (bots, tests).
    Off,
    /// Saved, and a session left by a process that died is resumed.
    Resume,
    /// Saved, but a session left by a process that died is forgotten first.
    Fresh,
}

/// Claims a slot for the session and reads what it holds (see [`Saving`]).
/// `kind` is the frontend's command (`join`, `listen`, `connect`), `target` what it
/// talks to; `dir` the data folder. Returns the slot, the saved session it holds,
/// and what the user should be told.
pub fn open(
    saving: Saving,
    dir: Option<&Path>,
    kind: &str,
    target: &str,
) -> (Option<SessionSlot>, Option<Vec<u8>>, Vec<SessionNotice>) {
    if saving == Saving::Off {
        return (None, None, vec![]);
    }
    let mut notices = Vec::new();
    let mut warn = |message: String| notices.push(SessionNotice::Warning { message });
    let claimed = match dir {
        Some(dir) => SessionSlot::claim_in(&dir.join("sessions"), kind, target),
        None => Err(SlotError::NoDataFolder),
    };
    let slot = match claimed {
        Ok(slot) => slot,
        Err(e) => {
            warn(format!(
                "{e}; if this process dies, starting it again will not resume its session"
            ));
            return (None, None, notices);
        }
    };
    if saving == Saving::Fresh {
        slot.clear();
        return (Some(slot), None, notices);
    }
    let saved = slot.load().unwrap_or_else(|e| {
        warn(format!("{e}; starting a new session"));
        None
    });
    if saved.is_none() {
        // A new session: what an earlier one showed says nothing about it.
        slot.clear();
    }
    (Some(slot), saved, notices)
}

/// The session saved in `slot` (its bytes `saved`), restored with `restore`; when it
/// cannot be used (damaged, incomplete, another version) it is set aside, and the
/// notice says so.
pub fn restore<M>(
    slot: &SessionSlot,
    saved: &[u8],
    restore: impl FnOnce(&[u8]) -> Result<M, p2pchat_core::RestoreError>,
) -> Result<M, SessionNotice> {
    restore(saved).map_err(|e| {
        slot.clear();
        SessionNotice::SetAside {
            file: slot.path().to_owned(),
            reason: e.to_string(),
        }
    })
}

/// Why a session slot could not be had or read.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// Neither `XDG_DATA_HOME` nor `HOME` is set.
    #[error("neither XDG_DATA_HOME nor HOME is set: nowhere to save the session")]
    NoDataFolder,
    /// The sessions folder could not be created.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A lock file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A lock file could not be locked (for another reason than being held).
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Every slot is held by a running process.
    #[error("{SLOTS} sessions with {target} are in use from {}; close one", dir.display())]
    AllInUse {
        /// The relay or peer.
        target: String,
        /// The sessions folder.
        dir: PathBuf,
    },
    /// The saved session could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

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
    pub fn claim(kind: &str, target: &str) -> Result<SessionSlot, SlotError> {
        let dir = crate::data_dir()
            .ok_or(SlotError::NoDataFolder)?
            .join("sessions");
        SessionSlot::claim_in(&dir, kind, target)
    }

    /// [`SessionSlot::claim`], in the sessions folder `dir` (`DATA/sessions`).
    pub fn claim_in(dir: &Path, kind: &str, target: &str) -> Result<SessionSlot, SlotError> {
        std::fs::create_dir_all(dir).map_err(|source| SlotError::Create {
            path: dir.to_owned(),
            source,
        })?;
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
                .map_err(|source| SlotError::Open {
                    path: lock_path.clone(),
                    source,
                })?;
            match lock.try_lock() {
                Ok(()) => return Ok(SessionSlot { path, _lock: lock }),
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(SlotError::Lock {
                        path: lock_path,
                        source,
                    });
                }
            }
        }
        Err(SlotError::AllInUse {
            target: target.to_owned(),
            dir: dir.to_owned(),
        })
    }

    /// Where the session is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved session, if there is one (an unreadable file is reported as an
    /// error, a missing one is `None`).
    pub fn load(&self) -> Result<Option<Vec<u8>>, SlotError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SlotError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Forgets the saved session (it ended, or cannot be used).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(shown_path(&self.path));
    }

    /// What the driver saves through, and what the frontend commits with right
    /// before it shows what the driver handed on (see [`SessionStore`]).
    pub fn store(&self) -> (Box<dyn SessionStore>, Committer) {
        let file = std::sync::Arc::new(std::sync::Mutex::new(SessionFile {
            path: self.path.clone(),
            prepared: false,
            renamed: false,
            warned: false,
            warning: None,
            shown: Shown::load(&shown_path(&self.path)),
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
    /// Whether a failure was noted (once is enough).
    warned: bool,
    /// A failure the frontend has not yet been told of.
    warning: Option<String>,
    /// The messages shown so far.
    shown: Shown,
}

/// Where the record of shown messages of the session saved at `path` is kept.
fn shown_path(path: &Path) -> PathBuf {
    path.with_extension("shown")
}

/// The last message shown from each sender (its sequence number), kept beside the
/// saved session and written right after each burst is shown, before the saved
/// session that covers it is put in place. A process killed between the two is
/// resumed from the session before, and is sent that burst again: what this record
/// says was shown is not shown twice. (Not flushed to disk: it must survive the
/// process, not the machine.)
struct Shown {
    path: PathBuf,
    /// The record, open once written.
    file: Option<File>,
    /// Whether a whole record was read at the start.
    loaded: bool,
    last: std::collections::BTreeMap<u32, u64>,
    /// Shown since last written.
    dirty: bool,
}

/// How the record of shown messages ends (a torn one is not read).
const SHOWN_END: &str = "end";

impl Shown {
    /// The record at `path` (empty if missing, torn or unreadable: then a burst may
    /// be shown twice, never lost).
    fn load(path: &Path) -> Shown {
        let mut last = std::collections::BTreeMap::new();
        let mut loaded = false;
        if let Ok(text) = std::fs::read_to_string(path)
            && text.lines().last() == Some(SHOWN_END)
        {
            loaded = true;
            for line in text.lines() {
                if let Some((from, seq)) = line.split_once(' ')
                    && let (Ok(from), Ok(seq)) = (from.parse(), seq.parse())
                {
                    last.insert(from, seq);
                }
            }
        }
        Shown {
            path: path.to_owned(),
            file: None,
            loaded,
            last,
            dirty: false,
        }
    }

    /// Whether message `seq` from `from` is new (then it counts as shown).
    fn fresh(&mut self, from: u32, seq: u64) -> bool {
        let last = self.last.entry(from).or_insert(0);
        if seq <= *last {
            return false;
        }
        *last = seq;
        self.dirty = true;
        true
    }

    fn write(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut text = String::new();
        for (from, seq) in &self.last {
            text.push_str(&format!("{from} {seq}\n"));
        }
        text.push_str(SHOWN_END);
        text.push('\n');
        // One write over the old record, never truncated first: a process killed
        // at any instant leaves the old record or the new one. (Entries are only
        // added and numbers only grow, so the new one is never shorter.)
        let file = match &mut self.file {
            Some(file) => file,
            // A record that did not load (missing, torn) is started afresh.
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .truncate(!self.loaded)
                    .write(true)
                    .open(&self.path)?,
            ),
        };
        std::os::unix::fs::FileExt::write_all_at(file, text.as_bytes(), 0)?;
        self.dirty = false;
        Ok(())
    }
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
        // What was shown is recorded before the session that covers it is in place.
        self.shown.write()?;
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
            self.warning = Some(format!(
                "cannot save the session to {}: {e}; if this process dies, starting it again will not resume the session",
                self.path.display()
            ));
        }
    }
}

/// A handle on a session file that the driver prepares into and that either side
/// commits (whichever comes first; the other finds nothing waiting).
#[derive(Clone)]
pub struct Committer(std::sync::Arc<std::sync::Mutex<SessionFile>>);

impl Committer {
    /// Whether message `seq` from `from` (0 for a direct peer) is to be shown: not
    /// if a process that died before this one showed it (it comes again because
    /// the session it saved last was from before). It then counts as shown.
    pub fn fresh(&self, from: u32, seq: u64) -> bool {
        self.0
            .lock()
            .map_or(true, |mut file| file.shown.fresh(from, seq))
    }

    /// The first failure to save, once: the frontend tells its user (saving goes
    /// on being tried, silently).
    pub fn take_warning(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut file| file.warning.take())
    }

    /// Records what was shown, then puts the prepared session in place, if one
    /// waits.
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

    fn is_pending(&self) -> bool {
        self.0.lock().is_ok_and(|file| file.prepared)
    }

    fn clear(&mut self) {
        if let Ok(mut file) = self.0.lock() {
            file.prepared = false;
            let _ = std::fs::remove_file(file.temporary());
            let _ = std::fs::remove_file(&file.path);
        }
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
