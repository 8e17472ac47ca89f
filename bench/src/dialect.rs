//! The bytes the load generator's clients speak: p2pchat frames, plain-text lines
//! (`ID text` out, `FROM text` in, as `nc` would), or a broker's bare lines.
//!
//! The generator must cost little next to the relay it measures, so this writes
//! messages straight into the output buffer and reads deliveries in place, without
//! allocating per message. It reads only what the bench needs (who sent a delivery,
//! and the send timestamp at the start of its text); the relay's correctness is the
//! business of the tests, not of the benchmark. Framed clients speak the session
//! layer as `p2pchat join` does (they acknowledge what they read, and the relay keeps
//! what it sent them until they do), so that the relay is measured doing the work a
//! real client makes it do.

use std::io::Write as _;

use p2pchat_core::{
    CAP_RESUME, ClientId, Frame, Hello, MAGIC, PROTOCOL_VERSION, Role, is_session_frame,
};

/// Which protocol the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// p2pchat frames.
    Framed,
    /// Plain-text lines, as `nc` sends them to a p2pchat relay or the reference.
    Text,
    /// Raw lines to a broadcast-only broker (`ncat --broker`): no IDs, no greeting.
    Broker,
    /// Real p2pchat clients (the core's `RelayClient`): they say and read everything
    /// themselves, encryption included.
    Machine,
}

/// Something a client read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// The relay admitted the client with this ID.
    Admitted(u32),
    /// The relay refused the client.
    Refused,
    /// A message arrived: its sender (a broker does not say) and the send timestamp
    /// in microseconds, when the text starts with one.
    Delivery {
        /// The sender's ID.
        from: Option<u32>,
        /// When it was sent, on the generator's clock.
        stamp: Option<u64>,
    },
    /// An error or close frame.
    Error,
    /// The stream cannot be read any further (a frame the bench cannot parse).
    Broken,
    /// Bytes of the relay's session stream in what was read (to acknowledge).
    Stream(u64),
}

/// Frame type bytes the scanner looks at (see `docs/PROTOCOL.md`).
const WELCOME: u8 = 0x02;
const REFUSED: u8 = 0x03;
const CHAT: u8 = 0x10;
const DELIVER: u8 = 0x11;
const ERROR: u8 = 0x33;
const CLOSE: u8 = 0x34;
/// Payload kind of text.
const TEXT: u8 = 1;
/// Largest frame the scanner accepts.
const MAX_FRAME: usize = 1 << 20;

impl Dialect {
    /// What a client sends as soon as it is connected.
    pub(crate) fn greeting(self) -> Vec<u8> {
        match self {
            Dialect::Framed => {
                let mut out = MAGIC.to_vec();
                Frame::Hello(Hello {
                    min_version: PROTOCOL_VERSION,
                    max_version: PROTOCOL_VERSION,
                    capabilities: CAP_RESUME,
                    role: Role::RelayClient,
                    name: String::new(),
                    resuming: false,
                })
                .encode(&mut out);
                out
            }
            // An empty line gets a plain-text client admitted.
            Dialect::Text => b"\n".to_vec(),
            Dialect::Broker | Dialect::Machine => Vec::new(),
        }
    }

    /// Bytes at the start of the server's stream that carry no message (the magic).
    pub(crate) fn preamble_len(self) -> usize {
        match self {
            Dialect::Framed => MAGIC.len(),
            Dialect::Text | Dialect::Broker | Dialect::Machine => 0,
        }
    }

