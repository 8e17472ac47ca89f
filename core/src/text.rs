//! The plain-text wire format: what the original app spoke, and what `nc` and
//! `telnet` speak. Lines of UTF-8 in both directions: `ID message` in, `FROM message`
//! out on a relay; bare lines between direct peers; `exit` as a bare word.
//!
//! A line ends at `\n` (a trailing `\r` is dropped). The original app sent each
//! message with one `send()` and no newline, so for a sender that has never sent a
//! newline a pause in its bytes ends the line too. Two rules keep that pause from ever
//! cutting a real line in two (docs/PROTOCOL.md, section 10):
//!
//! - once a connection has sent a newline, only newlines end its lines: it is a
//!   line-by-line client (`nc`, `telnet`), and a pause means a slow sender, not the
//!   end of a message;
//! - a pause counts only when the driver saw the connection had nothing more to read
//!   ([`LineReader::on_read_idle`]), never because a timer fired: a busy driver that
//!   has not yet read the rest of a line must not mistake its own lag for the
//!   sender's pause.
//!
//! Lines are bounded like frames, and handed out borrowed ([`TextLine`]): a line that
//! lies whole in one read is never copied.

use core::time::Duration;

use crate::error::ErrorCode;
use crate::frame::{Frame, PayloadKind};
use crate::id::ClientId;
use crate::time::Timestamp;

/// A complete piece of plain-text input, borrowed from the bytes read (or from the
/// reader's buffer, for a line that spanned reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextLine<'a> {
    /// A line, without its line ending.
    Line(&'a str),
    /// A line that is not valid UTF-8 (dropped; the sender is told).
    InvalidUtf8,
    /// A line longer than the limit: the connection must be cut off.
    TooLong,
}

/// [`TextLine`], owned: for the single-connection machines, which keep a read's
/// lines until they have handled its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextInput {
    /// A line, without its line ending.
    Line(String),
    /// A line that is not valid UTF-8 (dropped; the reader is told).
    InvalidUtf8,
    /// A line longer than the limit: the connection must be cut off.
    TooLong,
}

impl TextInput {
    /// The line, borrowed.
    pub(crate) fn as_line(&self) -> TextLine<'_> {
        match self {
            TextInput::Line(text) => TextLine::Line(text),
            TextInput::InvalidUtf8 => TextLine::InvalidUtf8,
            TextInput::TooLong => TextLine::TooLong,
        }
    }
}

impl From<TextLine<'_>> for TextInput {
    fn from(line: TextLine<'_>) -> Self {
        match line {
            TextLine::Line(text) => TextInput::Line(text.to_owned()),
            TextLine::InvalidUtf8 => TextInput::InvalidUtf8,
            TextLine::TooLong => TextInput::TooLong,
        }
    }
}

/// Splits a plain-text byte stream into lines: at newlines, or (for a sender that
/// never sent one) at a pause the driver saw.
#[derive(Debug, Clone)]
pub(crate) struct LineReader {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    max_line: usize,
    pause: Duration,
    /// When the last bytes of `partial` arrived (while it is not empty).
    last_bytes_at: Option<Timestamp>,
    /// The sender has sent a newline: only newlines end its lines from now on.
    newline_seen: bool,
    failed: bool,
}

impl LineReader {
    pub(crate) fn new(max_line: usize, pause: Duration) -> Self {
        LineReader {
            partial: Vec::new(),
            max_line,
            pause,
            last_bytes_at: None,
            newline_seen: false,
            failed: false,
        }
    }

