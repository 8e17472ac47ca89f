//! How events are shown: the stable text format (documented in README.md) and the
//! `--json` format, one object per line (the serde event vocabulary of
//! `p2pchat_client::events`, serialised).
//!
//! Text from the network is sanitised before it reaches the terminal: a control
//! character could otherwise move the cursor, clear the screen or retitle the window.

use std::time::Duration;

use p2pchat_client::events::{DirectEvent, RelayEvent, to_json_line};
use p2pchat_client::transfer::{TransferNotice, human};
use p2pchat_core::{ClientEvent, ClientId, ErrorCode, PeerEvent, PublicKey, RosterEntry};

/// A line of output, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// stdout: events and status lines.
    Out(String),
    /// stderr: errors.
    Err(String),
}

/// Replaces control characters (escape sequences, bells, carriage returns) with `�`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn who(id: ClientId, name: &str) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        format!("{id} {}", sanitize(name))
    }
}

/// A wait in whole seconds, rounded up (0.4 s left is not "0 s").
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000) as u64
}

fn departure(code: ErrorCode) -> String {
    match code {
        ErrorCode::Normal => String::new(),
        ErrorCode::ConnectionLost => " (connection lost)".into(),
        other => format!(" (disconnected: {other})"),
    }
}

/// A client's key as lists show it: the start of its fingerprint, or a warning that
/// it does not encrypt.
fn key_tag(key: &Option<PublicKey>) -> String {
    match key {
        Some(key) => format!(" [{}]", crate::keys::short(key)),
        None => " [no key: plain text]".into(),
    }
}

/// Messages as a person reads them: `7 (to 1), 8 (to everyone)`, the first 10.
fn unconfirmed_list(messages: &[(u64, ClientId)]) -> String {
    let mut parts: Vec<String> = messages
        .iter()
        .take(10)
        .map(|(seq, to)| {
            if to.is_broadcast() {
                format!("{seq} (to everyone)")
            } else {
                format!("{seq} (to {to})")
            }
        })
        .collect();
    if messages.len() > 10 {
        parts.push(format!("and {} more", messages.len() - 10));
    }
    parts.join(", ")
}

fn roster_line(total: u32, entries: &[RosterEntry], me: Option<ClientId>) -> String {
    let list: Vec<String> = entries
        .iter()
        .map(|e| {
            let mut s = who(e.id, &e.name);
            if Some(e.id) == me {
                s.push_str(" (you)");
            } else {
                s.push_str(&key_tag(&e.key));
            }
            if e.exited {
                s.push_str(" (said exit)");
            }
            if e.away {
                s.push_str(" (away)");
            }
            s
        })
        .collect();
    let more = (total as usize).saturating_sub(entries.len());
    if more > 0 {
        format!("* online ({total}): {} and {more} more", list.join(", "))
    } else {
        format!("* online: {}", list.join(", "))
    }
}

