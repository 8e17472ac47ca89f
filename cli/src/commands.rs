//! What a typed line means, in relay chat and in direct chat.

use p2pchat_core::{RelayLine, parse_relay_line};
use p2pchat_tcp::{ClientCommand, PeerCommand};

/// A typed line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed<C> {
    /// Something to send to the session.
    Command(C),
    /// Show the help text.
    Help,
    /// An empty line: nothing to do.
    Nothing,
    /// `/history [N]`: show the last N lines of the conversation's history.
    History(usize),
    /// `/send [ID] PATH`: offer a file (to client ID on a relay).
    Send(Option<p2pchat_core::ClientId>, String),
    /// `/accept [N]`.
    Accept(Option<usize>),
    /// `/decline [N]`.
    Decline(Option<usize>),
    /// `/cancel`: abandon every transfer under way.
    Cancel,
    /// Not understood; the sentence says why and what to type instead.
    Invalid(String),
}

/// Help for `p2pchat join`.
pub const RELAY_HELP: &str = "\
* ID MESSAGE     send MESSAGE to client ID (e.g. `1 hello there`)
* /all MESSAGE   send MESSAGE to everyone else
* /send ID PATH  offer the file at PATH to client ID
* /accept [N]    accept a file offer (the oldest, or number N); /decline [N] refuses
* /cancel        abandon every file transfer under way
* /who           list who is online
* exit           stop sending; keep receiving until everyone has said exit
* /quit          leave now (also Ctrl-C)
* /help          this text";

/// Help for `p2pchat listen` / `p2pchat connect`.
pub const DIRECT_HELP: &str = "\
* MESSAGE        any line is sent to the peer
* /send PATH     offer the file at PATH to the peer
* /accept [N]    accept a file offer (the oldest, or number N); /decline [N] refuses
* /cancel        abandon every file transfer under way
* exit           stop sending; keep receiving until the peer says exit too
* /history [N]   show the last N lines of your history with this peer (default 50)
* /quit          leave now (also Ctrl-C)
* /help          this text";

/// The file commands, common to both topologies (`relay` says whether `/send` takes
/// an ID); `None` if the line is not one.
fn file_line<C>(line: &str, relay: bool) -> Option<Typed<C>> {
    let trimmed = line.trim();
    let (name, arg) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let arg = arg.trim();
    let number = |arg: &str| -> Result<Option<usize>, String> {
        if arg.is_empty() {
            Ok(None)
        } else {
            arg.parse()
                .map(Some)
                .map_err(|_| format!("{name} takes an offer number, e.g. {name} 1"))
        }
    };
    let typed = match name {
        "/send" if relay => match arg.split_once(char::is_whitespace) {
            Some((id, path)) if id.parse::<u32>().is_ok() && !path.trim().is_empty() => {
                Typed::Send(
                    Some(p2pchat_core::ClientId(id.parse().unwrap_or(0))),
                    path.trim().to_owned(),
                )
            }
            _ => Typed::Invalid("usage: /send ID PATH".into()),
        },
        "/send" if arg.is_empty() => Typed::Invalid("usage: /send PATH".into()),
        "/send" => Typed::Send(None, arg.to_owned()),
        "/accept" => number(arg).map_or_else(Typed::Invalid, Typed::Accept),
        "/decline" => number(arg).map_or_else(Typed::Invalid, Typed::Decline),
        "/cancel" => Typed::Cancel,
        _ => return None,
    };
    Some(typed)
}

/// Parses a line typed in relay chat, with the same grammar the relay applies to its
/// plain-text clients (`p2pchat_core::parse_relay_line`).
pub fn relay_line(line: &str) -> Typed<ClientCommand> {
    if let Some(typed) = file_line(line, true) {
        return typed;
    }
    match parse_relay_line(line) {
        RelayLine::Send { to, text } => Typed::Command(ClientCommand::Send {
            to,
            text: text.to_owned(),
        }),
        RelayLine::Broadcast(text) => Typed::Command(ClientCommand::Broadcast(text.to_owned())),
        RelayLine::Who => Typed::Command(ClientCommand::Who),
        RelayLine::Exit => Typed::Command(ClientCommand::Exit),
        RelayLine::Quit => Typed::Command(ClientCommand::Leave),
        RelayLine::Help => Typed::Help,
        RelayLine::Empty => Typed::Nothing,
        RelayLine::Invalid(why) => Typed::Invalid(why),
    }
}

/// Parses a line typed in direct chat.
pub fn direct_line(line: &str) -> Typed<PeerCommand> {
    if let Some(typed) = file_line(line, false) {
        return typed;
    }
    let trimmed = line.trim();
    match trimmed {
        "" => Typed::Nothing,
        "exit" => Typed::Command(PeerCommand::Exit),
        "/quit" => Typed::Command(PeerCommand::Leave),
        "/help" => Typed::Help,
        "/history" => Typed::History(50),
        _ if trimmed.starts_with("/history ") => {
            match trimmed["/history ".len()..].trim().parse() {
                Ok(n) => Typed::History(n),
                Err(_) => Typed::Invalid("usage: /history [NUMBER OF LINES]".into()),
            }
        }
        _ if trimmed.starts_with('/') && !trimmed.starts_with("//") => Typed::Invalid(format!(
            "unknown command {trimmed}; /help lists the commands (start a message with // to send a leading /)"
        )),
        _ => {
            let text = line
                .strip_prefix('/')
                .filter(|t| t.starts_with('/'))
                .unwrap_or(line);
            Typed::Command(PeerCommand::Send(text.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pchat_core::ClientId;

    #[test]
    fn id_then_message_keeps_the_spaces_of_the_message() {
        assert_eq!(
            relay_line("1 hello  there"),
            Typed::Command(ClientCommand::Send {
                to: ClientId(1),
                text: "hello  there".into()
            })
        );
    }

    #[test]
    fn relay_commands_and_mistakes() {
        assert_eq!(relay_line("exit"), Typed::Command(ClientCommand::Exit));
        assert_eq!(relay_line("/who"), Typed::Command(ClientCommand::Who));
        assert_eq!(
            relay_line("/all hi all"),
            Typed::Command(ClientCommand::Broadcast("hi all".into()))
        );
        assert_eq!(relay_line("  "), Typed::Nothing);
        assert!(matches!(relay_line("hello"), Typed::Invalid(_)));
        assert!(matches!(relay_line("3"), Typed::Invalid(m) if m.contains("missing")));
        assert!(matches!(relay_line("/nope"), Typed::Invalid(_)));
        assert!(matches!(relay_line("4294967295 x"), Typed::Invalid(_)));
    }

    #[test]
    fn direct_lines_are_messages_unless_commands() {
        assert_eq!(
            direct_line("hi there"),
            Typed::Command(PeerCommand::Send("hi there".into()))
        );
        assert_eq!(direct_line("exit"), Typed::Command(PeerCommand::Exit));
        assert_eq!(
            direct_line("//etc"),
            Typed::Command(PeerCommand::Send("/etc".into()))
        );
        assert!(matches!(direct_line("/etc"), Typed::Invalid(_)));
    }
}
