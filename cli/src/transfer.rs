//! The file side of the command line: `/send`, `/accept`, `/decline`, `/cancel`,
//! reading and writing files on the core's instructions, hashing with BLAKE3, safe
//! names, `.part` files that are renamed only once the hash matches, and resume.
//!
//! The sender hashes its file once, before offering it (the hash identifies the file,
//! so that sending it again resumes). The receiver hashes while writing, so it never
//! reads the file back. A partial download is kept as `NAME.part` with its offer in
//! `NAME.part.meta`; when the same file is offered again, only the rest is fetched.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use p2pchat_core::{FileEvent, Hash, PeerRef, TransferId};
use p2pchat_tcp::FileCommand;

use crate::ui::Ui;

/// Size of the pieces a file is hashed in.
const HASH_BUF: usize = 256 * 1024;

struct Outgoing {
    path: PathBuf,
    file: File,
    name: String,
    size: u64,
    to: PeerRef,
    progress: Progress,
}

struct Incoming {
    name: String,
    size: u64,
    hash: Hash,
    part: PathBuf,
    file: File,
    hasher: blake3::Hasher,
    progress: Progress,
}

/// An offer waiting for `/accept` or `/decline`.
struct Waiting {
    number: usize,
    from: PeerRef,
    transfer: TransferId,
    name: String,
    size: u64,
    hash: Hash,
}

/// Sparse progress lines: at most one a second, with rate and time left.
struct Progress {
    started: Instant,
    last: Instant,
    base: u64,
}

impl Progress {
    fn new(base: u64) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            base,
        }
    }

    fn line(&mut self, verb: &str, name: &str, done: u64, size: u64) -> Option<String> {
        let now = Instant::now();
        if now.duration_since(self.last).as_secs_f64() < 1.0 || done >= size {
            return None;
        }
        self.last = now;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-3);
        let rate = (done - self.base.min(done)) as f64 / secs;
        let left = if rate > 0.0 {
            (size - done) as f64 / rate
        } else {
            0.0
        };
        Some(format!(
            "* {verb} {name}: {}% of {} at {}/s, about {:.0} s left",
            done * 100 / size.max(1),
            human(size),
            human(rate as u64),
            left
        ))
    }
}

/// The session command for a file step, or nothing if it could not be made (the
/// error is shown). `wrap` makes it a relay or a direct command.
pub fn command<C>(
    ui: &Ui,
    result: Result<FileCommand, String>,
    wrap: fn(FileCommand) -> C,
) -> Vec<C> {
    match result {
        Ok(cmd) => vec![wrap(cmd)],
        Err(e) => {
            ui.err(&format!("error: {e}"));
            vec![]
        }
    }
}

/// `1.5 MiB` and the like.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// All transfers of one session.
pub struct Transfers {
    ui: Ui,
    download_dir: PathBuf,
    auto_accept: bool,
    /// Files offered until the machine numbers them (`Offering`, matched by name,
    /// size and addressee; an offer the machine refused just never matches).
    pending: Vec<(PathBuf, File, PeerRef, String, u64)>,
    outgoing: BTreeMap<TransferId, Outgoing>,
    incoming: BTreeMap<(PeerRef, TransferId), Incoming>,
    waiting: Vec<Waiting>,
    next_number: usize,
    /// How to name the other side in messages.
    who: fn(PeerRef) -> String,
}

impl Transfers {
    /// Transfers saving into `download_dir`.
    pub fn new(
        ui: Ui,
        download_dir: PathBuf,
        auto_accept: bool,
        who: fn(PeerRef) -> String,
    ) -> Self {
        Transfers {
            ui,
            download_dir,
            auto_accept,
            pending: Vec::new(),
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            waiting: Vec::new(),
            next_number: 1,
            who,
        }
    }

    /// `/send PATH`: hashes the file and offers it.
    pub fn send(&mut self, to: PeerRef, path: &str) -> Result<FileCommand, String> {
        let path = PathBuf::from(path);
        let mut file =
            File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        let size = meta.len();
        let hash = hash_prefix(&mut file, size)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        self.pending.push((path, file, to, name.clone(), size));
        Ok(FileCommand::Offer {
            to,
            name,
            size,
            hash,
        })
    }

    /// `/accept [N]`: the oldest waiting offer, or number N.
    pub fn accept(&mut self, number: Option<usize>) -> Result<FileCommand, String> {
        let w = self.take_waiting(number)?;
        self.accept_offer(w)
    }

