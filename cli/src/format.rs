//! How events are shown: the stable text format (documented in README.md) and the
//! `--json` format, one object per line (the serde event vocabulary of
//! `p2pchat_client::events`, serialised).
//!
//! Text from the network is sanitised before it reaches the terminal: a control
//! character could otherwise move the cursor, clear the screen or retitle the window.

use p2pchat_client::SessionNotice;
use p2pchat_client::events::{
    DirectEvent, HistoryLine, Recipient, RelayEvent, RosterClient, UnconfirmedMessage, to_json_line,
};
use p2pchat_client::transfer::{TransferNotice, human};

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

fn who(id: u32, name: &str) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        format!("{id} {}", sanitize(name))
    }
}

/// A wait in whole seconds, rounded up (0.4 s left is not "0 s").
fn whole_seconds(wait_ms: u128) -> u128 {
    wait_ms.div_ceil(1000)
}

/// Why a client left, as the end of a sentence (`reason` is an error code's name).
fn departure(reason: &str) -> String {
    match reason {
        "normal" => String::new(),
        "connection-lost" => " (connection lost)".into(),
        other => format!(" (disconnected: {other})"),
    }
}

/// A client's key as lists show it: the start of its fingerprint, or a warning that
/// it does not encrypt.
fn key_tag(fingerprint: &Option<String>) -> String {
    match fingerprint {
        Some(fp) => format!(" [{}]", fp.chars().take(9).collect::<String>()),
        None => " [no key: plain text]".into(),
    }
}

/// Messages as a person reads them: `7 (to 1), 8 (to everyone)`, the first 10.
fn unconfirmed_list(messages: &[UnconfirmedMessage]) -> String {
    let mut parts: Vec<String> = messages
        .iter()
        .take(10)
        .map(|m| match m.to {
            Recipient::All => format!("{} (to everyone)", m.seq),
            Recipient::Client(to) => format!("{} (to {to})", m.seq),
        })
        .collect();
    if messages.len() > 10 {
        parts.push(format!("and {} more", messages.len() - 10));
    }
    parts.join(", ")
}

fn roster_line(total: u32, clients: &[RosterClient], me: Option<u32>) -> String {
    let list: Vec<String> = clients
        .iter()
        .map(|c| {
            let mut s = who(c.id, &c.name);
            if Some(c.id) == me {
                s.push_str(" (you)");
            } else {
                s.push_str(&key_tag(&c.key));
            }
            if c.exited {
                s.push_str(" (said exit)");
            }
            if c.away {
                s.push_str(" (away)");
            }
            s
        })
        .collect();
    let more = (total as usize).saturating_sub(clients.len());
    if more > 0 {
        format!("* online ({total}): {} and {more} more", list.join(", "))
    } else {
        format!("* online: {}", list.join(", "))
    }
}