/// How a relay client event is shown. `me` is our ID, once known.
pub fn relay_event(event: &ClientEvent, me: Option<ClientId>, json: bool) -> Option<Line> {
    if json {
        return Some(Line::Out(to_json_line(&RelayEvent::from(event))));
    }
    let line = match event {
        ClientEvent::Welcomed {
            id, max_clients, ..
        } => Line::Out(format!(
            "* you are client {id} (the server admits at most {max_clients})"
        )),
        ClientEvent::Roster { total, entries } => Line::Out(roster_line(*total, entries, me)),
        ClientEvent::Joined { id, name, key } => {
            Line::Out(format!("* {} joined{}", who(*id, name), key_tag(key)))
        }
        ClientEvent::Left { id, code } => Line::Out(format!("* {id} left{}", departure(*code))),
        ClientEvent::Exited { id } => Line::Out(format!("* {id} said exit")),
        ClientEvent::Away { id, code, wait } => Line::Out(format!(
            "* {id} is away ({}); messages to it wait up to {} s",
            code.in_words(),
            whole_seconds(*wait)
        )),
        ClientEvent::Back { id } => Line::Out(format!("* {id} is back")),
        ClientEvent::Held { to, seq, wait } => Line::Out(format!(
            "* {to} is away: your message {seq} (and what you send it next) waits up to {} s for it to come back; you will be told if it does not",
            whole_seconds(*wait)
        )),
        ClientEvent::Message { from, text, .. } => Line::Out(format!("{from} {}", sanitize(text))),
        ClientEvent::NotEndToEnd {
            id,
            everyone: false,
        } => Line::Out(format!(
            "* {id} has no key: messages between you are not end-to-end encrypted (the relay can read them)"
        )),
        ClientEvent::NotEndToEnd { id, everyone: true } => Line::Out(format!(
            "* {id} has no key and cannot read messages to everyone; write `{id} MESSAGE` to reach it unencrypted"
        )),
        ClientEvent::Unconfirmed { messages } => Line::Err(format!(
            "error: {} of your messages were not confirmed delivered when the session ended; they may not have arrived: {}",
            messages.len(),
            unconfirmed_list(messages)
        )),
        ClientEvent::Delivered { .. } => return None,
        ClientEvent::ConnectionLost {
            code,
            reason,
            grace,
        } => Line::Out(format!(
            "* {} ({code}); getting back to the relay, which holds your ID and messages for {} s; what you type meanwhile is sent once back; /quit gives up now",
            sanitize(reason),
            grace.as_secs()
        )),
        ClientEvent::Reconnecting { attempt, .. } => Line::Out(format!(
            "* could not reach the relay (attempt {attempt}); trying again"
        )),
        ClientEvent::Resumed { id } => Line::Out(format!(
            "* back: you are still client {id}; nothing was lost, nothing repeated"
        )),
        ClientEvent::Unreadable { from, seq, reason } => Line::Err(format!(
            "error: message {seq} from client {from} could not be read: {}",
            sanitize(reason)
        )),
        ClientEvent::UnsupportedPayload { from, kind } => Line::Err(format!(
            "error: client {from} sent a kind of message this version cannot show ({kind})"
        )),
        ClientEvent::Error(report) => Line::Err(format!("error: {}", sanitize(&report.message))),
        ClientEvent::Refused(r) => Line::Err(format!(
            "p2pchat: refused by the server: {}",
            sanitize(&r.reason)
        )),
        ClientEvent::Finished => Line::Out("* everyone has said exit; leaving".into()),
        ClientEvent::File(_) => return None,
        ClientEvent::Disconnected { code, reason } => match code {
            ErrorCode::Normal => return None,
            ErrorCode::ServerFull => return None,
            _ => Line::Err(format!(
                "p2pchat: disconnected: {} ({code})",
                sanitize(reason)
            )),
        },
    };
    Some(line)
}

