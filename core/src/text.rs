//! The plain-text wire format: what the original app spoke, and what `nc` and
//! `telnet` speak. Lines of UTF-8 in both directions: `ID message` in, `FROM message`
//! out on a relay; bare lines between direct peers; `exit` as a bare word.
//!
//! A line ends at `\n` (a trailing `\r` is dropped), or when the sender pauses: the
//! original app sent each message with one `send()` and no newline, so a pause in its
//! bytes is the only end of message it has. Lines are bounded like frames.

use core::time::Duration;

use crate::frame::{Frame, PayloadKind};
use crate::id::ClientId;
use crate::time::Timestamp;

/// A complete piece of plain-text input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextInput {
    /// A line, without its line ending.
    Line(String),
    /// A line that is not valid UTF-8 (dropped; the sender is told).
    InvalidUtf8,
    /// A line longer than the limit: the connection must be cut off.
    TooLong,
}

/// Splits a plain-text byte stream into lines, at newlines or pauses.
#[derive(Debug, Clone)]
pub(crate) struct LineReader {
    partial: Vec<u8>,
    max_line: usize,
    pause: Duration,
    flush_at: Option<Timestamp>,
    failed: bool,
}

impl LineReader {
    pub(crate) fn new(max_line: usize, pause: Duration) -> Self {
        LineReader {
            partial: Vec::new(),
            max_line,
            pause,
            flush_at: None,
            failed: false,
        }
    }

    /// Takes bytes; returns the lines they complete. A remainder waits for its
    /// newline or for the pause to pass ([`LineReader::flush_at`]).
    pub(crate) fn push(&mut self, bytes: &[u8], now: Timestamp) -> Vec<TextInput> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.len() + line.len() > self.max_line {
                return self.fail(out);
            }
            self.partial.extend_from_slice(line);
            out.push(self.take_line());
        }
        if self.partial.len() + rest.len() > self.max_line {
            return self.fail(out);
        }
        self.partial.extend_from_slice(rest);
        self.flush_at = (!self.partial.is_empty()).then(|| now + self.pause);
        out
    }

    fn fail(&mut self, mut out: Vec<TextInput>) -> Vec<TextInput> {
        self.failed = true;
        self.partial = Vec::new();
        self.flush_at = None;
        out.push(TextInput::TooLong);
        out
    }

    fn take_line(&mut self) -> TextInput {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let bytes = core::mem::take(&mut self.partial);
        match String::from_utf8(bytes) {
            Ok(line) => TextInput::Line(line),
            Err(_) => TextInput::InvalidUtf8,
        }
    }

    /// When the pending partial line counts as complete, if there is one.
    pub(crate) fn flush_at(&self) -> Option<Timestamp> {
        self.flush_at
    }

    /// The partial line, if the pause since its last byte has passed.
    pub(crate) fn on_timeout(&mut self, now: Timestamp) -> Option<TextInput> {
        match self.flush_at {
            Some(at) if at <= now && !self.partial.is_empty() => {
                self.flush_at = None;
                Some(self.take_line())
            }
            _ => None,
        }
    }
}

/// What a typed line means on a relay. Shared by the relay's plain-text clients and
/// by the `p2pchat join` command line, so both understand exactly the same lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayLine {
    /// `ID message`: send to one client.
    Send {
        /// The recipient.
        to: ClientId,
        /// The message (spaces kept).
        text: String,
    },
    /// `/all message`: send to everyone else.
    Broadcast(String),
    /// `/who`.
    Who,
    /// `exit`: stop sending, keep receiving.
    Exit,
    /// `/quit`: leave now.
    Quit,
    /// `/help`.
    Help,
    /// An empty line.
    Empty,
    /// Not understood; the sentence says why and what to type instead.
    Invalid(String),
}

/// Parses one line typed on a relay.
pub fn parse_relay_line(line: &str) -> RelayLine {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return RelayLine::Empty;
    }
    if trimmed == "exit" {
        return RelayLine::Exit;
    }
    if let Some(rest) = trimmed.strip_prefix('/') {
        let (name, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let arg = arg.trim_start();
        return match name {
            "who" => RelayLine::Who,
            "help" => RelayLine::Help,
            "quit" => RelayLine::Quit,
            "all" if arg.is_empty() => RelayLine::Invalid("usage: /all MESSAGE".into()),
            "all" => RelayLine::Broadcast(arg.to_owned()),
            _ => RelayLine::Invalid(format!("unknown command /{name}; /help lists the commands")),
        };
    }
    let (first, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let text = rest.trim_start();
    match first.parse::<u32>() {
        Ok(id) if id != u32::MAX && !text.is_empty() => RelayLine::Send {
            to: ClientId(id),
            text: text.to_owned(),
        },
        Ok(id) if id != u32::MAX => RelayLine::Invalid(format!("usage: {id} MESSAGE (the message is missing)")),
        _ => RelayLine::Invalid(
            "start the line with the ID of the client it is for, e.g. `1 hello`; /all sends to everyone; /help lists the commands"
                .into(),
        ),
    }
}

/// Replaces control characters with `�`, so that one user cannot drive another's
/// terminal with escape sequences, and folds line breaks into spaces.
pub fn sanitize_for_terminal(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' => ' ',
            '\t' => '\t',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

fn who(id: ClientId, name: &str) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        format!("{id} {}", sanitize_for_terminal(name))
    }
}

