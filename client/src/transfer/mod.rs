//! File transfers to and from disk, for any frontend: `/send`, `/accept`,
//! `/decline`, `/cancel`, reading and writing files on the core's instructions,
//! hashing with BLAKE3, safe names, `.part` files that are renamed only once the hash
//! matches, and resume. What the user should learn is queued as [`TransferNotice`]s
//! ([`Transfers::take_notices`]); the frontend words them.
//!
//! The sender offers a file at once and hashes it as it reads it for sending: one
//! pass over it, and the hash goes with `Done`. It checks at the end that the file
//! did not change meanwhile (its size and modification time), since the hash then
//! would vouch for a mix of two versions. The receiver writes, hashes and flushes on a
//! thread per file ([`sink`]), so it never reads the file back and the network never
//! waits for the disk. A partial download is kept as `NAME.part` with its size in
//! `NAME.part.meta`; when a file of that name and size is offered again, its sender
//! checks the partial file's hash against the start of its own, and only the rest is
//! fetched if they match.
//!
//! The writing threads report back through one channel ([`Transfers::reports`]); the
//! chat loop hands each [`Report`] to [`Transfers::on_report`].

mod hashing;
mod names;
mod notice;
mod sink;

pub use names::{safe_name, unique_path};
pub use notice::TransferNotice;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use p2pchat_core::{FileEvent, Hash, PeerRef, TransferId};
use p2pchat_tcp::FileCommand;

pub use hashing::hash_whole_file;
use hashing::{hash_into, prefix_matches};
use sink::Sink;

/// Bytes a file's sink thread may hold unwritten while its chunks are acknowledged at
/// once; past it, acknowledgements wait for the disk.
const SINK_AHEAD: u64 = 4 * 1024 * 1024;

/// What the file threads report to the chat loop.
pub enum Report {
    /// A received file is written up to here.
    Written {
        /// Its sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// Bytes written.
        written: u64,
    },
    /// A received file is complete and flushed to disk; this is the hash of its bytes.
    Received {
        /// Its sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// BLAKE3 of what was written.
        hash: Hash,
    },
    /// Writing a received file failed.
    WriteFailed {
        /// Its sender.
        from: PeerRef,
        /// Its transfer.
        transfer: TransferId,
        /// Why, in words.
        reason: String,
    },
}

struct Outgoing {
    path: PathBuf,
    file: File,
    name: String,
    size: u64,
    /// When the file was last changed, as of the offer (to notice a change under way).
    modified: Option<SystemTime>,
    to: PeerRef,
    progress: Progress,
    /// BLAKE3 of the file so far: the prefix the receiver held, then every chunk read.
    hasher: blake3::Hasher,
    /// Bytes in `hasher`: the next chunk must start here.
    hashed: u64,
}

impl Outgoing {
    /// The last byte was read: the file's hash, unless the file changed while it was
    /// being sent (then the transfer is cancelled: the hash would vouch for a mix of
    /// two versions).
    fn finish_hashing(&self, transfer: TransferId) -> FileCommand {
        let changed = match self.file.metadata() {
            Ok(meta) => meta.len() != self.size || meta.modified().ok() != self.modified,
            Err(_) => true,
        };
        if changed {
            return self.cancel(
                transfer,
                format!(
                    "{} changed while it was being sent; send it again",
                    self.path.display()
                ),
            );
        }
        FileCommand::Hashed {
            transfer,
            hash: *self.hasher.finalize().as_bytes(),
        }
    }

    /// Cancels sending it, for `reason`.
    fn cancel(&self, transfer: TransferId, reason: String) -> FileCommand {
        FileCommand::Cancel {
            peer: self.to,
            transfer,
            outgoing: true,
            reason,
        }
    }

    /// Why sending it stops when reading it failed with `e`.
    fn read_failure(&self, e: &std::io::Error) -> String {
        format!(
            "cannot read {}: {e} (did it change or vanish?)",
            self.path.display()
        )
    }
}

/// A file offered, until the machine numbers it (`Offering`).
struct Pending {
    path: PathBuf,
    file: File,
    to: PeerRef,
    name: String,
    size: u64,
    modified: Option<SystemTime>,
}

struct Incoming {
    name: String,
    size: u64,
    /// The sender's hash of the whole file, once `Done` brought it.
    expected: Option<Hash>,
    part: PathBuf,
    /// Bytes of an earlier attempt found in the `.part` file when accepting.
    held: u64,
    /// Bytes written so far.
    written: u64,
    /// Bytes acknowledged to the sender: written, or taken by the sink while its
    /// backlog is short (so that the network does not wait for the disk, and memory
    /// stays bounded when the disk is the slower).
    acked: u64,
    sink: Sink,
    progress: Progress,
}