    /// `/decline [N]`.
    pub fn decline(&mut self, number: Option<usize>) -> Result<FileCommand, String> {
        let w = self.take_waiting(number)?;
        self.ui.out(&format!("* declined {}", w.name));
        Ok(FileCommand::Decline {
            from: w.from,
            transfer: w.transfer,
            reason: "declined by the receiver".into(),
        })
    }

    /// `/cancel`: every transfer under way.
    pub fn cancel_all(&mut self) -> Vec<FileCommand> {
        let mut cmds: Vec<FileCommand> = self
            .outgoing
            .iter()
            .map(|(t, o)| FileCommand::Cancel {
                peer: o.to,
                transfer: *t,
                outgoing: true,
                reason: "cancelled by the sender".into(),
            })
            .collect();
        cmds.extend(self.incoming.keys().map(|(p, t)| FileCommand::Cancel {
            peer: *p,
            transfer: *t,
            outgoing: false,
            reason: "cancelled by the receiver".into(),
        }));
        cmds
    }

    fn take_waiting(&mut self, number: Option<usize>) -> Result<Waiting, String> {
        let pos = match number {
            Some(n) => self.waiting.iter().position(|w| w.number == n),
            None => (!self.waiting.is_empty()).then_some(0),
        };
        match pos {
            Some(i) => Ok(self.waiting.remove(i)),
            None => Err("no such file offer is waiting".into()),
        }
    }

