//! Keys on disk: this installation's identity (created on first use, readable by its
//! owner only), and the keys of the relays and peers met before, so that a changed
//! key is noticed (trust on first use, like SSH's `known_hosts`).
//!
//! Both live in the data folder (`$XDG_DATA_HOME/p2pchat`, else
//! `~/.local/share/p2pchat`): `identity` and `known_peers`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use p2pchat_core::{Encryption, Expect, Identity, PublicKey, RecordCipher, Security};

use crate::data_dir;

/// Why a key could not be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system gave no randomness.
    #[error("no randomness from the system: {0}")]
    NoRandomness(String),
    /// Neither `XDG_DATA_HOME` nor `HOME` is set.
    #[error("neither XDG_DATA_HOME nor HOME is set: nowhere to {0}")]
    NoDataFolder(&'static str),
    /// The identity file holds something else.
    #[error("{} is not a p2pchat identity file", .0.display())]
    NotAnIdentity(PathBuf),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file or folder could not be created.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

const IDENTITY_HEADER: &str = "p2pchat identity v1";
const KNOWN_HEADER: &str = "p2pchat known peers v1";

/// 32 bytes from the operating system's random source.
pub fn random_bytes() -> Result<[u8; 32], KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::NoRandomness(e.to_string()))?;
    Ok(bytes)
}

/// Where the identity is kept.
pub fn identity_path() -> Result<PathBuf, KeyError> {
    identity_path_in(data_dir().as_deref())
}

/// Where the identity is kept in the data folder `dir`.
fn identity_path_in(dir: Option<&Path>) -> Result<PathBuf, KeyError> {
    dir.map(|d| d.join("identity"))
        .ok_or(KeyError::NoDataFolder("keep the key"))
}

/// This installation's identity, created (owner-only) on first use.
pub fn identity() -> Result<Identity, KeyError> {
    identity_in(data_dir().as_deref())
}