/// How a relay session's event is shown as text. `me` is our ID, once known.
pub fn relay_event(event: &RelayEvent, me: Option<u32>) -> Option<Line> {
    let line = match event {
        RelayEvent::Welcome {
            id, max_clients, ..
        } => Line::Out(format!(
            "* you are client {id} (the server admits at most {max_clients})"
        )),
        RelayEvent::Roster { total, clients } => Line::Out(roster_line(*total, clients, me)),
        RelayEvent::Joined { id, name, key } => {
            Line::Out(format!("* {} joined{}", who(*id, name), key_tag(key)))
        }
        RelayEvent::Left { id, reason } => Line::Out(format!("* {id} left{}", departure(reason))),
        RelayEvent::Exited { id } => Line::Out(format!("* {id} said exit")),
        RelayEvent::Away {
            id,
            reason,
            wait_ms,
        } => Line::Out(format!(
            "* {id} is away ({}); messages to it wait up to {} s",
            reason.replace('-', " "),
            whole_seconds(*wait_ms)
        )),
        RelayEvent::Back { id } => Line::Out(format!("* {id} is back")),
        RelayEvent::Held { to, seq, wait_ms } => Line::Out(format!(
            "* {to} is away: your message {seq} (and what you send it next) waits up to {} s for it to come back; you will be told if it does not",
            whole_seconds(*wait_ms)
        )),
        RelayEvent::Message { from, text, .. } => Line::Out(format!("{from} {}", sanitize(text))),
        RelayEvent::NotEndToEnd {
            id,
            everyone: false,
        } => Line::Out(format!(
            "* {id} has no key: messages between you are not end-to-end encrypted (the relay can read them)"
        )),
        RelayEvent::NotEndToEnd { id, everyone: true } => Line::Out(format!(
            "* {id} has no key and cannot read messages to everyone; write `{id} MESSAGE` to reach it unencrypted"
        )),
        RelayEvent::Unconfirmed { messages } => Line::Err(format!(
            "error: {} of your messages were not confirmed delivered when the session ended; they may not have arrived: {}",
            messages.len(),
            unconfirmed_list(messages)
        )),
        RelayEvent::Delivered { .. } | RelayEvent::File { .. } => return None,
        RelayEvent::ConnectionLost(lost) => Line::Out(format!(
            "* {} ({}); getting back to the relay, which holds your ID and messages for {} s; what you type meanwhile is sent once back; /quit gives up now",
            sanitize(&lost.reason),
            lost.code,
            lost.grace_s
        )),
        RelayEvent::Reconnecting { attempt } => Line::Out(format!(
            "* could not reach the relay (attempt {attempt}); trying again"
        )),
        RelayEvent::Resumed { id } => Line::Out(format!(
            "* back: you are still client {id}; nothing was lost, nothing repeated"
        )),
        RelayEvent::Moved { id } => Line::Out(format!(
            "* back on another relay of the cluster (yours went away): you are still client {id}; what it had not confirmed was sent again, nothing is shown twice"
        )),
        RelayEvent::Unreadable { from, seq, reason } => Line::Err(format!(
            "error: message {seq} from client {from} could not be read: {}",
            sanitize(reason)
        )),
        RelayEvent::Unsupported { from, kind } => Line::Err(format!(
            "error: client {from} sent a kind of message this version cannot show ({kind})"
        )),
        RelayEvent::Error(report) => Line::Err(format!("error: {}", sanitize(&report.message))),
        RelayEvent::Refused { reason, .. } => Line::Err(format!(
            "p2pchat: refused by the server: {}",
            sanitize(reason)
        )),
        RelayEvent::Finished => Line::Out("* everyone has said exit; leaving".into()),
        RelayEvent::Disconnected(d) => match d.code.as_str() {
            "normal" | "server-full" => return None,
            _ => Line::Err(format!(
                "p2pchat: disconnected: {} ({})",
                sanitize(&d.reason),
                d.code
            )),
        },
    };
    Some(line)
}

/// How a session's own notice is shown: a line of text, or with `--json` one JSON
/// object (warnings and errors stay text on stderr either way).
pub fn session_notice(notice: &SessionNotice, json: bool) -> Line {
    match notice_text(notice) {
        Line::Out(_) if json => Line::Out(to_json_line(notice)),
        line => line,
    }
}