    /// Takes bytes and hands each line they complete to `on_line`, in order, until it
    /// returns `false` (the connection is closing: the rest is dropped). A remainder
    /// waits for its newline, or for a pause ([`LineReader::on_read_idle`]).
    pub(crate) fn push(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
        mut on_line: impl FnMut(TextLine<'_>) -> bool,
    ) {
        if self.failed {
            return;
        }
        let mut rest = bytes;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            self.newline_seen = true;
            let (line, tail) = rest.split_at(pos);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.len() + line.len() > self.max_line {
                self.fail();
                on_line(TextLine::TooLong);
                return;
            }
            let go_on = if self.partial.is_empty() {
                on_line(classify(line))
            } else {
                let mut whole = core::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.last_bytes_at = None;
                on_line(classify(&whole))
            };
            if !go_on {
                self.partial = Vec::new();
                self.last_bytes_at = None;
                return;
            }
        }
        if rest.is_empty() {
            return;
        }
        if self.partial.len() + rest.len() > self.max_line {
            self.fail();
            on_line(TextLine::TooLong);
            return;
        }
        self.partial.extend_from_slice(rest);
        self.last_bytes_at = Some(now);
    }

    /// [`LineReader::push`], collecting owned lines.
    pub(crate) fn push_collect(&mut self, bytes: &[u8], now: Timestamp) -> Vec<TextInput> {
        let mut out = Vec::new();
        self.push(bytes, now, |line| {
            out.push(line.into());
            true
        });
        out
    }

    fn fail(&mut self) {
        self.failed = true;
        self.partial = Vec::new();
        self.last_bytes_at = None;
    }

    /// When the driver should look whether the connection has anything more to read
    /// (and report [`LineReader::on_read_idle`] if not): while a sender that never
    /// sent a newline has a partial line, a pause after its last bytes.
    pub(crate) fn idle_check_at(&self) -> Option<Timestamp> {
        if self.newline_seen {
            return None;
        }
        self.last_bytes_at.map(|at| at + self.pause)
    }

    /// The driver read everything the connection had and found nothing more, at
    /// `now`: the partial line of a sender that never sent a newline is complete if
    /// its last bytes came at least a pause ago.
    pub(crate) fn on_read_idle(&mut self, now: Timestamp) -> Option<TextInput> {
        match self.idle_check_at() {
            Some(at) if at <= now => self.take_partial(),
            _ => None,
        }
    }

    /// The connection ended: a partial line is complete (the sender said all it
    /// will say), whatever kind of sender it was.
    pub(crate) fn finish(&mut self) -> Option<TextInput> {
        if self.failed {
            return None;
        }
        self.take_partial()
    }

    fn take_partial(&mut self) -> Option<TextInput> {
        self.last_bytes_at = None;
        if self.partial.is_empty() {
            return None;
        }
        let bytes = core::mem::take(&mut self.partial);
        Some(classify(&bytes).into())
    }
}

/// A line's bytes, without the line ending, as text.
fn classify(line: &[u8]) -> TextLine<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match core::str::from_utf8(line) {
        Ok(text) => TextLine::Line(text),
        Err(_) => TextLine::InvalidUtf8,
    }
}

/// What a typed line means on a relay. Shared by the relay's plain-text clients and
/// by the `p2pchat join` command line, so both understand exactly the same lines.
/// Borrows the message text from the line (the relay routes it from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayLine<'a> {
    /// `ID message`: send to one client.
    Send {
        /// The recipient.
        to: ClientId,
        /// The message (spaces kept).
        text: &'a str,
    },
    /// `/all message`: send to everyone else.
    Broadcast(&'a str),
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
pub fn parse_relay_line(line: &str) -> RelayLine<'_> {
    if let Some(send) = parse_plain_send(line) {
        return send;
    }
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
            "all" => RelayLine::Broadcast(arg),
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
            text,
        },
        Ok(id) if id != u32::MAX => RelayLine::Invalid(format!("usage: {id} MESSAGE (the message is missing)")),
        _ => RelayLine::Invalid(
            "start the line with the ID of the client it is for, e.g. `1 hello`; /all sends to everyone; /help lists the commands"
                .into(),
        ),
    }
}