    /// Accepts: opens (or resumes) `NAME.part` in the download folder.
    fn accept_offer(&mut self, w: Waiting) -> Result<FileCommand, String> {
        let name = safe_name(&w.name);
        std::fs::create_dir_all(&self.download_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.download_dir.display()))?;
        let part = self.download_dir.join(format!("{name}.part"));
        let meta_path = self.download_dir.join(format!("{name}.part.meta"));
        let meta = format!("{} {}\n", w.size, hex(&w.hash));
        let resumable =
            std::fs::read_to_string(&meta_path).is_ok_and(|m| m == meta) && part.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!resumable)
            .open(&part)
            .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        std::fs::write(&meta_path, &meta)
            .map_err(|e| format!("cannot write {}: {e}", meta_path.display()))?;
        let held = if resumable {
            file.metadata().map(|m| m.len().min(w.size)).unwrap_or(0)
        } else {
            0
        };
        let mut hasher = blake3::Hasher::new();
        hash_into(&mut file, held, &mut hasher)
            .map_err(|e| format!("cannot read {}: {e}", part.display()))?;
        let prefix_hash = *hasher.clone().finalize().as_bytes();
        if held > 0 {
            self.ui.out(&format!(
                "* resuming {name}: {} of {} already here",
                human(held),
                human(w.size)
            ));
        } else {
            self.ui.out(&format!(
                "* accepted {name} ({}); saving to {}",
                human(w.size),
                part.display()
            ));
        }
        self.incoming.insert(
            (w.from, w.transfer),
            Incoming {
                name,
                size: w.size,
                hash: w.hash,
                part,
                file,
                hasher,
                progress: Progress::new(held),
            },
        );
        Ok(FileCommand::Accept {
            from: w.from,
            transfer: w.transfer,
            offset: held,
            prefix_hash,
        })
    }

    /// Acts on a file event; returns the commands that answer it.
    pub fn on_event(&mut self, event: FileEvent) -> Vec<FileCommand> {
        let who = self.who;
        match event {
            FileEvent::Offering {
                to,
                transfer,
                name,
                size,
            } => {
                let found = self
                    .pending
                    .iter()
                    .position(|(_, _, t, n, s)| *t == to && *n == name && *s == size);
                if let Some((path, file, ..)) = found.map(|i| self.pending.remove(i)) {
                    self.ui.out(&format!(
                        "* offering {name} ({}) to {}; waiting for an answer",
                        human(size),
                        who(to)
                    ));
                    self.outgoing.insert(
                        transfer,
                        Outgoing {
                            path,
                            file,
                            name,
                            size,
                            to,
                            progress: Progress::new(0),
                        },
                    );
                }
                vec![]
            }
            FileEvent::Offered {
                from,
                transfer,
                name,
                size,
                hash,
            } => {
                let number = self.next_number;
                self.next_number += 1;
                let w = Waiting {
                    number,
                    from,
                    transfer,
                    name: name.clone(),
                    size,
                    hash,
                };
                if self.auto_accept {
                    return match self.accept_offer(w) {
                        Ok(cmd) => vec![cmd],
                        Err(e) => {
                            self.ui.err(&format!("error: {e}"));
                            vec![FileCommand::Decline {
                                from,
                                transfer,
                                reason: e,
                            }]
                        }
                    };
                }
                self.ui.out(&format!(
                    "* {} offers {} ({}): /accept {number} or /decline {number}",
                    who(from),
                    crate::format::sanitize(&name),
                    human(size)
                ));
                self.waiting.push(w);
                vec![]
            }
            FileEvent::Accepted {
                to,
                transfer,
                offset,
                prefix_hash,
            } => {
                let Some(out) = self.outgoing.get_mut(&transfer) else {
                    return vec![];
                };
                // Resume only if the receiver's bytes are the start of our file.
                let start = if offset > 0 && prefix_matches(&mut out.file, offset, &prefix_hash) {
                    offset
                } else {
                    0
                };
                out.progress = Progress::new(start);
                if start > 0 {
                    self.ui.out(&format!(
                        "* {} accepted {}; resuming at {}",
                        who(to),
                        out.name,
                        human(start)
                    ));
                } else {
                    self.ui
                        .out(&format!("* {} accepted {}; sending", who(to), out.name));
                }
                vec![FileCommand::Start {
                    transfer,
                    offset: start,
                }]
            }
            FileEvent::Declined {
                to,
                transfer,
                reason,
            } => {
                if let Some(out) = self.outgoing.remove(&transfer) {
                    self.ui
                        .out(&format!("* {} declined {}: {reason}", who(to), out.name));
                }
                vec![]
            }
            FileEvent::ReadChunk {
                transfer,
                offset,
                len,
            } => {
                let Some(out) = self.outgoing.get_mut(&transfer) else {
                    return vec![];
                };
                let mut data = vec![0u8; len];
                let read = out
                    .file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| out.file.read_exact(&mut data));
                match read {
                    Ok(()) => vec![FileCommand::Data {
                        transfer,
                        offset,
                        data,
                    }],
                    Err(e) => {
                        let reason = format!(
                            "cannot read {}: {e} (did it change or vanish?)",
                            out.path.display()
                        );
                        self.ui.err(&format!("error: {reason}"));
                        vec![FileCommand::Cancel {
                            peer: out.to,
                            transfer,
                            outgoing: true,
                            reason,
                        }]
                    }
                }
            }
            FileEvent::Progress {
                to,
                transfer,
                received,
                size,
            } => {
                if let Some(out) = self.outgoing.get_mut(&transfer)
                    && let Some(line) = out.progress.line("sending", &out.name, received, size)
                {
                    let _ = to;
                    self.ui.out(&line);
                }
                vec![]
            }
            FileEvent::Starting {
                from,
                transfer,
                offset,
            } => {
                let Some(inc) = self.incoming.get_mut(&(from, transfer)) else {
                    return vec![];
                };
                let held = inc.file.metadata().map(|m| m.len()).unwrap_or(0);
                if offset != held.min(inc.size) || offset == 0 {
                    // The sender starts over (its file differs from our partial one).
                    inc.hasher = blake3::Hasher::new();
                    let _ = inc.file.set_len(offset);
                }
                inc.progress = Progress::new(offset);
                vec![]
            }
            FileEvent::WriteChunk {
                from,
                transfer,
                offset,
                data,
            } => {
                let Some(inc) = self.incoming.get_mut(&(from, transfer)) else {
                    return vec![];
                };
                let written = inc
                    .file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| inc.file.write_all(&data));
                match written {
                    Ok(()) => {
                        inc.hasher.update(&data);
                        let end = offset + data.len() as u64;
                        if let Some(line) = inc.progress.line("receiving", &inc.name, end, inc.size)
                        {
                            self.ui.out(&line);
                        }
                        vec![FileCommand::Written {
                            from,
                            transfer,
                            written: end,
                        }]
                    }
                    Err(e) => {
                        let reason = format!("cannot write {}: {e}", inc.part.display());
                        self.ui.err(&format!(
                            "error: {reason}; the partial file is kept for a later resume"
                        ));
                        vec![FileCommand::Cancel {
                            peer: from,
                            transfer,
                            outgoing: false,
                            reason,
                        }]
                    }
                }
            }
            FileEvent::AllReceived { from, transfer } => {
                let Some(inc) = self.incoming.remove(&(from, transfer)) else {
                    return vec![];
                };
                let _ = inc.file.sync_all();
                let got = *inc.hasher.finalize().as_bytes();
                if got != inc.hash {
                    let _ = std::fs::remove_file(&inc.part);
                    let _ = std::fs::remove_file(meta_of(&inc.part));
                    let reason =
                        "the received file does not match the offered hash; it was discarded"
                            .to_owned();
                    self.ui.err(&format!("error: {}: {reason}", inc.name));
                    return vec![FileCommand::Finish {
                        from,
                        transfer,
                        ok: false,
                        reason,
                    }];
                }
                let target = unique_path(&self.download_dir, &inc.name);
                match std::fs::rename(&inc.part, &target) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(meta_of(&inc.part));
                        self.ui.out(&format!(
                            "* received {} ({}, BLAKE3 verified) from {}: {}",
                            inc.name,
                            human(inc.size),
                            who(from),
                            target.display()
                        ));
                        vec![FileCommand::Finish {
                            from,
                            transfer,
                            ok: true,
                            reason: String::new(),
                        }]
                    }
                    Err(e) => {
                        let reason = format!(
                            "cannot rename {} to {}: {e}",
                            inc.part.display(),
                            target.display()
                        );
                        self.ui.err(&format!("error: {reason}"));
                        vec![FileCommand::Finish {
                            from,
                            transfer,
                            ok: false,
                            reason,
                        }]
                    }
                }
            }
            FileEvent::Delivered { to, transfer } => {
                if let Some(out) = self.outgoing.remove(&transfer) {
                    self.ui.out(&format!(
                        "* {} delivered to {} ({}, hash verified)",
                        out.name,
                        who(to),
                        human(out.size)
                    ));
                }
                vec![]
            }
            FileEvent::Failed {
                peer,
                transfer,
                outgoing,
                reason,
            } => {
                if outgoing {
                    if let Some(out) = self.outgoing.remove(&transfer) {
                        self.ui.err(&format!(
                            "error: sending {} to {} failed: {reason}",
                            out.name,
                            who(peer)
                        ));
                    }
                } else if let Some(inc) = self.incoming.remove(&(peer, transfer)) {
                    let held = inc.file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.ui.err(&format!(
                        "error: receiving {} from {} stopped at {}% ({reason}); {} is kept: when the same file is sent again, it resumes",
                        inc.name,
                        who(peer),
                        held * 100 / inc.size.max(1),
                        inc.part.display()
                    ));
                } else {
                    self.waiting
                        .retain(|w| !(w.from == peer && w.transfer == transfer));
                }
                vec![]
            }
        }
    }
}