/// An offer waiting for `/accept` or `/decline`.
struct Waiting {
    number: usize,
    from: PeerRef,
    transfer: TransferId,
    name: String,
    size: u64,
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

    fn notice(
        &mut self,
        sending: bool,
        name: &str,
        done: u64,
        size: u64,
    ) -> Option<TransferNotice> {
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
        Some(TransferNotice::FileProgress {
            sending,
            name: name.to_owned(),
            done,
            size,
            rate: rate as u64,
            left_s: left.round() as u64,
        })
    }
}

/// Why a file step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The file to send could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// What was named is not a file (a folder, a device).
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    /// `/accept N` or `/decline N` for an offer that is not waiting.
    #[error("no such file offer is waiting")]
    NoSuchOffer,
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
    /// What the user should learn, oldest first.
    notices: VecDeque<TransferNotice>,
    download_dir: PathBuf,
    auto_accept: bool,
    /// Files offered until the machine numbers them (`Offering`, matched by name,
    /// size and addressee; an offer the machine refused just never matches).
    pending: Vec<Pending>,
    outgoing: BTreeMap<TransferId, Outgoing>,
    incoming: BTreeMap<(PeerRef, TransferId), Incoming>,
    waiting: Vec<Waiting>,
    next_number: usize,
    /// How to name the other side in messages.
    who: fn(PeerRef) -> String,
    /// Where the writing threads report.
    reports: (
        async_channel::Sender<Report>,
        async_channel::Receiver<Report>,
    ),
}

impl Transfers {
    /// Transfers saving into `download_dir`.
    pub fn new(download_dir: PathBuf, auto_accept: bool, who: fn(PeerRef) -> String) -> Self {
        Transfers {
            notices: VecDeque::new(),
            download_dir,
            auto_accept,
            pending: Vec::new(),
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            waiting: Vec::new(),
            next_number: 1,
            who,
            reports: async_channel::unbounded(),
        }
    }