/// The common line, `ID text` in ASCII digits, one space or tab and no space around
/// it, read without looking at the text's characters: what [`parse_relay_line`]
/// would make of it, or `None` for any other line (which takes the general path).
fn parse_plain_send(line: &str) -> Option<RelayLine<'_>> {
    let bytes = line.as_bytes();
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let (&sep, rest) = bytes.get(digits..)?.split_first()?;
    let first = *rest.first()?;
    let last = *rest.last()?;
    // Anything the general path would trim or treat otherwise: no fast path.
    let plain = |b: u8| b.is_ascii() && !b.is_ascii_whitespace();
    if !(1..=10).contains(&digits) || (sep != b' ' && sep != b'\t') || !plain(first) || !plain(last)
    {
        return None;
    }
    let id: u32 = line.get(..digits)?.parse().ok()?;
    if id == u32::MAX {
        return None;
    }
    Some(RelayLine::Send {
        to: ClientId(id),
        text: line.get(digits + 1..)?,
    })
}

/// Replaces control characters with `�`, so that one user cannot drive another's
/// terminal with escape sequences, and folds line breaks into spaces.
pub fn sanitize_for_terminal(text: &str) -> String {
    if !needs_sanitizing(text.as_bytes()) {
        return text.to_owned();
    }
    text.chars().map(sanitize_char).collect()
}

/// Appends `text` as [`sanitize_for_terminal`] shows it. Text without a control
/// character (nearly all of it) is copied as it is, without looking at its
/// characters one by one: this is the relay's hot path towards plain-text clients.
pub(crate) fn push_sanitized(out: &mut Vec<u8>, text: &str) {
    push_sanitized_bytes(out, text.as_bytes());
}

/// [`push_sanitized`] for chat text as it was routed: already checked to be UTF-8
/// (bytes that are not, which cannot happen, would be shown as `�`).
fn push_sanitized_bytes(out: &mut Vec<u8>, text: &[u8]) {
    if !needs_sanitizing(text) {
        out.extend_from_slice(text);
        return;
    }
    let mut buf = [0u8; 4];
    for c in String::from_utf8_lossy(text).chars() {
        out.extend_from_slice(sanitize_char(c).encode_utf8(&mut buf).as_bytes());
    }
}

/// Whether `text` may hold a character [`sanitize_char`] changes: a C0 control or
/// DEL (bytes below 0x20, 0x7F), or a C1 control (U+0080..U+009F, which UTF-8 writes
/// as 0xC2 followed by 0x80..0x9F). A tab or a Latin-1 letter gives a false alarm,
/// which only costs the slow path. Written as a fold over whole chunks, with no early
/// exit inside one, so that the compiler can compare 32 bytes at a time.
fn needs_sanitizing(text: &[u8]) -> bool {
    let suspicious = |b: u8| (b < 0x20) | (b == 0x7F) | (b == 0xC2);
    let mut chunks = text.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | suspicious(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| suspicious(b))
}

fn sanitize_char(c: char) -> char {
    match c {
        '\n' | '\r' => ' ',
        '\t' => '\t',
        c if c.is_control() => '\u{FFFD}',
        c => c,
    }
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Milliseconds as whole seconds, rounded up (a wait of 0.4 s is not "0 s").
pub(crate) fn whole_seconds(ms: u32) -> u32 {
    ms.div_ceil(1000)
}

fn who(id: ClientId, name: &str) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        format!("{id} {}", sanitize_for_terminal(name))
    }
}

/// Appends the plain-text form of a delivery: `FROM text` for chat, a notice for a
/// message sealed end to end, nothing for what a person cannot read (files, keys).
pub(crate) fn render_deliver(out: &mut Vec<u8>, from: ClientId, kind: PayloadKind, body: &[u8]) {
    match kind {
        PayloadKind::Text => {
            push_decimal(out, from.0);
            out.push(b' ');
            push_sanitized_bytes(out, body);
            out.push(b'\n');
        }
        // Sealed for clients with a key (a message to everyone): say that something
        // was said, rather than nothing at all.
        PayloadKind::Sealed => line(
            out,
            &format!(
                "* {from} sent an end-to-end encrypted message, which a plain-text client cannot read"
            ),
        ),
        _ => {}
    }
}