/// The identity kept in the data folder `dir` (a frontend's own profile, a test's
/// temporary folder), created (owner-only) on first use.
pub fn identity_in(dir: Option<&Path>) -> Result<Identity, KeyError> {
    let path = identity_path_in(dir)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_identity(&text).ok_or(KeyError::NotAnIdentity(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_identity(&path),
        Err(source) => Err(KeyError::Read { path, source }),
    }
}

fn parse_identity(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()? != IDENTITY_HEADER {
        return None;
    }
    Some(Identity::from_secret(unhex(lines.next()?.trim())?))
}

/// Creates the identity file, or, when another p2pchat process created it first (two
/// started at once on a new machine), gives that one's identity: the file is written
/// under a temporary name and linked into place, so that no reader ever sees it half
/// written and the first of two creators wins for both.
fn create_identity(path: &Path) -> Result<Identity, KeyError> {
    let secret = random_bytes()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Create {
            path: dir.to_owned(),
            source,
        })?;
    }
    // A name of this call's own (threads share the process number).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = path.with_file_name(format!("identity.{}.{call}.new", std::process::id()));
    // A leftover of a crashed process with the same name must not lend its mode.
    let _ = std::fs::remove_file(&temporary);
    let written = write_owner_only(
        &temporary,
        &format!("{IDENTITY_HEADER}\n{}\n", hex(&secret)),
    );
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(Identity::from_secret(secret)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })?;
            parse_identity(&text).ok_or_else(|| KeyError::NotAnIdentity(path.to_owned()))
        }
        Err(source) => Err(KeyError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `text` to a new file only its owner may read, and flushes it to disk.
fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The keys met before, by what they were met as: `host HOST:PORT` (a peer or relay
/// dialled), or `name NAME` (a peer that dialled us and gave that name).
pub struct KnownPeers {
    path: PathBuf,
    keys: BTreeMap<String, PublicKey>,
}

impl KnownPeers {
    /// Loads the file (an absent file is an empty list; damaged lines are skipped).
    pub fn load() -> Result<KnownPeers, KeyError> {
        KnownPeers::load_in(data_dir().as_deref())
    }

    /// Loads the file in the data folder `dir`.
    pub fn load_in(dir: Option<&Path>) -> Result<KnownPeers, KeyError> {
        let path = dir
            .map(|d| d.join("known_peers"))
            .ok_or(KeyError::NoDataFolder("remember keys"))?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(KeyError::Read { path, source }),
        };
        let keys = text
            .lines()
            .filter_map(|line| {
                let (key, label) = line.split_once(' ')?;
                Some((label.to_owned(), PublicKey(unhex(key)?)))
            })
            .collect();
        Ok(KnownPeers { path, keys })
    }

    /// Where the list is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key remembered for `label`.
    pub fn get(&self, label: &str) -> Option<PublicKey> {
        self.keys.get(label).copied()
    }

    /// Every key remembered for a name, by name (what a listening peer checks).
    pub fn by_name(&self) -> BTreeMap<String, PublicKey> {
        self.keys
            .iter()
            .filter_map(|(label, key)| Some((label.strip_prefix("name ")?.to_owned(), *key)))
            .collect()
    }

    /// Remembers `key` for `label` and saves the list.
    pub fn remember(&mut self, label: &str, key: PublicKey) -> Result<(), KeyError> {
        self.keys.insert(label.to_owned(), key);
        let mut text = format!("{KNOWN_HEADER}\n");
        for (label, key) in &self.keys {
            text.push_str(&format!("{} {label}\n", hex(&key.0)));
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Create {
                path: dir.to_owned(),
                source,
            })?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|source| KeyError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// The label a dialled host is remembered by: `host HOST:PORT`.
pub fn host_label(host: &str, default_port: u16) -> String {
    format!("host {}", host_with_port(host, default_port))
}

/// `host` as `HOST:PORT`, with `default_port` when it names none (`[ADDR]:PORT` for
/// an IPv6 address).
pub fn host_with_port(host: &str, default_port: u16) -> String {
    if host
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok() || h.ends_with(']'))
    {
        host.to_owned()
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{default_port}")
    } else {
        format!("{host}:{default_port}")
    }
}

/// What the user asked of a session's security.
#[derive(Debug, Clone)]
pub struct Wishes {
    /// `--insecure`.
    pub insecure: bool,
    /// `--password` (or `P2PCHAT_PASSWORD`).
    pub password: Option<String>,
    /// `--expect FINGERPRINT`.
    pub expect: Option<String>,
    /// The cipher to propose when connecting (`--cipher`; accepting sides follow).
    pub cipher: RecordCipher,
}

impl Wishes {
    /// `--password`, else the environment's `P2PCHAT_PASSWORD` (which keeps it out of
    /// the process list).
    pub fn password_from(arg: Option<String>) -> Option<String> {
        arg.or_else(|| std::env::var("P2PCHAT_PASSWORD").ok())
            .filter(|p| !p.is_empty())
    }

    /// The core's security for a session: our identity (unless `--insecure`), fresh
    /// randomness, and what the other side's key must be. `accepting` sides (a
    /// listening peer, a relay) allow the clear with `--insecure`; connecting ones do
    /// not offer to encrypt with it.
    pub fn security(&self, accepting: bool, expect: Expect) -> Result<Security, KeyError> {
        self.security_in(data_dir().as_deref(), accepting, expect)
    }

    /// [`Wishes::security`] with the identity kept in the data folder `dir`.
    pub fn security_in(
        &self,
        dir: Option<&Path>,
        accepting: bool,
        expect: Expect,
    ) -> Result<Security, KeyError> {
        let encryption = match (self.insecure, accepting) {
            (false, _) => Encryption::Required,
            (true, true) => Encryption::Optional,
            (true, false) => Encryption::Off,
        };
        let identity = if encryption == Encryption::Off {
            None
        } else {
            Some(identity_in(dir)?)
        };
        let expect = match &self.expect {
            Some(fingerprint) => Expect::Fingerprint(fingerprint.clone()),
            None => expect,
        };
        Ok(Security {
            identity,
            encryption,
            seed: random_bytes()?,
            password: self.password.clone(),
            expect,
            cipher: self.cipher,
        })
    }
}

/// What a session knows of the other side's key, to check it (trust on first use)
/// and tell the user what it learned.
pub struct Trust {
    known: Option<KnownPeers>,
    /// What the other side is remembered by, when known before the handshake (a
    /// dialled address).
    label: Option<String>,
    /// `--expect` was given.
    pinned: bool,
}

impl Trust {
    /// Trust for a session with `label` (a dialled address) or none (a listener,
    /// which learns the name later); `pinned` when `--expect` was given.
    pub fn new(label: Option<String>, pinned: bool) -> Trust {
        Trust::new_in(data_dir().as_deref(), label, pinned)
    }

    /// [`Trust::new`] with the known peers kept in the data folder `dir`.
    pub fn new_in(dir: Option<&Path>, label: Option<String>, pinned: bool) -> Trust {
        Trust {
            known: KnownPeers::load_in(dir).ok(),
            label,
            pinned,
        }
    }

    /// What the core must check the key against: the pin, the key remembered for the
    /// address, or (for a listener) the keys remembered by name.
    pub fn expect(&self) -> Expect {
        let known = self.known.as_ref();
        match &self.label {
            Some(label) => known
                .and_then(|k| k.get(label))
                .map_or(Expect::Any, Expect::Key),
            None => Expect::ByName(known.map(KnownPeers::by_name).unwrap_or_default()),
        }
    }

    /// The line telling the user how the session is secured (and with which
    /// cipher); remembers a key met for the first time (under the address, or under
    /// `name` for a listener).
    pub fn describe(
        &mut self,
        name: &str,
        key: Option<PublicKey>,
        cipher: Option<RecordCipher>,
        what: &str,
    ) -> String {
        let enc = match cipher {
            Some(c) => format!("* encrypted ({})", c.name()),
            None => "* encrypted".to_owned(),
        };
        let Some(key) = key else {
            return format!(
                "* NOT ENCRYPTED: the conversation with {what} is in the clear (--insecure)"
            );
        };
        let fp = key.fingerprint();
        if self.pinned {
            return format!("{enc}; {what}'s key {fp} is the one given with --expect");
        }
        let label = self
            .label
            .clone()
            .or_else(|| (!name.is_empty()).then(|| format!("name {name}")));
        let Some(label) = label else {
            return format!(
                "{enc}; {what}'s key is {fp} (it gave no name, so it is not remembered)"
            );
        };
        let Some(known) = self.known.as_mut() else {
            return format!("{enc}; {what}'s key is {fp}");
        };
        if known.get(&label) == Some(key) {
            return format!("{enc}; {what}'s key {fp} is the one remembered");
        }
        match known.remember(&label, key) {
            Ok(()) => format!(
                "{enc}; first contact with {what}: its key {fp} is now remembered in {} (compare it with `p2pchat id` on the other side)",
                known.path().display()
            ),
            Err(e) => format!("{enc}; {what}'s key is {fp} (not remembered: {e})"),
        }
    }

    /// What to do about a refused key.
    pub fn hint(&self) -> String {
        let file = self.known.as_ref().map_or_else(
            || "the known_peers file".to_owned(),
            |k| k.path().display().to_string(),
        );
        format!(
            "p2pchat: if the other side's key really changed (a new installation), remove its line from {file}, or pin the new one with --expect"
        )
    }
}

/// The first 9 characters of a fingerprint, for lists.
pub fn short(key: &PublicKey) -> String {
    key.fingerprint().chars().take(9).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_labelled_with_their_port() {
        assert_eq!(host_label("example.org", 65432), "host example.org:65432");
        assert_eq!(host_label("example.org:7", 65432), "host example.org:7");
        assert_eq!(host_label("::1", 65432), "host [::1]:65432");
        assert_eq!(host_label("[::1]:9", 65432), "host [::1]:9");
    }

    #[test]
    fn an_identity_survives_its_file() {
        let id = Identity::from_secret([9; 32]);
        let text = format!("{IDENTITY_HEADER}\n{}\n", hex(&[9; 32]));
        assert_eq!(parse_identity(&text).map(|i| i.public()), Some(id.public()));
        assert!(parse_identity("garbage").is_none());
    }

    #[test]
    fn processes_creating_the_identity_at_once_all_get_the_first_ones() {
        let dir = std::env::temp_dir().join(format!("p2pchat-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("identity");
        let start = std::sync::Barrier::new(8);
        let keys: Vec<_> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        create_identity(&path).map(|i| i.public())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let on_disk = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| parse_identity(&t));
        let _ = std::fs::remove_dir_all(&dir);
        let on_disk = on_disk.expect("the identity file is whole").public();
        assert!(
            keys.iter().all(|k| k.as_ref().is_ok_and(|k| *k == on_disk)),
            "{keys:?}"
        );
    }
}
