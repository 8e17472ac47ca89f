//! The receiving end of one file on disk: a thread of its own writes the chunks,
//! hashes them, and has them flushed to disk as they come.
//!
//! Why a thread: the chat loop also reads the network, and a write to the page cache,
//! a BLAKE3 pass and a flush to disk all take time the network would otherwise wait
//! for. Why flush as it goes: "received and verified" must mean on disk (a power cut
//! after the rename must not leave an empty file), and one flush of a whole file at
//! the end would take seconds per gigabyte; flushing every few megabytes while the
//! rest arrives makes the last flush short.
//!
//! The thread reports back through the transfers' report channel: how far the file is
//! written (the acknowledgement the sender waits for), the final hash, or a failure.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use p2pchat_core::{Hash, PeerRef, TransferId};

use super::Report;

/// Bytes written between two requests to flush to disk. The flusher coalesces
/// requests that pile up during a flush, so a small figure only means it starts
/// sooner and what is left for the last flush is smaller: 8 MiB took a 100 MiB
/// direct transfer from 0.17-0.19 s to 0.15-0.16 s (32 MiB before; at 1 GiB the
/// disk decides either way).
const FLUSH_EVERY: u64 = 8 * 1024 * 1024;

/// What the sink thread is asked to do, in order.
enum Job {
    /// Write these bytes at this offset.
    Chunk { offset: u64, data: Vec<u8> },
    /// The sender starts over from the beginning: drop what is held.
    Restart,
    /// Every byte arrived: flush, and report the hash.
    Finish,
}

/// The handle of a sink thread. Dropping it ends the thread once it has written what
/// it was given (the partial file stays for a later resume).
pub(super) struct Sink {
    jobs: mpsc::Sender<Job>,
    /// Bytes handed to the thread and not yet written.
    backlog: Arc<AtomicU64>,
}

impl Sink {
    /// Starts the thread for the file `from` sends as `transfer`, writing into `file`,
    /// whose first bytes (a resumed download) are already in `hasher`.
    pub(super) fn start(
        from: PeerRef,
        transfer: TransferId,
        file: File,
        hasher: blake3::Hasher,
        reports: async_channel::Sender<Report>,
    ) -> Sink {
        let (jobs, rx) = mpsc::channel();
        let backlog = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            from,
            transfer,
            file,
            hasher,
            reports,
            flusher: None,
            unflushed: 0,
            backlog: backlog.clone(),
        };
        std::thread::Builder::new()
            .name("p2pchat-sink".into())
            .spawn(move || worker.run(rx))
            .map(drop)
            .unwrap_or_else(|e| eprintln!("p2pchat: cannot start a file writer: {e}"));
        Sink { jobs, backlog }
    }

    pub(super) fn write(&self, offset: u64, data: Vec<u8>) {
        self.backlog.fetch_add(data.len() as u64, Ordering::Relaxed);
        let _ = self.jobs.send(Job::Chunk { offset, data });
    }

    /// Bytes handed over and not yet written.
    pub(super) fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    pub(super) fn restart(&self) {
        let _ = self.jobs.send(Job::Restart);
    }

    pub(super) fn finish(&self) {
        let _ = self.jobs.send(Job::Finish);
    }
}

struct Worker {
    from: PeerRef,
    transfer: TransferId,
    file: File,
    hasher: blake3::Hasher,
    reports: async_channel::Sender<Report>,
    /// The thread that flushes to disk while writing goes on, and how to wake it.
    flusher: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Bytes written since the last flush request.
    unflushed: u64,
    /// Shared with the [`Sink`]: bytes handed over and not yet written.
    backlog: Arc<AtomicU64>,
}

impl Worker {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        // How far the file is written and not yet reported: reported when no more
        // work is waiting, so that under load one report covers several chunks (each
        // report wakes the chat loop on another thread).
        let mut unreported = None;
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Empty) => {
                    if let Some(written) = unreported.take() {
                        self.report_written(written);
                    }
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            };
            let result = match job {
                Job::Chunk { offset, data } => self.write(offset, &data).map(|written| {
                    unreported = Some(written);
                }),
                Job::Restart => self.restart(),
                Job::Finish => {
                    if let Some(written) = unreported.take() {
                        self.report_written(written);
                    }
                    let report = match self.finish() {
                        Ok(hash) => Report::Received {
                            from: self.from,
                            transfer: self.transfer,
                            hash,
                        },
                        Err(e) => self.failure(&e),
                    };
                    let _ = self.reports.send_blocking(report);
                    return;
                }
            };
            if let Err(e) = result {
                let _ = self.reports.send_blocking(self.failure(&e));
                return;
            }
        }
        // The transfer was abandoned: what is written stays, for a later resume.
        self.stop_flusher();
    }

    fn failure(&self, e: &std::io::Error) -> Report {
        Report::WriteFailed {
            from: self.from,
            transfer: self.transfer,
            reason: e.to_string(),
        }
    }

    /// Writes and hashes a chunk; returns how far the file is now written.
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<u64> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.backlog.fetch_sub(data.len() as u64, Ordering::Relaxed);
        self.unflushed += data.len() as u64;
        if self.unflushed >= FLUSH_EVERY {
            self.unflushed = 0;
            self.request_flush()?;
        }
        Ok(offset + data.len() as u64)
    }

    fn report_written(&self, written: u64) {
        let _ = self.reports.send_blocking(Report::Written {
            from: self.from,
            transfer: self.transfer,
            written,
        });
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.hasher = blake3::Hasher::new();
        self.file.set_len(0)
    }

    /// Asks the flusher thread (started on first use) to flush what is written so far.
    fn request_flush(&mut self) -> std::io::Result<()> {
        if self.flusher.is_none() {
            let file = self.file.try_clone()?;
            let (tx, rx) = mpsc::channel::<()>();
            let handle = std::thread::Builder::new()
                .name("p2pchat-flush".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        // Requests that piled up during a flush are covered by the next.
                        while rx.try_recv().is_ok() {}
                        let _ = file.sync_data();
                    }
                })?;
            self.flusher = Some((tx, handle));
        }
        if let Some((tx, _)) = &self.flusher {
            let _ = tx.send(());
        }
        Ok(())
    }

    fn stop_flusher(&mut self) {
        if let Some((tx, handle)) = self.flusher.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// Flushes the whole file to disk and gives the hash of what was written.
    fn finish(&mut self) -> std::io::Result<Hash> {
        self.stop_flusher();
        self.file.sync_all()?;
        Ok(*self.hasher.finalize().as_bytes())
    }
}