/// Appends the plain-text form of `frame` (relay to text client, or peer to text
/// peer). Frames with no meaning for a person (pings, handshakes) have none.
pub(crate) fn render(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Deliver { from, payload, .. } => {
            render_deliver(out, *from, payload.kind, &payload.body);
        }
        Frame::Message { payload, .. } if payload.kind == PayloadKind::Text => {
            if let Some(text) = payload.as_text() {
                push_sanitized(out, text);
                out.push(b'\n');
            }
        }
        Frame::Exit => line(out, "exit"),
        Frame::Roster { total, entries } => {
            let list: Vec<String> = entries
                .iter()
                .map(|e| {
                    let mut who = who(e.id, &e.name);
                    if e.away {
                        who.push_str(" (away)");
                    }
                    who
                })
                .collect();
            let more = (*total as usize).saturating_sub(entries.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            line(out, &format!("* online: {}{tail}", list.join(", ")));
        }
        Frame::Joined { id, name, .. } => line(out, &format!("* {} joined", who(*id, name))),
        Frame::Left {
            id,
            code: ErrorCode::Normal,
        } => line(out, &format!("* {id} left")),
        Frame::Left { id, code } => line(out, &format!("* {id} left ({})", code.in_words())),
        Frame::Away { id, code, grace_ms } => line(
            out,
            &format!(
                "* {id} is away ({}); messages to it wait up to {} s",
                code.in_words(),
                whole_seconds(*grace_ms)
            ),
        ),
        Frame::Back { id } => line(out, &format!("* {id} is back")),
        Frame::Held { to, wait_ms, .. } => line(
            out,
            &format!(
                "* {to} is away; your messages to it wait up to {} s more for it to come back",
                whole_seconds(*wait_ms)
            ),
        ),
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
    const PAUSE: Duration = Duration::from_millis(200);

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
        let mut r = LineReader::new(100, PAUSE);
        assert_eq!(lines(r.push_collect(b"1 hello\r\n2 th", T)), ["1 hello"]);
        assert_eq!(lines(r.push_collect(b"ere\n", T)), ["2 there"]);
        assert_eq!(r.idle_check_at(), None);
    }

    #[test]
    fn a_pause_the_driver_saw_ends_a_line_that_has_no_newline() {
        // The original app's peer: one send() per message, no newline.
        let mut r = LineReader::new(100, PAUSE);
        assert!(r.push_collect(b"hello there", T).is_empty());
        let due = r.idle_check_at().unwrap();
        assert_eq!(due, T + PAUSE);
        assert_eq!(r.on_read_idle(due - Duration::from_millis(1)), None);
        assert_eq!(
            r.on_read_idle(due),
            Some(TextInput::Line("hello there".into()))
        );
        assert_eq!(r.idle_check_at(), None);
    }

    #[test]
    fn bytes_that_come_before_the_check_put_the_pause_off() {
        // The driver looked late (it was busy), found the rest of the message waiting
        // and read it: the pause starts again from those bytes.
        let mut r = LineReader::new(100, PAUSE);
        let _ = r.push_collect(b"hel", T);
        let late = T + Duration::from_secs(3);
        let _ = r.push_collect(b"lo", late);
        assert_eq!(r.on_read_idle(late), None);
        assert_eq!(
            r.on_read_idle(late + PAUSE),
            Some(TextInput::Line("hello".into()))
        );
    }

    #[test]
    fn after_a_newline_no_pause_ever_ends_a_line() {
        let mut r = LineReader::new(100, PAUSE);
        assert_eq!(lines(r.push_collect(b"1 first\n1 sec", T)), ["1 first"]);
        assert_eq!(r.idle_check_at(), None, "a line-by-line client");
        let much_later = T + Duration::from_secs(3600);
        assert_eq!(r.on_read_idle(much_later), None);
        assert_eq!(lines(r.push_collect(b"ond\n", much_later)), ["1 second"]);
    }

    #[test]
    fn the_end_of_the_stream_completes_a_partial_line() {
        let mut r = LineReader::new(100, PAUSE);
        let _ = r.push_collect(b"1 a\n1 bye", T);
        assert_eq!(r.finish(), Some(TextInput::Line("1 bye".into())));
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn an_endless_line_is_cut_off_and_bad_utf8_is_flagged() {
        let mut r = LineReader::new(10, PAUSE);
        assert_eq!(r.push_collect(&[b'a'; 11], T), vec![TextInput::TooLong]);
        assert!(
            r.push_collect(b"more\n", T).is_empty(),
            "nothing after the cut-off"
        );
        assert_eq!(r.finish(), None);
        let mut r = LineReader::new(10, PAUSE);
        assert_eq!(
            r.push_collect(b"\xff\xfe\n", T),
            vec![TextInput::InvalidUtf8]
        );
        assert_eq!(lines(r.push_collect(b"fine\n", T)), ["fine"]);
    }

    #[test]
    fn a_consumer_that_stops_gets_no_more_lines() {
        let mut r = LineReader::new(100, PAUSE);
        let mut seen = Vec::new();
        r.push(b"a\nb\nc", T, |line| {
            seen.push(format!("{line:?}"));
            false
        });
        assert_eq!(seen.len(), 1);
        assert_eq!(r.finish(), None, "the rest was dropped with the connection");
    }

    #[test]
    fn the_fast_path_parses_as_the_general_one_does() {
        for line in [
            "1 hello",
            "12\tx",
            "0 a b  c",
            "1  two spaces",
            " 1 lead",
            "1 trail ",
            "1 ",
            "1",
            "01 zero",
            "4294967295 max",
            "4294967296 over",
            "1 \u{3000}ideo",
            "1 é",
            "1 x\u{3000}",
            "x 1",
            "/all hi",
            "",
            "99999999999 long",
        ] {
            let general = {
                let trimmed = line.trim();
                let (first, rest) = trimmed
                    .split_once(char::is_whitespace)
                    .unwrap_or((trimmed, ""));
                match first.parse::<u32>() {
                    Ok(id) if id != u32::MAX && !rest.trim_start().is_empty() => {
                        Some((id, rest.trim_start()))
                    }
                    _ => None,
                }
            };
            if let Some(RelayLine::Send { to, text }) = parse_plain_send(line) {
                assert_eq!(Some((to.0, text)), general, "{line:?}");
            }
            let parsed = parse_relay_line(line);
            if let Some((id, text)) = general {
                assert_eq!(
                    parsed,
                    RelayLine::Send {
                        to: ClientId(id),
                        text
                    },
                    "{line:?}"
                );
            }
        }
    }

    #[test]
    fn relay_lines_parse_like_the_original() {
        assert_eq!(
            parse_relay_line("1 hello  there"),
            RelayLine::Send {
                to: ClientId(1),
                text: "hello  there"
            }
        );
        assert_eq!(parse_relay_line("exit"), RelayLine::Exit);
        assert_eq!(parse_relay_line("/all hi"), RelayLine::Broadcast("hi"));
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
                payload: crate::Payload::text("hi\u{1b}[2J\nthere\u{85}!"),
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 hi\u{FFFD}[2J there\u{FFFD}!\n"
        );
        let mut out = Vec::new();
        render_deliver(
            &mut out,
            ClientId(4_000_000_000),
            PayloadKind::Text,
            "café ©".as_bytes(),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "4000000000 café ©\n");
    }

    #[test]
    fn the_fast_path_agrees_with_the_character_by_character_one() {
        for text in [
            "plain",
            "tab\there",
            "\u{7f}del",
            "\u{9f}c1",
            "é£©",
            "a\r\nb",
            "",
        ] {
            let mut fast = Vec::new();
            push_sanitized(&mut fast, text);
            let slow: String = text.chars().map(sanitize_char).collect();
            assert_eq!(String::from_utf8(fast).unwrap(), slow, "{text:?}");
            assert_eq!(sanitize_for_terminal(text), slow);
        }
    }
}
