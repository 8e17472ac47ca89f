//! `p2pchat listen` and `p2pchat connect`: direct chat between two terminals, on the
//! client library's direct conversation (`p2pchat_client::direct`), which keeps each
//! side's history on disk and shows it again next time.

use std::net::{IpAddr, SocketAddr};

use async_channel::{Receiver, Sender};
use p2pchat_client::direct::{
    self, DirectCommand, DirectOptions, DirectOutput, HistoryOptions, Role,
};
use p2pchat_client::events::to_json_line;
use p2pchat_client::keys::Wishes;
use p2pchat_client::saved::Saving;
use p2pchat_tcp::PeerCommand;

use crate::args::{ConnectArgs, ListenArgs};
use crate::commands::{self, DIRECT_HELP, Typed};
use crate::format::{self, Line};
use crate::ui::{Input, Ui};

/// `p2pchat listen`: waits for one peer, then chats; returns the exit status.
pub fn listen(args: ListenArgs) -> i32 {
    let Ok(ip) = args.bind.parse::<IpAddr>() else {
        eprintln!(
            "p2pchat: --bind {}: not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)",
            args.bind
        );
        return 2;
    };
    let options = DirectOptions {
        role: Role::Listen(SocketAddr::new(ip, args.port)),
        name: args.name,
        wishes: Wishes {
            insecure: args.insecure,
            password: None,
            expect: args.expect,
            cipher: p2pchat_core::RecordCipher::fastest_here(),
        },
        download_dir: args.download_dir,
        auto_accept: args.auto_accept,
        saving: saving(args.new_session),
        data_dir: p2pchat_client::data_dir(),
        history: history(args.no_history, args.history, args.history_lines),
        resume_grace: Some(std::time::Duration::from_secs(args.resume_grace)),
    };
    converse(options, args.json)
}

/// `p2pchat connect`: dials a listening peer, then chats; returns the exit status.
pub fn connect(args: ConnectArgs) -> i32 {
    let options = DirectOptions {
        role: if args.text {
            Role::ConnectPlainText(args.host)
        } else {
            Role::Connect(args.host)
        },
        name: args.name,
        wishes: Wishes {
            insecure: args.insecure,
            password: None,
            expect: args.expect,
            cipher: args.cipher.resolve(),
        },
        download_dir: args.download_dir,
        auto_accept: args.auto_accept,
        saving: saving(args.new_session),
        data_dir: p2pchat_client::data_dir(),
        history: history(args.no_history, args.history, args.history_lines),
        resume_grace: None,
    };
    converse(options, args.json)
}

/// `--no-history`, `--history FILE` and `--history-lines N`.
fn history(off: bool, file: Option<std::path::PathBuf>, lines: usize) -> HistoryOptions {
    HistoryOptions {
        keep: !off,
        file,
        lines,
    }
}

/// The conversation is saved as it goes, so that this command started again after
/// its process died resumes it; `--new-session` forgets a saved one first.
fn saving(new_session: bool) -> Saving {
    if new_session {
        Saving::Fresh
    } else {
        Saving::Resume
    }
}

/// Runs the conversation with the terminal; returns the exit status.
fn converse(options: DirectOptions, json: bool) -> i32 {
    let (ui, inputs) = Ui::start();
    let (commands_in, commands) = async_channel::unbounded();
    let typing = typed_commands(ui.clone(), inputs, commands_in, json);
    let view = ui.clone();
    let session = direct::run(options, commands, move |burst| show(&view, burst, json));
    let result = smol::block_on(smol::future::or(session, async {
        typing.await;
        // Input is over and the conversation still runs: it ends by itself.
        std::future::pending().await
    }));
    crate::join::exit_status(&ui, result)
}

/// Turns typed lines into the conversation's commands (help and mistakes are
/// answered here); end of input ends our side, Ctrl-C is `/quit`.
async fn typed_commands(
    ui: Ui,
    inputs: Receiver<Input>,
    commands: Sender<DirectCommand>,
    json: bool,
) {
    let mut exited = false;
    while let Ok(input) = inputs.recv().await {
        let command = match input {
            Input::Line(line) => match commands::direct_line(&line) {
                Typed::Command(cmd) => match cmd {
                    PeerCommand::Send(text) => DirectCommand::Send { text },
                    PeerCommand::Exit => {
                        if !json && !exited {
                            ui.out("* you said exit; you keep receiving until the peer says exit too (/quit leaves now)");
                        }
                        exited = true;
                        DirectCommand::Exit
                    }
                    PeerCommand::Leave => DirectCommand::Quit,
                    PeerCommand::EndOfInput => DirectCommand::InputEnded,
                    PeerCommand::File(_) => continue,
                },
                Typed::History(lines) => DirectCommand::History { lines },
                Typed::Send(_, path) => DirectCommand::Offer { path: path.into() },
                Typed::Accept(number) => DirectCommand::Accept { number },
                Typed::Decline(number) => DirectCommand::Decline { number },
                Typed::Cancel => DirectCommand::Cancel,
                Typed::Help => {
                    ui.out(DIRECT_HELP);
                    continue;
                }
                Typed::Nothing => continue,
                Typed::Invalid(why) => {
                    ui.err(&format!("error: {why}"));
                    continue;
                }
            },
            Input::Eof => DirectCommand::InputEnded,
            Input::Interrupt => DirectCommand::Quit,
        };
        if commands.send(command).await.is_err() {
            return;
        }
    }
}

/// Shows a burst of outputs in one write (see `Ui::hold`).
fn show(ui: &Ui, burst: Vec<DirectOutput>, json: bool) {
    ui.hold();
    for output in burst {
        let line = match &output {
            DirectOutput::Event(event) if json => Some(Line::Out(to_json_line(event))),
            DirectOutput::Event(event) => format::direct_event(event),
            DirectOutput::History(line) if json => Some(Line::Out(to_json_line(line))),
            DirectOutput::History(line) => Some(format::history_line(line)),
            DirectOutput::Transfer(notice) => {
                ui.transfer(notice);
                None
            }
            DirectOutput::Notice(notice) => Some(format::session_notice(notice, json)),
        };
        ui.show(line);
    }
    ui.release();
}