/// Appends the plain-text form of `frame` (relay to text client, or peer to text
/// peer). Frames with no meaning for a person (pings, handshakes) have none.
pub(crate) fn render(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Deliver { from, payload, .. } if payload.kind == PayloadKind::Text => {
            if let Some(text) = payload.as_text() {
                line(out, &format!("{from} {}", sanitize_for_terminal(text)));
            }
        }
        // Sealed for clients with a key (a message to everyone): say that something
        // was said, rather than nothing at all.
        Frame::Deliver { from, payload, .. } if payload.kind == PayloadKind::Sealed => line(
            out,
            &format!(
                "* {from} sent an end-to-end encrypted message, which a plain-text client cannot read"
            ),
        ),
        Frame::Message { payload, .. } if payload.kind == PayloadKind::Text => {
            if let Some(text) = payload.as_text() {
                line(out, &sanitize_for_terminal(text));
            }
        }
        Frame::Exit => line(out, "exit"),
        Frame::Roster { total, entries } => {
            let list: Vec<String> = entries.iter().map(|e| who(e.id, &e.name)).collect();
            let more = (*total as usize).saturating_sub(entries.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            line(out, &format!("* online: {}{tail}", list.join(", ")));
        }
        Frame::Joined { id, name, .. } => line(out, &format!("* {} joined", who(*id, name))),
        Frame::Left { id, .. } => line(out, &format!("* {id} left")),
        Frame::Exited { id } => line(out, &format!("* {id} said exit")),
        Frame::AllExited => line(out, "* everyone has said exit; goodbye"),
        Frame::Error(e) => line(out, &format!("* {}", sanitize_for_terminal(&e.message))),
        Frame::Close { message, .. } => line(out, &format!("* {}", sanitize_for_terminal(message))),
        Frame::Refused(r) => line(out, &format!("* {}", sanitize_for_terminal(&r.reason))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::ZERO;

    fn lines(inputs: Vec<TextInput>) -> Vec<String> {
        inputs
            .into_iter()
            .map(|i| match i {
                TextInput::Line(l) => l,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn lines_end_at_newlines_with_or_without_carriage_returns() {
        let mut r = LineReader::new(100, Duration::from_millis(200));
        assert_eq!(lines(r.push(b"1 hello\r\n2 th", T)), ["1 hello"]);
        assert_eq!(lines(r.push(b"ere\n", T)), ["2 there"]);
        assert_eq!(r.flush_at(), None);
    }

    #[test]
    fn a_pause_ends_a_line_that_has_no_newline() {
        // The original app's peer: one send() per message, no newline.
        let mut r = LineReader::new(100, Duration::from_millis(200));
        assert!(r.push(b"hello there", T).is_empty());
        let due = r.flush_at().unwrap();
        assert_eq!(r.on_timeout(due - Duration::from_millis(1)), None);
        assert_eq!(
            r.on_timeout(due),
            Some(TextInput::Line("hello there".into()))
        );
        assert_eq!(r.flush_at(), None);
    }

    #[test]
    fn an_endless_line_is_cut_off_and_bad_utf8_is_flagged() {
        let mut r = LineReader::new(10, Duration::from_millis(200));
        assert_eq!(r.push(&[b'a'; 11], T), vec![TextInput::TooLong]);
        assert!(r.push(b"more\n", T).is_empty(), "nothing after the cut-off");
        let mut r = LineReader::new(10, Duration::from_millis(200));
        assert_eq!(r.push(b"\xff\xfe\n", T), vec![TextInput::InvalidUtf8]);
        assert_eq!(lines(r.push(b"fine\n", T)), ["fine"]);
    }

    #[test]
    fn relay_lines_parse_like_the_original() {
        assert_eq!(
            parse_relay_line("1 hello  there"),
            RelayLine::Send {
                to: ClientId(1),
                text: "hello  there".into()
            }
        );
        assert_eq!(parse_relay_line("exit"), RelayLine::Exit);
        assert_eq!(
            parse_relay_line("/all hi"),
            RelayLine::Broadcast("hi".into())
        );
        assert!(matches!(parse_relay_line("hello"), RelayLine::Invalid(_)));
        assert!(matches!(parse_relay_line("3"), RelayLine::Invalid(m) if m.contains("missing")));
    }

    #[test]
    fn deliveries_render_as_sender_id_then_text_without_escapes() {
        let mut out = Vec::new();
        render(
            &Frame::Deliver {
                from: ClientId(0),
                to: ClientId(1),
                seq: 1,
                payload: crate::Payload::text("hi\u{1b}[2J\nthere"),
            },
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "0 hi\u{FFFD}[2J there\n");
    }
}