/// How a direct-chat event is shown.
pub fn peer_event(event: &PeerEvent, json: bool) -> Option<Line> {
    if json {
        return DirectEvent::from_core(event).map(|e| Line::Out(to_json_line(&e)));
    }
    let line = match event {
        PeerEvent::Connected {
            plain_text: true, ..
        } => Line::Out(
            "* connected to a plain-text peer (lines, no handshake, not encrypted)".into(),
        ),
        PeerEvent::Connected { name, .. } if name.is_empty() => Line::Out("* connected".into()),
        PeerEvent::Connected { name, .. } => {
            Line::Out(format!("* connected to {}", sanitize(name)))
        }
        PeerEvent::Message { text, .. } => Line::Out(format!("peer: {}", sanitize(text))),
        PeerEvent::UnsupportedPayload { kind } => Line::Err(format!(
            "error: the peer sent a kind of message this version cannot show ({kind})"
        )),
        PeerEvent::PeerExited => {
            Line::Out("* peer said exit; you can still send until you say exit".into())
        }
        PeerEvent::Error(r) => Line::Err(format!("error: {}", sanitize(&r.message))),
        PeerEvent::Finished => Line::Out("* both sides said exit; conversation over".into()),
        PeerEvent::File(_) => return None,
        PeerEvent::Delivered { .. } => return None,
        PeerEvent::ConnectionLost {
            code,
            reason,
            grace,
        } => Line::Out(format!(
            "* {} ({code}); the conversation waits up to {} s for the peer to come back; what you type meanwhile is sent once it does; /quit ends it now",
            sanitize(reason),
            grace.as_secs()
        )),
        PeerEvent::Reconnecting { attempt } => Line::Out(format!(
            "* could not reach the peer (attempt {attempt}); trying again"
        )),
        PeerEvent::Resumed => {
            Line::Out("* back: the conversation goes on; nothing was lost, nothing repeated".into())
        }
        PeerEvent::Unconfirmed { seqs } => Line::Err(format!(
            "error: {} of your messages were not confirmed delivered when the conversation ended; they may not have arrived: {}",
            seqs.len(),
            seqs.iter()
                .take(10)
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        PeerEvent::Disconnected {
            code: ErrorCode::Normal,
            reason,
        } => Line::Out(format!("* {}", sanitize(reason))),
        PeerEvent::Disconnected { code, reason } => Line::Err(format!(
            "p2pchat: peer vanished: {} ({code})",
            sanitize(reason)
        )),
    };
    Some(line)
}

/// How a file transfer's notice is shown (the same lines with and without `--json`
/// for now: the transfers' JSON is the web frontend's first).
pub fn transfer_notice(notice: &TransferNotice) -> Line {
    match notice {
        TransferNotice::FileOffering { name, size, to } => Line::Out(format!(
            "* offering {name} ({}) to {to}; waiting for an answer",
            human(*size)
        )),
        TransferNotice::FileOffered {
            number,
            from,
            name,
            size,
        } => Line::Out(format!(
            "* {from} offers {} ({}): /accept {number} or /decline {number}",
            sanitize(name),
            human(*size)
        )),
        TransferNotice::FileAccepted {
            name,
            size,
            resumed_at,
            part,
        } => Line::Out(if *resumed_at > 0 {
            format!(
                "* resuming {name}: {} of {} already here",
                human(*resumed_at),
                human(*size)
            )
        } else {
            format!(
                "* accepted {name} ({}); saving to {}",
                human(*size),
                part.display()
            )
        }),
        TransferNotice::FileDeclined { name } => Line::Out(format!("* declined {name}")),
        TransferNotice::FilePeerAccepted { to, name, offset } => Line::Out(if *offset > 0 {
            format!("* {to} accepted {name}; resuming at {}", human(*offset))
        } else {
            format!("* {to} accepted {name}; sending")
        }),
        TransferNotice::FilePeerDeclined { to, name, reason } => {
            Line::Out(format!("* {to} declined {name}: {reason}"))
        }
        TransferNotice::FileProgress {
            sending,
            name,
            done,
            size,
            rate,
            left_s,
        } => Line::Out(format!(
            "* {} {name}: {}% of {} at {}/s, about {left_s} s left",
            if *sending { "sending" } else { "receiving" },
            done * 100 / (*size).max(1),
            human(*size),
            human(*rate),
        )),
        TransferNotice::FileDelivered { to, name, size } => Line::Out(format!(
            "* {name} delivered to {to} ({}, hash verified)",
            human(*size)
        )),
        TransferNotice::FileReceived {
            from,
            name,
            size,
            path,
        } => Line::Out(format!(
            "* received {name} ({}, BLAKE3 verified) from {from}: {}",
            human(*size),
            path.display()
        )),
        TransferNotice::FileSendFailed { to, name, reason } => {
            Line::Err(format!("error: sending {name} to {to} failed: {reason}"))
        }
        TransferNotice::FileReceiveStopped {
            from,
            name,
            percent,
            reason,
            part,
        } => Line::Err(format!(
            "error: receiving {name} from {from} stopped at {percent}% ({reason}); {} is kept: when the same file is sent again, it resumes",
            part.display()
        )),
        TransferNotice::FileProblem { message } => Line::Err(format!("error: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_from_the_network_are_neutralised() {
        assert_eq!(sanitize("hi\u{1b}[2J\r"), "hi\u{FFFD}[2J\u{FFFD}");
        assert_eq!(sanitize("tab\tok é"), "tab\tok é");
    }

    #[test]
    fn incoming_relay_chat_is_sender_id_then_text() {
        let e = ClientEvent::Message {
            from: ClientId(0),
            to: ClientId(1),
            seq: 1,
            text: "hello there".into(),
            encrypted: true,
        };
        assert_eq!(
            relay_event(&e, None, false),
            Some(Line::Out("0 hello there".into()))
        );
    }
}