    /// Appends one message to `to` whose text is the timestamp `stamp`, a space, and
    /// padding up to `size` bytes.
    pub(crate) fn encode(self, to: ClientId, seq: u64, stamp: u64, size: usize, out: &mut Vec<u8>) {
        match self {
            Dialect::Framed => {
                let start = out.len();
                out.extend_from_slice(&[0, 0, 0, 0, CHAT]);
                out.extend_from_slice(&to.0.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(TEXT);
                write_text(stamp, size, out);
                let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
                if let Some(prefix) = out.get_mut(start..start + 4) {
                    prefix.copy_from_slice(&len.to_be_bytes());
                }
            }
            Dialect::Text => {
                if to.is_broadcast() {
                    out.extend_from_slice(b"/all ");
                } else {
                    let _ = write!(out, "{} ", to.0);
                }
                write_text(stamp, size, out);
                out.push(b'\n');
            }
            Dialect::Broker => {
                write_text(stamp, size, out);
                out.push(b'\n');
            }
            Dialect::Machine => {}
        }
    }

    /// Reads every complete item at the start of `buf`, calling `on` for each;
    /// returns how many bytes were consumed (the rest is an unfinished item).
    pub(crate) fn scan(self, buf: &[u8], mut on: impl FnMut(Incoming)) -> usize {
        match self {
            Dialect::Framed => scan_frames(buf, &mut on),
            Dialect::Text | Dialect::Broker => scan_lines(self, buf, &mut on),
            Dialect::Machine => buf.len(),
        }
    }
}

/// The message text: decimal timestamp, a space, then `x` up to `size` bytes.
fn write_text(stamp: u64, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let _ = write!(out, "{stamp} ");
    let written = out.len() - start;
    out.resize(start + written.max(size), b'x');
}

/// A message text as the generator sends it: timestamp, space, padding.
pub(crate) fn text(stamp: u64, size: usize) -> String {
    let mut out = Vec::new();
    write_text(stamp, size, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The decimal number at the start of `text`, up to the first space.
pub(crate) fn leading_number(text: &[u8]) -> Option<u64> {
    let digits = text.split(|&b| b == b' ').next()?;
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Appends `Ack { received }`.
pub(crate) fn encode_ack(received: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 9, 0x61]);
    out.extend_from_slice(&received.to_be_bytes());
}

fn scan_frames(buf: &[u8], on: &mut impl FnMut(Incoming)) -> usize {
    let mut pos = 0;
    let mut stream = 0u64;
    let used = loop {
        let Some(len) = be_u32(buf, pos).map(|l| l as usize) else {
            break pos;
        };
        if len == 0 || len > MAX_FRAME {
            on(Incoming::Broken);
            return buf.len();
        }
        let Some(frame) = buf.get(pos + 4..pos + 4 + len) else {
            break pos;
        };
        pos += 4 + len;
        let (ty, body) = (frame[0], &frame[1..]);
        if is_session_frame(ty) {
            stream += 4 + len as u64;
        }
        if let Some(item) = frame_item(ty, body) {
            on(item);
        }
    };
    if stream > 0 {
        on(Incoming::Stream(stream));
    }
    used
}

/// What the bench reads in one frame of type `ty` with this body, if anything.
pub(crate) fn frame_item(ty: u8, body: &[u8]) -> Option<Incoming> {
    match ty {
        // Welcome: version u16, capabilities u64, client_id u32, ...
        WELCOME => Some(match be_u32(body, 10) {
            Some(id) => Incoming::Admitted(id),
            None => Incoming::Broken,
        }),
        REFUSED => Some(Incoming::Refused),
        // Deliver: from u32, to u32, seq u64, kind u8, text.
        DELIVER => Some(Incoming::Delivery {
            from: be_u32(body, 0),
            stamp: body.get(17..).and_then(leading_number),
        }),
        ERROR | CLOSE => Some(Incoming::Error),
        _ => None,
    }
}

fn scan_lines(dialect: Dialect, buf: &[u8], on: &mut impl FnMut(Incoming)) -> usize {
    let mut pos = 0;
    while let Some(end) = buf
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    {
        let line = &buf[pos..pos + end];
        pos += end + 1;
        if dialect == Dialect::Broker {
            on(Incoming::Delivery {
                from: None,
                stamp: leading_number(line),
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix(b"* you are client ") {
            match leading_number(rest) {
                Some(id) => on(Incoming::Admitted(id as u32)),
                None => on(Incoming::Broken),
            }
        } else if line.starts_with(b"* server full") {
            on(Incoming::Refused);
        } else if line.first() == Some(&b'*') {
            // Status lines: the roster, joins, notices.
        } else if let Some(space) = line.iter().position(|&b| b == b' ') {
            let from = leading_number(&line[..space]).map(|n| n as u32);
            let stamp = leading_number(&line[space + 1..]);
            on(Incoming::Delivery { from, stamp });
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pchat_core::{FrameDecoder, Payload};

    #[test]
    fn framed_messages_are_real_chat_frames() {
        let mut out = Vec::new();
        Dialect::Framed.encode(ClientId(3), 7, 12345, 24, &mut out);
        let mut d = FrameDecoder::without_magic(1 << 16);
        d.push(&out);
        let expected = format!("12345 {}", "x".repeat(18));
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Chat {
                to: ClientId(3),
                seq: 7,
                payload: Payload::text(&expected)
            })
        );
    }

    #[test]
    fn deliveries_are_read_in_place_across_partial_frames() {
        let frame = Frame::Deliver {
            from: ClientId(4),
            to: ClientId(1),
            seq: 1,
            payload: Payload::text("99 xxxx"),
        }
        .to_bytes();
        let mut two = frame.clone();
        two.extend_from_slice(&frame[..5]);
        let mut got = Vec::new();
        let used = Dialect::Framed.scan(&two, |i| got.push(i));
        assert_eq!(used, frame.len());
        assert_eq!(
            got,
            vec![
                Incoming::Delivery {
                    from: Some(4),
                    stamp: Some(99)
                },
                // The whole frame is session stream, to be acknowledged; the cut one
                // counts once it is complete.
                Incoming::Stream(frame.len() as u64),
            ]
        );
    }

    #[test]
    fn text_lines_give_admission_and_deliveries() {
        let mut got = Vec::new();
        let bytes = b"* you are client 5 (at most 9)\n* online: 5\n2 77 xx\n3 1";
        let used = Dialect::Text.scan(bytes, |i| got.push(i));
        assert_eq!(
            got,
            vec![
                Incoming::Admitted(5),
                Incoming::Delivery {
                    from: Some(2),
                    stamp: Some(77)
                }
            ]
        );
        assert_eq!(used, bytes.len() - 3, "the unfinished line stays");
    }
}