fn notice_text(notice: &SessionNotice) -> Line {
    match notice {
        SessionNotice::Security { summary, .. } => Line::Out(summary.clone()),
        SessionNotice::KeyChanged { hint } => Line::Err(hint.clone()),
        SessionNotice::SetAside { file, reason } => Line::Err(format!(
            "note: {}: {reason}; it is set aside and a new session starts",
            file.display()
        )),
        SessionNotice::Restored { id: Some(id), file } => Line::Out(format!(
            "* resuming the session this command left when its process ended, as client {id} (saved in {})",
            file.display()
        )),
        SessionNotice::Restored { id: None, file } => Line::Out(format!(
            "* resuming the conversation this command left when its process ended (saved in {})",
            file.display()
        )),
        SessionNotice::Listening { address } => Line::Out(format!(
            "* listening on {address}; waiting for a peer (`p2pchat connect HOST:PORT`)"
        )),
        SessionNotice::Arrived { address } => Line::Out(format!("* {address} connected")),
        SessionNotice::HistoryStart { lines, .. } => Line::Out(format!(
            "* history ({lines} earlier lines; /history shows more):"
        )),
        SessionNotice::HistoryEnd => Line::Out("* end of history".into()),
        SessionNotice::SessionLost { code, reason } => {
            Line::Out(format!("* {} ({code})", sanitize(reason)))
        }
        SessionNotice::Rejoining { attempt, wait_ms } => Line::Out(format!(
            "* reconnecting to the relay in {:.1} s (attempt {attempt})",
            *wait_ms as f64 / 1000.0
        )),
        SessionNotice::Rejoined { id, was } => Line::Out(format!(
            "* reconnected: you are a new client, {id} (you were {was}); IDs may have changed, /who lists who is online"
        )),
        SessionNotice::Problem { message } => Line::Err(format!("error: {message}")),
        SessionNotice::Warning { message } => Line::Err(format!("warning: {message}")),
    }
}

/// How a direct conversation's event is shown as text.
pub fn direct_event(event: &DirectEvent) -> Option<Line> {
    let line = match event {
        DirectEvent::Connected {
            plain_text: true, ..
        } => Line::Out(
            "* connected to a plain-text peer (lines, no handshake, not encrypted)".into(),
        ),
        DirectEvent::Connected { name, .. } if name.is_empty() => Line::Out("* connected".into()),
        DirectEvent::Connected { name, .. } => {
            Line::Out(format!("* connected to {}", sanitize(name)))
        }
        DirectEvent::Message { text, .. } => Line::Out(format!("peer: {}", sanitize(text))),
        DirectEvent::Unsupported { kind } => Line::Err(format!(
            "error: the peer sent a kind of message this version cannot show ({kind})"
        )),
        DirectEvent::PeerExited => {
            Line::Out("* peer said exit; you can still send until you say exit".into())
        }
        DirectEvent::Error(r) => Line::Err(format!("error: {}", sanitize(&r.message))),
        DirectEvent::Finished => Line::Out("* both sides said exit; conversation over".into()),
        DirectEvent::Delivered { .. } => return None,
        DirectEvent::ConnectionLost(lost) => Line::Out(format!(
            "* {} ({}); the conversation waits up to {} s for the peer to come back; what you type meanwhile is sent once it does; /quit ends it now",
            sanitize(&lost.reason),
            lost.code,
            lost.grace_s
        )),
        DirectEvent::Reconnecting { attempt } => Line::Out(format!(
            "* could not reach the peer (attempt {attempt}); trying again"
        )),
        DirectEvent::Resumed => {
            Line::Out("* back: the conversation goes on; nothing was lost, nothing repeated".into())
        }
        DirectEvent::Unconfirmed { seqs } => Line::Err(format!(
            "error: {} of your messages were not confirmed delivered when the conversation ended; they may not have arrived: {}",
            seqs.len(),
            seqs.iter()
                .take(10)
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        DirectEvent::Disconnected(d) if d.code == "normal" => {
            Line::Out(format!("* {}", sanitize(&d.reason)))
        }
        DirectEvent::Disconnected(d) => Line::Err(format!(
            "p2pchat: peer vanished: {} ({})",
            sanitize(&d.reason),
            d.code
        )),
    };
    Some(line)
}

/// How a line of history is shown as text.
pub fn history_line(line: &HistoryLine) -> Line {
    let at = line.at.replace('T', " ").trim_end_matches('Z').to_owned();
    Line::Out(format!("* [{at}] {}: {}", line.from, sanitize(&line.text)))
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
        let e = RelayEvent::Message {
            from: 0,
            to: Recipient::Client(1),
            seq: 1,
            e2e: true,
            text: "hello there".into(),
        };
        assert_eq!(
            relay_event(&e, None),
            Some(Line::Out("0 hello there".into()))
        );
    }
}
