//! How events are shown: the stable text format (documented in README.md) and the
//! `--json` format, one object per line.
//!
//! Text from the network is sanitised before it reaches the terminal: a control
//! character could otherwise move the cursor, clear the screen or retitle the window.

use std::time::Duration;

use p2pchat_core::{
    ClientEvent, ClientId, ErrorCode, PeerEvent, PublicKey, RecordCipher, RosterEntry,
};

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

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

/// A key as JSON: its fingerprint, or `null`.
fn key_json(key: &Option<PublicKey>) -> String {
    key.map_or_else(|| "null".to_owned(), |k| json_string(&k.fingerprint()))
}

/// A channel's cipher as JSON: its name, or `null` in the clear.
fn cipher_json(cipher: &Option<RecordCipher>) -> String {
    cipher.map_or_else(|| "null".to_owned(), |c| json_string(c.name()))
}

/// A recipient as JSON: an ID, or `"all"`.
fn json_to(to: ClientId) -> String {
    if to.is_broadcast() {
        "\"all\"".to_owned()
    } else {
        to.to_string()
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
        return Some(relay_event_json(event));
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

fn relay_event_json(event: &ClientEvent) -> Line {
    let obj = match event {
        ClientEvent::Welcomed {
            id,
            max_clients,
            version,
            relay_key,
            cipher,
        } => {
            format!(
                r#"{{"event":"welcome","id":{id},"max_clients":{max_clients},"version":{version},"encrypted":{},"relay_key":{},"cipher":{}}}"#,
                relay_key.is_some(),
                key_json(relay_key),
                cipher_json(cipher)
            )
        }
        ClientEvent::Roster { total, entries } => {
            let items: Vec<String> = entries
                .iter()
                .map(|e| {
                    format!(
                        r#"{{"id":{},"name":{},"exited":{},"away":{},"key":{}}}"#,
                        e.id,
                        json_string(&e.name),
                        e.exited,
                        e.away,
                        key_json(&e.key)
                    )
                })
                .collect();
            format!(
                r#"{{"event":"roster","total":{total},"clients":[{}]}}"#,
                items.join(",")
            )
        }
        ClientEvent::Joined { id, name, key } => format!(
            r#"{{"event":"joined","id":{id},"name":{},"key":{}}}"#,
            json_string(name),
            key_json(key)
        ),
        ClientEvent::Left { id, code } => {
            format!(r#"{{"event":"left","id":{id},"reason":"{code}"}}"#)
        }
        ClientEvent::Exited { id } => format!(r#"{{"event":"exited","id":{id}}}"#),
        ClientEvent::Away { id, code, wait } => format!(
            r#"{{"event":"away","id":{id},"reason":"{code}","wait_ms":{}}}"#,
            wait.as_millis()
        ),
        ClientEvent::Back { id } => format!(r#"{{"event":"back","id":{id}}}"#),
        ClientEvent::Held { to, seq, wait } => format!(
            r#"{{"event":"held","to":{to},"seq":{seq},"wait_ms":{}}}"#,
            wait.as_millis()
        ),
        ClientEvent::Message {
            from,
            to,
            seq,
            text,
            encrypted,
        } => {
            let to = json_to(*to);
            format!(
                r#"{{"event":"message","from":{from},"to":{to},"seq":{seq},"e2e":{encrypted},"text":{}}}"#,
                json_string(text)
            )
        }
        ClientEvent::NotEndToEnd { id, everyone } => {
            format!(r#"{{"event":"not_end_to_end","id":{id},"everyone":{everyone}}}"#)
        }
        ClientEvent::Unconfirmed { messages } => {
            let items: Vec<String> = messages
                .iter()
                .map(|(seq, to)| format!(r#"{{"seq":{seq},"to":{}}}"#, json_to(*to)))
                .collect();
            format!(
                r#"{{"event":"unconfirmed","messages":[{}]}}"#,
                items.join(",")
            )
        }
        ClientEvent::Unreadable { from, seq, reason } => format!(
            r#"{{"event":"unreadable","from":{from},"seq":{seq},"reason":{}}}"#,
            json_string(reason)
        ),
        ClientEvent::Delivered { seq } => format!(r#"{{"event":"delivered","seq":{seq}}}"#),
        ClientEvent::ConnectionLost {
            code,
            reason,
            grace,
        } => connection_lost_json(*code, reason, *grace),
        ClientEvent::Reconnecting { attempt, .. } => reconnecting_json(*attempt),
        ClientEvent::Resumed { id } => format!(r#"{{"event":"resumed","id":{id}}}"#),
        ClientEvent::UnsupportedPayload { from, kind } => {
            format!(r#"{{"event":"unsupported","from":{from},"kind":{kind}}}"#)
        }
        ClientEvent::Error(r) => format!(
            r#"{{"event":"error","code":"{}","seq":{},"message":{}}}"#,
            r.code,
            r.seq,
            json_string(&r.message)
        ),
        ClientEvent::Refused(r) => format!(
            r#"{{"event":"refused","code":"{}","online":{},"limit":{},"reason":{}}}"#,
            r.code,
            r.online,
            r.limit,
            json_string(&r.reason)
        ),
        ClientEvent::Finished => r#"{"event":"finished"}"#.to_owned(),
        ClientEvent::File(e) => format!(
            r#"{{"event":"file","detail":{}}}"#,
            json_string(&format!("{e:?}"))
        ),
        ClientEvent::Disconnected { code, reason } => {
            format!(
                r#"{{"event":"disconnected","code":"{code}","reason":{}}}"#,
                json_string(reason)
            )
        }
    };
    Line::Out(obj)
}

/// A lost connection whose session goes on, in JSON (the same for both topologies).
fn connection_lost_json(code: ErrorCode, reason: &str, grace: std::time::Duration) -> String {
    format!(
        r#"{{"event":"connection_lost","code":"{code}","reason":{},"grace_s":{}}}"#,
        json_string(reason),
        grace.as_secs()
    )
}

/// A dial to get a lost connection back failed, in JSON.
fn reconnecting_json(attempt: u32) -> String {
    format!(r#"{{"event":"reconnecting","attempt":{attempt}}}"#)
}

/// How a direct-chat event is shown.
pub fn peer_event(event: &PeerEvent, json: bool) -> Option<Line> {
    if json {
        let obj = match event {
            PeerEvent::Connected {
                name,
                version,
                plain_text,
                key,
                cipher,
            } => format!(
                r#"{{"event":"connected","name":{},"version":{version},"plain_text":{plain_text},"encrypted":{},"key":{},"cipher":{}}}"#,
                json_string(name),
                key.is_some(),
                key_json(key),
                cipher_json(cipher)
            ),
            PeerEvent::Message { seq, text } => {
                format!(
                    r#"{{"event":"message","seq":{seq},"text":{}}}"#,
                    json_string(text)
                )
            }
            PeerEvent::UnsupportedPayload { kind } => {
                format!(r#"{{"event":"unsupported","kind":{kind}}}"#)
            }
            PeerEvent::PeerExited => r#"{"event":"peer_exited"}"#.to_owned(),
            PeerEvent::Error(r) => format!(
                r#"{{"event":"error","code":"{}","seq":{},"message":{}}}"#,
                r.code,
                r.seq,
                json_string(&r.message)
            ),
            PeerEvent::Finished => r#"{"event":"finished"}"#.to_owned(),
            PeerEvent::File(_) => return None,
            PeerEvent::Delivered { seq } => format!(r#"{{"event":"delivered","seq":{seq}}}"#),
            PeerEvent::ConnectionLost {
                code,
                reason,
                grace,
            } => connection_lost_json(*code, reason, *grace),
            PeerEvent::Reconnecting { attempt } => reconnecting_json(*attempt),
            PeerEvent::Resumed => r#"{"event":"resumed"}"#.to_owned(),
            PeerEvent::Unconfirmed { seqs } => format!(
                r#"{{"event":"unconfirmed","seqs":[{}]}}"#,
                seqs.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            PeerEvent::Disconnected { code, reason } => {
                format!(
                    r#"{{"event":"disconnected","code":"{code}","reason":{}}}"#,
                    json_string(reason)
                )
            }
        };
        return Some(Line::Out(obj));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_from_the_network_are_neutralised() {
        assert_eq!(sanitize("hi\u{1b}[2J\r"), "hi\u{FFFD}[2J\u{FFFD}");
        assert_eq!(sanitize("tab\tok é"), "tab\tok é");
    }

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
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
