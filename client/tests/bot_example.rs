//! The library's example bot (`examples/bot.rs`, compiled in here as it is) against a
//! real relay on 127.0.0.1, with a second library client talking to it: greeting,
//! answers, a declined file, and `/bye`.

#[allow(dead_code)]
#[path = "../examples/bot.rs"]
mod bot;

use std::net::SocketAddr;
use std::time::Duration;

use async_channel::Receiver;
use p2pchat_client::RelayEvent;
use p2pchat_client::relay::{self, RelayCommand, RelayOptions, RelayOutput};
use p2pchat_client::transfer::TransferNotice;
use p2pchat_core::{Identity, Limits, Security};
use p2pchat_tcp::{Relay, ShutdownHandle};

/// How long any one expected output may take.
const WAIT: Duration = Duration::from_secs(15);

/// A new, empty folder under the system's temp folder.
fn fresh_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("p2pchat-bot-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp folder");
    dir
}

/// A relay on a free loopback port, encrypted, on a thread of its own.
fn start_relay() -> (SocketAddr, ShutdownHandle) {
    let security = Security::encrypted(Identity::from_secret([7; 32]), [9; 32]);
    let relay = smol::block_on(Relay::bind(
        "127.0.0.1:0".parse().expect("an address"),
        Limits::default(),
        security,
    ))
    .expect("a free port");
    let addr = relay.local_addr().expect("its address");
    let (handle, signal) = ShutdownHandle::new();
    let (log, _) = async_channel::unbounded();
    relay.spawn(log, signal);
    (addr, handle)
}

/// Waits for an output matching `pred`; returns it.
fn expect(
    outputs: &Receiver<RelayOutput>,
    what: &str,
    pred: impl Fn(&RelayOutput) -> bool,
) -> RelayOutput {
    smol::block_on(async {
        let deadline = smol::Timer::after(WAIT);
        let found = smol::future::or(
            async {
                while let Ok(output) = outputs.recv().await {
                    if pred(&output) {
                        return Some(output);
                    }
                }
                None
            },
            async {
                deadline.await;
                None
            },
        );
        found
            .await
            .unwrap_or_else(|| panic!("no {what} within {WAIT:?}"))
    })
}

/// A library client joining `host` as `name`, on a thread: its commands, its
/// outputs, and how it ended.
struct Client {
    commands: async_channel::Sender<RelayCommand>,
    outputs: Receiver<RelayOutput>,
    ended: std::thread::JoinHandle<Result<(), p2pchat_client::SessionError>>,
}

impl Client {
    fn join(host: &str, name: &str) -> Client {
        let mut options = RelayOptions::new(host, name);
        options.data_dir = Some(fresh_dir(name));
        let (commands, session_commands) = async_channel::unbounded();
        let (session_outputs, outputs) = async_channel::unbounded();
        let ended = std::thread::spawn(move || {
            smol::block_on(relay::run(options, session_commands, move |burst| {
                for output in burst {
                    let _ = session_outputs.try_send(output);
                }
            }))
        });
        Client {
            commands,
            outputs,
            ended,
        }
    }

    fn send(&self, command: RelayCommand) {
        self.commands
            .send_blocking(command)
            .expect("the session runs");
    }

    fn expect(&self, what: &str, pred: impl Fn(&RelayOutput) -> bool) -> RelayOutput {
        expect(&self.outputs, what, pred)
    }
}

#[test]
fn the_example_bot_greets_answers_declines_files_and_leaves_when_told() {
    let (addr, relay) = start_relay();
    let host = addr.to_string();

    let ann = Client::join(&host, "ann");
    ann.expect("ann's welcome", |o| {
        matches!(o, RelayOutput::Event(RelayEvent::Welcome { .. }))
    });
    let mut bot_options = RelayOptions::new(host.clone(), "bot");
    bot_options.data_dir = Some(fresh_dir("bot"));
    let bot = std::thread::spawn(move || smol::block_on(bot::bot(bot_options)));
    let joined = ann.expect(
        "the bot joining",
        |o| matches!(o, RelayOutput::Event(RelayEvent::Joined { name, .. }) if name == "bot"),
    );
    let RelayOutput::Event(RelayEvent::Joined { id: bot_id, .. }) = joined else {
        unreachable!("matched above");
    };

    // Whoever joins after the bot is greeted.
    let bob = Client::join(&host, "bob");
    bob.expect("the greeting", |o| {
        matches!(o, RelayOutput::Event(RelayEvent::Message { from, text, .. })
            if *from == bot_id && text == "hello bob, I repeat what you tell me")
    });

    ann.send(RelayCommand::Send {
        to: bot_id,
        text: "hello bot".into(),
    });
    ann.expect("the answer", |o| {
        matches!(o, RelayOutput::Event(RelayEvent::Message { from, text, e2e: true, .. })
            if *from == bot_id && text == "you said: hello bot")
    });

    let file = fresh_dir("files").join("notes.txt");
    std::fs::write(&file, b"for the bot").expect("a file");
    ann.send(RelayCommand::Offer {
        to: bot_id,
        path: file,
    });
    ann.expect("the file declined", |o| {
        matches!(o, RelayOutput::Transfer(TransferNotice::FilePeerDeclined { name, .. }) if name == "notes.txt")
    });

    ann.send(RelayCommand::Send {
        to: bot_id,
        text: "/bye".into(),
    });
    ann.expect(
        "the bot leaving",
        |o| matches!(o, RelayOutput::Event(RelayEvent::Left { id, .. }) if *id == bot_id),
    );
    assert!(
        bot.join().expect("the bot thread").is_ok(),
        "the bot ends cleanly"
    );

    for client in [ann, bob] {
        client.send(RelayCommand::Quit);
        assert!(client.ended.join().expect("the client thread").is_ok());
    }
    relay.shutdown();
}
