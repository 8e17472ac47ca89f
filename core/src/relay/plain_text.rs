//! The relay's plain-text clients: `nc`, `telnet`, and the original app, which send
//! `ID message` lines and read `FROM message` lines.
//!
//! A connection whose first byte is not the magic's is one of them; it is admitted at
//! once, with an ID like any other client, and from then on speaks lines. A connection
//! that says nothing for a moment is greeted in plain text (a framed client never
//! waits: it sends its magic at once), so that a person on `nc` knows what to type.

use super::{ConnState, RelayServer};
use crate::error::ErrorCode;
use crate::frame::{ChatRef, ErrorReport, Frame, PayloadKind};
use crate::id::{ClientId, ConnId};
use crate::text::{LineReader, RelayLine, TextInput, parse_relay_line};
use crate::time::Timestamp;

/// What a silent new connection is told.
const GREETING: &[u8] =
    b"* p2pchat relay. Plain-text clients: send a line (or just press Enter) to join; `ID message` sends to client ID.\n";

/// The help text for plain-text clients (without the `* ` every status line gets).
const HELP: &str = "ID MESSAGE sends to client ID; /all MESSAGE to everyone; /who lists who is online; exit stops your sending; /quit leaves";

impl RelayServer {
    /// The first byte was not the magic's: this is a plain-text client. Admits it (or
    /// refuses it, in words).
    pub(super) fn become_plain_text(&mut self, conn: ConnId, now: Timestamp) {
        let max_line = self.limits.max_text_len + 16;
        let pause = self.limits.text_pause;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.text = Some(LineReader::new(max_line, pause));
        c.out.switch_to_text();
        let refusal = if self.security.password.is_some() {
            Some((
                ErrorCode::PasswordRequired,
                "this relay requires a password; plain-text clients cannot give one (join with p2pchat join --password)".to_owned(),
            ))
        } else {
            self.capacity_refusal(conn)
        };
        if let Some((code, reason)) = refusal {
            self.refuse(conn, code, reason);
            return;
        }
        let max = self.limits.max_clients;
        self.admit(conn, String::new(), None, now, |id, out| {
            let line = format!("* you are client {id} (at most {max} online); {}\n", HELP);
            out.push_bytes(line.as_bytes());
        });
    }

    /// Bytes from a plain-text client: split into lines and act on each.
    pub(super) fn on_text_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Timestamp) {
        let Some(reader) = self.conns.get_mut(&conn).and_then(|c| c.text.as_mut()) else {
            return;
        };
        let inputs = reader.push(bytes, now);
        self.rearm_text_flush(conn);
        for input in inputs {
            self.on_text_input(conn, input, now);
        }
    }

    /// Keeps `text_flush` pointing at the connection's partial-line deadline.
    fn rearm_text_flush(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let next = c.text.as_ref().and_then(LineReader::flush_at);
        if let Some(old) = c.text_flush_at.take() {
            self.text_flush.remove(&(old, conn));
        }
        if let Some(at) = next {
            c.text_flush_at = Some(at);
            self.text_flush.insert((at, conn));
        }
    }

    fn on_text_input(&mut self, conn: ConnId, input: TextInput, _now: Timestamp) {
        let Some(ConnState::Admitted(client)) = self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        let next_seq = client.last_seq + 1;
        let line = match input {
            TextInput::Line(line) => line,
            TextInput::InvalidUtf8 => {
                self.tell(conn, "that line is not valid UTF-8; it was not sent".into());
                return;
            }
            TextInput::TooLong => {
                let max = self.limits.max_text_len;
                let detail = format!("your line is longer than {max} bytes; disconnected");
                self.close_client(conn, ErrorCode::MessageTooLong, detail, false);
                return;
            }
        };
        fn chat(to: ClientId, seq: u64, text: &str) -> ChatRef<'_> {
            ChatRef {
                to,
                seq,
                kind: PayloadKind::Text,
                body: text.as_bytes(),
            }
        }
        match parse_relay_line(&line) {
            RelayLine::Send { to, text } => self.on_chat(conn, chat(to, next_seq, &text)),
            RelayLine::Broadcast(text) => {
                self.on_chat(conn, chat(ClientId::BROADCAST, next_seq, &text))
            }
            RelayLine::Who => {
                let roster = self.roster();
                self.enqueue(conn, &roster);
            }
            RelayLine::Exit => self.on_exit(conn),
            RelayLine::Quit => self.close_client(conn, ErrorCode::Normal, "goodbye".into(), false),
            RelayLine::Help => self.tell(conn, HELP.to_owned()),
            RelayLine::Empty => {}
            RelayLine::Invalid(why) => self.tell(conn, why),
        }
    }

    /// A status line for a plain-text client.
    fn tell(&mut self, conn: ConnId, message: String) {
        let report = Frame::Error(ErrorReport {
            code: ErrorCode::Normal,
            seq: 0,
            subject: None,
            message,
        });
        self.enqueue(conn, &report);
    }

    /// Greets silent connections and completes partial lines whose pause has passed.
    pub(super) fn plain_text_timeouts(&mut self, now: Timestamp) {
        while let Some(&(at, conn)) = self.greetings.first() {
            if at > now {
                break;
            }
            self.greetings.remove(&(at, conn));
            if let Some(c) = self.conns.get_mut(&conn)
                && !c.received_any
                && matches!(c.state, ConnState::Handshaking { .. })
            {
                c.out.push_bytes(GREETING);
                self.mark_ready(conn);
            }
        }
        while let Some(&(at, conn)) = self.text_flush.first() {
            if at > now {
                break;
            }
            self.text_flush.remove(&(at, conn));
            let input = self.conns.get_mut(&conn).and_then(|c| {
                c.text_flush_at = None;
                c.text.as_mut().and_then(|r| r.on_timeout(now))
            });
            if let Some(input) = input {
                self.on_text_input(conn, input, now);
            }
        }
        self.cut_off_overflowed();
    }
}
