//! The two tasks that serve one TCP connection: a reader that forwards what arrives,
//! and a writer that writes what the core produced and reports how much it wrote.
//!
//! Both the relay and the single-connection sessions use them, so that closing,
//! lingering and error handling are the same everywhere. The reader reports
//! [`IoEvent::Closed`] exactly once, whatever ended the connection; the owner then
//! calls [`ConnIo::close`], and the writer sends what is still queued before closing.

use std::net::Shutdown;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// Size of one read.
const READ_CHUNK: usize = 16 * 1024;

/// How long a closing connection waits for the other side's FIN after sending its own,
/// so that a reset does not destroy the last bytes on their way.
const LINGER: Duration = Duration::from_secs(2);

/// What happened on a connection.
#[derive(Debug)]
pub(crate) enum IoEvent {
    /// Bytes arrived.
    Received(Vec<u8>),
    /// This many bytes of what the writer was given were written to the socket.
    Written(usize),
    /// The connection is over (EOF, error, or our own close).
    Closed,
}

/// What the writer should do next.
#[derive(Debug)]
pub(crate) enum WriteCmd {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Everything is written: half-close, linger, then close for good.
    Close,
}

/// The handle the owner of a connection keeps.
#[derive(Debug, Clone)]
pub(crate) struct ConnIo {
    pub writer: Sender<WriteCmd>,
    stream: TcpStream,
}

impl ConnIo {
    /// Queues bytes for the writer (never blocks: the core bounds what is in flight).
    pub(crate) fn write(&self, bytes: Vec<u8>) {
        let _ = self.writer.try_send(WriteCmd::Bytes(bytes));
    }

    /// Asks the writer to close after what is queued, and makes sure the connection
    /// is gone after `deadline` even if the other side never reads.
    pub(crate) fn close(&self, deadline: Duration) {
        let _ = self.writer.try_send(WriteCmd::Close);
        let stream = self.stream.clone();
        smol::spawn(async move {
            smol::Timer::after(deadline).await;
            let _ = stream.shutdown(Shutdown::Both);
        })
        .detach();
    }
}

/// Spawns the reader and writer of `stream`; their reports go to `events`, each
/// wrapped by `wrap` (which tags them with the connection's handle).
pub(crate) fn spawn_conn<T, F>(stream: TcpStream, events: Sender<T>, wrap: F) -> ConnIo
where
    T: Send + 'static,
    F: Fn(IoEvent) -> T + Send + Sync + Clone + 'static,
{
    let _ = stream.set_nodelay(true);
    let (writer_tx, writer_rx) = async_channel::unbounded();
    smol::spawn(read_loop(stream.clone(), events.clone(), wrap.clone())).detach();
    smol::spawn(write_loop(stream.clone(), writer_rx, events, wrap)).detach();
    ConnIo {
        writer: writer_tx,
        stream,
    }
}

async fn read_loop<T, F>(mut stream: TcpStream, events: Sender<T>, wrap: F)
where
    F: Fn(IoEvent) -> T,
{
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match stream.read(&mut buf).await {
            // End of stream is only the other side's half-close: what we still have
            // to send goes out; the writer closes the socket once the owner says so.
            Ok(0) => break,
            Err(_) => {
                let _ = stream.shutdown(Shutdown::Both);
                break;
            }
            Ok(n) => {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                if events.send(wrap(IoEvent::Received(bytes))).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = events.send(wrap(IoEvent::Closed)).await;
}

async fn write_loop<T, F>(
    mut stream: TcpStream,
    commands: Receiver<WriteCmd>,
    events: Sender<T>,
    wrap: F,
) where
    F: Fn(IoEvent) -> T,
{
    while let Ok(cmd) = commands.recv().await {
        match cmd {
            WriteCmd::Bytes(mut batch) => {
                // Coalesce whatever else is already waiting into one write. The batch
                // is dropped after the write: an idle connection keeps no buffer
                // (keeping the largest one, a roster say, cost 16 KB per connection).
                let mut close_after = false;
                while let Ok(next) = commands.try_recv() {
                    match next {
                        WriteCmd::Bytes(more) => batch.extend_from_slice(&more),
                        WriteCmd::Close => {
                            close_after = true;
                            break;
                        }
                    }
                }
                if stream.write_all(&batch).await.is_err() {
                    break;
                }
                let written = batch.len();
                drop(batch);
                if events.send(wrap(IoEvent::Written(written))).await.is_err() {
                    break;
                }
                if close_after {
                    linger_and_close(&mut stream).await;
                    return;
                }
            }
            WriteCmd::Close => {
                linger_and_close(&mut stream).await;
                return;
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Sends FIN, gives the other side a moment to read and close, then closes for good
/// (which also ends the reader).
async fn linger_and_close(stream: &mut TcpStream) {
    let _ = stream.flush().await;
    let _ = stream.shutdown(Shutdown::Write);
    smol::Timer::after(LINGER).await;
    let _ = stream.shutdown(Shutdown::Both);
}