    /// What the user should learn since the last call, oldest first.
    pub fn take_notices(&mut self) -> impl Iterator<Item = TransferNotice> + '_ {
        self.notices.drain(..)
    }

    fn tell(&mut self, notice: TransferNotice) {
        self.notices.push_back(notice);
    }

    fn problem(&mut self, message: String) {
        self.tell(TransferNotice::FileProblem { message });
    }

    /// Where the file threads report; hand each report to [`Transfers::on_report`].
    pub fn reports(&self) -> async_channel::Receiver<Report> {
        self.reports.1.clone()
    }

    /// `/send PATH`: offers the file at once (it is hashed as it is sent).
    pub fn send(&mut self, to: PeerRef, path: &str) -> Result<FileCommand, TransferError> {
        let path = PathBuf::from(path);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(source) => return Err(TransferError::Open { path, source }),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(source) => return Err(TransferError::Read { path, source }),
        };
        if !meta.is_file() {
            return Err(TransferError::NotAFile(path));
        }
        let size = meta.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        self.pending.push(Pending {
            path,
            file,
            to,
            name: name.clone(),
            size,
            modified: meta.modified().ok(),
        });
        Ok(FileCommand::Offer { to, name, size })
    }

    /// `/accept [N]`: the oldest waiting offer, or number N.
    pub fn accept(&mut self, number: Option<usize>) -> Result<FileCommand, TransferError> {
        let w = self.take_waiting(number)?;
        self.accept_offer(w)
    }

    /// `/decline [N]`.
    pub fn decline(&mut self, number: Option<usize>) -> Result<FileCommand, TransferError> {
        let w = self.take_waiting(number)?;
        self.tell(TransferNotice::FileDeclined {
            name: w.name.clone(),
        });
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

    fn take_waiting(&mut self, number: Option<usize>) -> Result<Waiting, TransferError> {
        let pos = match number {
            Some(n) => self.waiting.iter().position(|w| w.number == n),
            None => (!self.waiting.is_empty()).then_some(0),
        };
        match pos {
            Some(i) => Ok(self.waiting.remove(i)),
            None => Err(TransferError::NoSuchOffer),
        }
    }

    /// Accepts: opens (or resumes) `NAME.part` in the download folder.
    fn accept_offer(&mut self, w: Waiting) -> Result<FileCommand, TransferError> {
        let name = safe_name(&w.name);
        std::fs::create_dir_all(&self.download_dir).map_err(|source| TransferError::Create {
            path: self.download_dir.clone(),
            source,
        })?;
        let part = self.download_dir.join(format!("{name}.part"));
        let meta_path = self.download_dir.join(format!("{name}.part.meta"));
        // A partial file is kept under the name; its size must match too. Whether its
        // bytes are the start of the offered file is the sender's check (`Accept`
        // carries their hash).
        let meta = format!("{}\n", w.size);
        let resumable =
            std::fs::read_to_string(&meta_path).is_ok_and(|m| m == meta) && part.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!resumable)
            .open(&part)
            .map_err(|source| TransferError::Create {
                path: part.clone(),
                source,
            })?;
        std::fs::write(&meta_path, &meta).map_err(|source| TransferError::Write {
            path: meta_path.clone(),
            source,
        })?;
        let held = if resumable {
            file.metadata().map(|m| m.len().min(w.size)).unwrap_or(0)
        } else {
            0
        };
        let mut hasher = blake3::Hasher::new();
        hash_into(&mut file, held, &mut hasher).map_err(|source| TransferError::Read {
            path: part.clone(),
            source,
        })?;
        let prefix_hash = *hasher.clone().finalize().as_bytes();
        self.tell(TransferNotice::FileAccepted {
            name: name.clone(),
            size: w.size,
            resumed_at: held,
            part: part.clone(),
        });
        let sink = Sink::start(w.from, w.transfer, file, hasher, self.reports.0.clone());
        self.incoming.insert(
            (w.from, w.transfer),
            Incoming {
                name,
                size: w.size,
                expected: None,
                part,
                held,
                written: held,
                acked: held,
                sink,
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
                    .position(|p| p.to == to && p.name == name && p.size == size);
                if let Some(p) = found.map(|i| self.pending.remove(i)) {
                    self.tell(TransferNotice::FileOffering {
                        name: name.clone(),
                        size,
                        to: who(to),
                    });
                    self.outgoing.insert(
                        transfer,
                        Outgoing {
                            path: p.path,
                            file: p.file,
                            name,
                            size,
                            modified: p.modified,
                            to,
                            progress: Progress::new(0),
                            hasher: blake3::Hasher::new(),
                            hashed: 0,
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
            } => {
                let number = self.next_number;
                self.next_number += 1;
                let w = Waiting {
                    number,
                    from,
                    transfer,
                    name: name.clone(),
                    size,
                };
                if self.auto_accept {
                    return match self.accept_offer(w) {
                        Ok(cmd) => vec![cmd],
                        Err(e) => {
                            let reason = e.to_string();
                            self.problem(reason.clone());
                            vec![FileCommand::Decline {
                                from,
                                transfer,
                                reason,
                            }]
                        }
                    };
                }
                self.tell(TransferNotice::FileOffered {
                    number,
                    from: who(from),
                    name,
                    size,
                });
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
                // Resume only if the receiver's bytes are the start of our file; their
                // hash is then the start of ours.
                let mut hasher = blake3::Hasher::new();
                let start = if offset > 0
                    && prefix_matches(&mut out.file, offset, &prefix_hash, &mut hasher)
                {
                    offset
                } else {
                    hasher = blake3::Hasher::new();
                    0
                };
                out.hasher = hasher;
                out.hashed = start;
                // Chunks are read in order from here on (`ReadChunk` checks), so this
                // is the one seek.
                if let Err(e) = out.file.seek(SeekFrom::Start(start)) {
                    let reason = out.read_failure(&e);
                    let cancel = out.cancel(transfer, reason.clone());
                    self.problem(reason);
                    return vec![cancel];
                }
                out.progress = Progress::new(start);
                let notice = TransferNotice::FilePeerAccepted {
                    to: who(to),
                    name: out.name.clone(),
                    offset: start,
                };
                let mut cmds = vec![FileCommand::Start {
                    transfer,
                    offset: start,
                }];
                if start == out.size {
                    // Nothing left to read (an empty file, or all of it resumed).
                    cmds.push(out.finish_hashing(transfer));
                }
                self.tell(notice);
                cmds
            }
            FileEvent::Declined {
                to,
                transfer,
                reason,
            } => {
                if let Some(out) = self.outgoing.remove(&transfer) {
                    self.tell(TransferNotice::FilePeerDeclined {
                        to: who(to),
                        name: out.name,
                        reason,
                    });
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
                if offset != out.hashed {
                    // The machine asks in order; a gap would leave the hash wrong.
                    let reason = format!(
                        "chunk at {offset} asked for, {} expected (a bug: please report it)",
                        out.hashed
                    );
                    let cancel = out.cancel(transfer, reason.clone());
                    self.problem(reason);
                    return vec![cancel];
                }
                // The file is where the last chunk ended (seeking once, at `Accepted`).
                // Read into fresh capacity: `read_to_end` fills it without zeroing it
                // first (a `vec![0; len]` cost a `memset` per byte sent).
                let mut data = Vec::with_capacity(len);
                let read = (&mut out.file)
                    .take(len as u64)
                    .read_to_end(&mut data)
                    .and_then(|n| {
                        if n == len {
                            Ok(())
                        } else {
                            Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("it ended {} bytes early", len - n),
                            ))
                        }
                    });
                match read {
                    Ok(()) => {
                        out.hasher.update(&data);
                        out.hashed += len as u64;
                        let mut cmds = vec![FileCommand::Data {
                            transfer,
                            offset,
                            data,
                        }];
                        if out.hashed == out.size {
                            cmds.push(out.finish_hashing(transfer));
                        }
                        cmds
                    }
                    Err(e) => {
                        let reason = out.read_failure(&e);
                        let cancel = out.cancel(transfer, reason.clone());
                        self.problem(reason);
                        vec![cancel]
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
                    && let Some(notice) = out.progress.notice(true, &out.name, received, size)
                {
                    let _ = to;
                    self.tell(notice);
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
                if offset != inc.held.min(inc.size) || offset == 0 {
                    // The sender starts over (its file differs from our partial one).
                    inc.sink.restart();
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
                // The sink thread writes it. While its backlog is short the chunk is
                // acknowledged at once; past that, when the sink reports it written.
                let Some(inc) = self.incoming.get_mut(&(from, transfer)) else {
                    return vec![];
                };
                let end = offset + data.len() as u64;
                inc.sink.write(offset, data);
                if inc.sink.backlog() > SINK_AHEAD {
                    return vec![];
                }
                inc.acked = inc.acked.max(end);
                vec![FileCommand::Written {
                    from,
                    transfer,
                    written: end,
                }]
            }
            FileEvent::AllReceived {
                from,
                transfer,
                hash,
            } => {
                // The sink thread flushes and reports `Received` with the hash of
                // what it wrote, to compare with the sender's.
                if let Some(inc) = self.incoming.get_mut(&(from, transfer)) {
                    inc.expected = Some(hash);
                    inc.sink.finish();
                }
                vec![]
            }
            FileEvent::Delivered { to, transfer } => {
                if let Some(out) = self.outgoing.remove(&transfer) {
                    self.tell(TransferNotice::FileDelivered {
                        to: who(to),
                        name: out.name,
                        size: out.size,
                    });
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
                        self.tell(TransferNotice::FileSendFailed {
                            to: who(peer),
                            name: out.name,
                            reason,
                        });
                    }
                } else if let Some(inc) = self.incoming.remove(&(peer, transfer)) {
                    self.tell(TransferNotice::FileReceiveStopped {
                        from: who(peer),
                        percent: inc.written * 100 / inc.size.max(1),
                        name: inc.name,
                        reason,
                        part: inc.part,
                    });
                } else {
                    self.waiting
                        .retain(|w| !(w.from == peer && w.transfer == transfer));
                }
                vec![]
            }
        }
    }
}

impl Transfers {
    /// Acts on what a writing thread reports; returns the commands that follow from
    /// it.
    pub fn on_report(&mut self, report: Report) -> Vec<FileCommand> {
        let who = self.who;
        match report {
            Report::Written {
                from,
                transfer,
                written,
            } => {
                let Some(inc) = self.incoming.get_mut(&(from, transfer)) else {
                    return vec![];
                };
                inc.written = written;
                if let Some(notice) = inc.progress.notice(false, &inc.name, written, inc.size) {
                    // (The queue itself: `inc` still borrows the transfers.)
                    self.notices.push_back(notice);
                }
                if written <= inc.acked {
                    return vec![];
                }
                inc.acked = written;
                vec![FileCommand::Written {
                    from,
                    transfer,
                    written,
                }]
            }
            Report::WriteFailed {
                from,
                transfer,
                reason,
            } => {
                let Some(inc) = self.incoming.remove(&(from, transfer)) else {
                    return vec![];
                };
                let reason = format!("cannot write {}: {reason}", inc.part.display());
                self.problem(format!(
                    "{reason}; the partial file is kept for a later resume"
                ));
                vec![FileCommand::Cancel {
                    peer: from,
                    transfer,
                    outgoing: false,
                    reason,
                }]
            }
            Report::Received {
                from,
                transfer,
                hash,
            } => {
                let Some(inc) = self.incoming.remove(&(from, transfer)) else {
                    return vec![];
                };
                if inc.expected != Some(hash) {
                    let _ = std::fs::remove_file(&inc.part);
                    let _ = std::fs::remove_file(meta_of(&inc.part));
                    let reason =
                        "the received file does not match the sender's hash; it was discarded"
                            .to_owned();
                    self.problem(format!("{}: {reason}", inc.name));
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
                        self.tell(TransferNotice::FileReceived {
                            from: who(from),
                            name: inc.name,
                            size: inc.size,
                            path: target,
                        });
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
                        self.problem(reason.clone());
                        vec![FileCommand::Finish {
                            from,
                            transfer,
                            ok: false,
                            reason,
                        }]
                    }
                }
            }
        }
    }
}

fn meta_of(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 * 1024 * 1024), "100.0 MiB");
    }
}
