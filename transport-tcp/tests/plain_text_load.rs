//! Plain-text clients flat out against the real relay driver over 127.0.0.1: every
//! line arrives byte for byte as it was sent, however the relay falls behind
//! (docs/PROTOCOL.md, section 10). Bounded in count and time; nothing here asserts a
//! duration.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use p2pchat_core::Limits;
use support::{WAIT, start_relay_with};

/// Line-by-line senders (each also reading what the next one sends it).
const CLIENTS: usize = 60;

/// Lines each client sends.
const LINES: usize = 4_000;

/// The text of line `seq` from client `from`: its own number and a padding that
/// depends on both, so that a piece of another line can never pass for it.
fn text(from: usize, seq: usize) -> String {
    let letter = char::from(b'a' + ((from + seq) % 26) as u8);
    let pad: String = std::iter::repeat_n(letter, (seq * 7 + from) % 60 + 1).collect();
    format!("{seq} from {from} {pad}")
}

/// A tiny deterministic generator (the test needs variety, not quality).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Connects and waits for the relay's welcome; returns the socket and its reader.
/// `first` is written in two pieces 20 ms apart: on the first line, before the
/// client is known to send newlines, only a pause the relay saw may end a line.
fn join(addr: SocketAddr, id: usize, first: &[u8]) -> (TcpStream, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).expect("a loopback connection");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let cut = (first.len() / 2).max(1);
    stream.write_all(&first[..cut]).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(&format!("* you are client {id} ")),
        "client {id} was told {line:?}"
    );
    // Not a wait: the first line arrives in two pieces with a gap between them (the
    // load this test is about), before the relay knows this client sends newlines.
    thread::sleep(Duration::from_millis(20));
    stream.write_all(&first[cut..]).unwrap();
    (stream, reader)
}

#[test]
fn sixty_plain_text_clients_flat_out_get_every_line_whole() {
    rlimit::increase_nofile_limit(4096).unwrap();
    let addr = smol::block_on(async {
        let (addr, shutdown, _log) = start_relay_with(Limits {
            max_clients: 100,
            message_rate: 0,
            max_connections_per_address: 0,
            // The readers keep up; nobody is to be cut off as a slow consumer.
            max_outbound_bytes: 64 * 1024 * 1024,
            ..Limits::default()
        })
        .await;
        std::mem::forget(shutdown); // the relay lives until the test process ends
        addr
    });
    // Client 0 only reads; client k sends to client k - 1. Each joins with its first
    // line (client 0 with an empty one), so IDs follow the order of joining.
    let mut sockets = Vec::new();
    for k in 0..=CLIENTS {
        let first = if k == 0 {
            b"\n".to_vec()
        } else {
            format!("{} {}\n", k - 1, text(k, 0)).into_bytes()
        };
        sockets.push(join(addr, k, &first));
    }
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (k, (stream, reader)) in sockets.into_iter().enumerate() {
        readers.push(thread::spawn(move || {
            if k < CLIENTS {
                read_all(reader, k + 1)
            } else {
                reader
            }
        }));
        writers.push(thread::spawn(move || {
            if k > 0 { write_all(stream, k) } else { stream }
        }));
    }
    // Every socket stays open until every line has been read: closing one with
    // unread bytes would reset it, and the relay would lose what it had not read.
    let streams: Vec<TcpStream> = writers
        .into_iter()
        .map(|w| w.join().expect("a writer"))
        .collect();
    let readers: Vec<BufReader<TcpStream>> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader"))
        .collect();
    drop((streams, readers));
}

/// Sends lines 1.. of client `k` to `k - 1` flat out, in writes that cut lines at
/// random places, now and then pausing inside a line (a little, or, a few times,
/// longer than the 200 ms pause: once a client has sent a newline, a pause must
/// never end its line).
fn write_all(mut stream: TcpStream, k: usize) -> TcpStream {
    let mut rng = Lcg(k as u64);
    let mut out = Vec::new();
    for seq in 1..LINES {
        out.extend_from_slice(format!("{} {}\n", k - 1, text(k, seq)).as_bytes());
    }
    let mut long_pauses = 0;
    let mut at = 0;
    while at < out.len() {
        let n = (1 + rng.below(8_000) as usize).min(out.len() - at);
        stream.write_all(&out[at..at + n]).unwrap();
        at += n;
        match rng.below(100) {
            0 if long_pauses < 2 => {
                long_pauses += 1;
                thread::sleep(Duration::from_millis(300));
            }
            1..=4 => thread::sleep(Duration::from_millis(rng.below(5))),
            _ => {}
        }
    }
    stream
}

/// Reads until every line client `from` sends has arrived, checking each one.
fn read_all(mut reader: BufReader<TcpStream>, from: usize) -> BufReader<TcpStream> {
    let mut next = 0;
    let mut line = String::new();
    while next < LINES {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading {from}'s line {next}: {e}"));
        assert!(n > 0, "the relay closed before {from}'s line {next}");
        let line = line.trim_end_matches('\n');
        if line.starts_with("* ") {
            assert!(
                line.starts_with("* online: ")
                    || line.ends_with(" joined")
                    || line.ends_with(" left"),
                "an error while reading {from}'s lines: {line:?}"
            );
            continue;
        }
        let expected = format!("{from} {}", text(from, next));
        assert_eq!(line, expected, "line {next} of client {from}");
        next += 1;
    }
    reader
}
