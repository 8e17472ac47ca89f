//! What a typed line means, in relay chat and in direct chat.

use p2pchat_core::ClientId;
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
    /// Not understood; the sentence says why and what to type instead.
    Invalid(String),
}

/// Help for `p2pchat join`.
pub const RELAY_HELP: &str = "\
* ID MESSAGE     send MESSAGE to client ID (e.g. `1 hello there`)
* /all MESSAGE   send MESSAGE to everyone else
* /who           list who is online
* exit           stop sending; keep receiving until everyone has said exit
* /quit          leave now (also Ctrl-C)
* /help          this text";

/// Help for `p2pchat listen` / `p2pchat connect`.
pub const DIRECT_HELP: &str = "\
* MESSAGE        any line is sent to the peer
* exit           stop sending; keep receiving until the peer says exit too
* /quit          leave now (also Ctrl-C)
* /help          this text";

/// Parses a line typed in relay chat.
pub fn relay_line(line: &str) -> Typed<ClientCommand> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Typed::Nothing;
    }
    if trimmed == "exit" {
        return Typed::Command(ClientCommand::Exit);
    }
    if let Some(rest) = trimmed.strip_prefix('/') {
        let (name, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let arg = arg.trim_start();
        return match name {
            "who" => Typed::Command(ClientCommand::Who),
            "help" => Typed::Help,
            "quit" => Typed::Command(ClientCommand::Leave),
            "all" if arg.is_empty() => Typed::Invalid("usage: /all MESSAGE".into()),
            "all" => Typed::Command(ClientCommand::Broadcast(arg.to_owned())),
            _ => Typed::Invalid(format!("unknown command /{name}; /help lists the commands")),
        };
    }
    let (first, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let text = rest.trim_start();
    match first.parse::<u32>() {
        Ok(id) if id != u32::MAX && !text.is_empty() => Typed::Command(ClientCommand::Send {
            to: ClientId(id),
            text: text.to_owned(),
        }),
        Ok(id) if id != u32::MAX => Typed::Invalid(format!("usage: {id} MESSAGE (the message is missing)")),
        _ => Typed::Invalid(
            "start the line with the ID of the client it is for, e.g. `1 hello`; /all sends to everyone; /help lists the commands"
                .into(),
        ),
    }
}

/// Parses a line typed in direct chat.
pub fn direct_line(line: &str) -> Typed<PeerCommand> {
    let trimmed = line.trim();
    match trimmed {
        "" => Typed::Nothing,
        "exit" => Typed::Command(PeerCommand::Exit),
        "/quit" => Typed::Command(PeerCommand::Leave),
        "/help" => Typed::Help,
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