fn meta_of(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes the first `len` bytes of `file` from its start.
fn hash_prefix(file: &mut File, len: u64) -> std::io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    hash_into(file, len, &mut hasher)?;
    Ok(*hasher.finalize().as_bytes())
}

fn hash_into(file: &mut File, len: u64, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; HASH_BUF];
    while left > 0 {
        let n = (left as usize).min(HASH_BUF);
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

fn prefix_matches(file: &mut File, len: u64, expected: &Hash) -> bool {
    hash_prefix(file, len).is_ok_and(|h| &h == expected)
}

/// A file name that cannot escape the download folder or name a device: the last
/// path component, no control characters, no `..`, Windows device names prefixed.
pub fn safe_name(offered: &str) -> String {
    let last = offered.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    let trimmed = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .to_owned();
    let mut name = if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed
    };
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if device {
        name.insert(0, '_');
    }
    name.chars().take(200).collect()
}

/// `dir/name`, or `dir/stem (1).ext`, `dir/stem (2).ext`, ... : never an existing file.
pub fn unique_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1..)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_made_safe() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_name("CON"), "_CON");
        assert_eq!(safe_name("com1.txt"), "_com1.txt");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("a\u{1b}[2Jb.txt"), "a[2Jb.txt");
        assert_eq!(safe_name("report.pdf"), "report.pdf");
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("p2pchat-unique-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(unique_path(&dir, "a.txt"), dir.join("a.txt"));
        std::fs::write(dir.join("a.txt"), b"x").unwrap();
        assert_eq!(unique_path(&dir, "a.txt"), dir.join("a (1).txt"));
        std::fs::write(dir.join("a (1).txt"), b"x").unwrap();
        assert_eq!(unique_path(&dir, "a.txt"), dir.join("a (2).txt"));
        assert_eq!(unique_path(&dir, "noext"), dir.join("noext"));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 * 1024 * 1024), "100.0 MiB");
    }
}
