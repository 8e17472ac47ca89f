//! A bot that joins a relay and answers: the whole client library API in one file.
//!
//! `cargo run -p p2pchat-client --example bot -- HOST[:PORT]`, then from another
//! client `ID hello` (ID is the bot's): it answers `you said: hello`. It greets
//! whoever joins, declines files, and leaves when told `/bye`.

use p2pchat_client::SessionError;
use p2pchat_client::relay::{self, RelayCommand, RelayOptions, RelayOutput};
use p2pchat_client::{RelayEvent, transfer::TransferNotice};

fn main() {
    let host = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1".into());
    let options = RelayOptions::new(host, "bot");
    if let Err(e) = smol::block_on(bot(options)) {
        eprintln!("bot: {e}");
        std::process::exit(1);
    }
}

/// Runs the bot until it is told `/bye` or the session ends.
pub async fn bot(options: RelayOptions) -> Result<(), SessionError> {
    // Commands in, outputs out: two channels between the bot and its session.
    let (commands, session_commands) = async_channel::unbounded();
    let (session_outputs, outputs) = async_channel::unbounded();
    let session = relay::run(options, session_commands, move |burst| {
        for output in burst {
            let _ = session_outputs.try_send(output);
        }
    });
    let answer = async {
        while let Ok(output) = outputs.recv().await {
            let reply = match output {
                RelayOutput::Event(RelayEvent::Message { from, text, .. }) => match text.trim() {
                    "/bye" => RelayCommand::Quit,
                    said => RelayCommand::Send {
                        to: from,
                        text: format!("you said: {said}"),
                    },
                },
                RelayOutput::Event(RelayEvent::Joined { id, name, .. }) => RelayCommand::Send {
                    to: id,
                    text: format!("hello {name}, I repeat what you tell me"),
                },
                RelayOutput::Transfer(TransferNotice::FileOffered { number, .. }) => {
                    RelayCommand::Decline {
                        number: Some(number),
                    }
                }
                _ => continue,
            };
            if commands.send(reply).await.is_err() {
                break;
            }
        }
    };
    // The session ends when the bot quits; `answer` ends when the session does.
    let (result, ()) = smol::future::zip(session, answer).await;
    result
}
