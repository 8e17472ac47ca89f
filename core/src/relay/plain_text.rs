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
use crate::text::{LineReader, RelayLine, TextLine, parse_relay_line};
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
        self.admit(conn, String::new(), None, now, move |id, out| {
            let line = format!("* you are client {id} (at most {max} online); {}\n", HELP);
            out.push_bytes(line.as_bytes());
        });
    }

    /// Bytes from a plain-text client: split into lines and act on each, straight
    /// from the bytes read.
    pub(super) fn on_text_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Timestamp) {
        // The reader is taken out while its lines are handled (they borrow from it).
        let Some(mut reader) = self.conns.get_mut(&conn).and_then(|c| c.text.take()) else {
            return;
        };
        reader.push(bytes, now, |line| {
            self.on_text_line(conn, line);
            self.conns
                .get(&conn)
                .is_some_and(|c| matches!(c.state, ConnState::Admitted(_)))
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.text = Some(reader);
        }
    }

    /// When the driver should look whether plain-text connection `conn` has more to
    /// read, and report [`RelayServer::handle_read_idle`] if it has not: while a
    /// client that never sent a newline (the original app) has a partial line, a
    /// pause (`Limits::text_pause`) after its last bytes. `None` otherwise.
    pub fn read_idle_check(&self, conn: ConnId) -> Option<Timestamp> {
        self.conns
            .get(&conn)
            .and_then(|c| c.text.as_ref())
            .and_then(LineReader::idle_check_at)
    }

    /// A read of `conn` at `now` found nothing more to read: everything it sent so far
    /// was handed over. A partial line of a client that never sent a newline ends
    /// here if its last bytes came a pause ago (docs/PROTOCOL.md, section 10). This is
    /// the only way a pause ends a line: a timer cannot tell the sender's pause from
    /// bytes the driver has not read yet.
    pub fn handle_read_idle(&mut self, conn: ConnId, now: Timestamp) {
        self.now = self.now.max(now);
        let input = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.text.as_mut())
            .and_then(|r| r.on_read_idle(now));
        if let Some(input) = input {
            self.on_text_line(conn, input.as_line());
            self.cut_off_overflowed();
        }
    }

    /// The other side finished sending (a clean end of stream, not a reset): a
    /// plain-text client's unfinished last line is delivered, since it said all it
    /// will say (the original app sent its last message and closed). After a reset
    /// the line may be cut short, so the driver does not call this then. The driver
    /// reports [`RelayServer::handle_closed`] as usual afterwards.
    pub fn handle_end_of_stream(&mut self, conn: ConnId, now: Timestamp) {
        self.now = self.now.max(now);
        let input = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.text.as_mut())
            .and_then(LineReader::finish);
        if let Some(input) = input {
            self.on_text_line(conn, input.as_line());
            self.cut_off_overflowed();
        }
    }

    fn on_text_line(&mut self, conn: ConnId, input: TextLine<'_>) {
        let Some(ConnState::Admitted(client)) = self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        let next_seq = client.last_seq + 1;
        let line = match input {
            TextLine::Line(line) => line,
            TextLine::InvalidUtf8 => {
                if !self.strike(conn, "a line that is not valid UTF-8") {
                    self.tell(conn, "that line is not valid UTF-8; it was not sent".into());
                }
                return;
            }
            TextLine::TooLong => {
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
        match parse_relay_line(line) {
            RelayLine::Send { to, text } => {
                self.on_checked_chat(conn, chat(to, next_seq, text), true)
            }
            RelayLine::Broadcast(text) => {
                self.on_checked_chat(conn, chat(ClientId::BROADCAST, next_seq, text), true)
            }
            RelayLine::Who => {
                let roster = self.roster();
                self.enqueue(conn, &roster);
            }
            RelayLine::Exit => self.on_exit(conn),
            RelayLine::Quit => self.close_client(conn, ErrorCode::Normal, "goodbye".into(), false),
            RelayLine::Help => self.tell(conn, HELP.to_owned()),
            RelayLine::Empty => {}
            RelayLine::Invalid(why) => {
                if !self.strike(conn, "a line that is neither a message nor a command") {
                    self.tell(conn, why);
                }
            }
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

    /// Greets silent connections: someone on `nc` who has not typed yet learns what
    /// to type.
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
    }
}
