//! `p2pchat join`: a relay client in the terminal, on the client library's relay
//! session (`p2pchat_client::relay`): typed lines become its commands, its outputs
//! become lines (text, or one JSON object each with `--json`).

use async_channel::{Receiver, Sender};
use p2pchat_client::SessionError;
use p2pchat_client::SessionNotice;
use p2pchat_client::events::{RelayEvent, to_json_line};
use p2pchat_client::keys::Wishes;
use p2pchat_client::relay::{self, RelayCommand, RelayOptions, RelayOutput};
use p2pchat_client::saved::Saving;
use p2pchat_tcp::ClientCommand;

use crate::args::JoinArgs;
use crate::commands::{self, RELAY_HELP, Typed};
use crate::format::{self, Line};
use crate::ui::{Input, Ui};

/// Runs the client; returns the process exit status.
pub fn run(args: JoinArgs) -> i32 {
    let (mut ui, inputs) = Ui::start();
    if let Some(path) = &args.log
        && let Err(e) = ui.log_to(path)
    {
        eprintln!("p2pchat: --log {}: {e}", path.display());
        return 2;
    }
    let options = RelayOptions {
        host: args.host.clone(),
        name: args.name.clone(),
        wishes: Wishes {
            insecure: args.insecure,
            password: Wishes::password_from(args.password.clone()),
            expect: args.expect.clone(),
            cipher: args.cipher.resolve(),
        },
        download_dir: args.download_dir.clone(),
        auto_accept: args.auto_accept,
        reconnect: !args.no_reconnect,
        // The session is saved as it goes, so that this command started again after
        // its process died resumes it.
        saving: if args.new_session {
            Saving::Fresh
        } else {
            Saving::Resume
        },
        data_dir: p2pchat_client::data_dir(),
    };
    let (commands_in, commands) = async_channel::unbounded();
    let mut view = View {
        ui: ui.clone(),
        json: args.json,
        me: None,
        refused: false,
    };
    let typing = typed_commands(ui.clone(), inputs, commands_in, args.json);
    let session = relay::run(options, commands, move |burst| view.show(burst));
    let result = smol::block_on(smol::future::or(session, async {
        typing.await;
        // Input is over and the session still runs: it ends by itself.
        std::future::pending().await
    }));
    exit_status(&ui, result)
}

/// The exit status for how a session ended, saying why when events did not.
pub fn exit_status(ui: &Ui, result: Result<(), SessionError>) -> i32 {
    match result {
        Ok(()) => 0,
        // The events said why.
        Err(SessionError::Ended(_)) => 1,
        Err(e @ SessionError::Name(_)) => {
            ui.err(&format!("p2pchat: {e}"));
            2
        }
        Err(e) => {
            ui.err(&format!("p2pchat: {e}"));
            1
        }
    }
}

/// Turns typed lines into the session's commands (help and mistakes are answered
/// here); end of input is `exit`, Ctrl-C is `/quit`.
async fn typed_commands(
    ui: Ui,
    inputs: Receiver<Input>,
    commands: Sender<RelayCommand>,
    json: bool,
) {
    while let Ok(input) = inputs.recv().await {
        let command = match input {
            Input::Line(line) => match commands::relay_line(&line) {
                Typed::Command(cmd) => match cmd {
                    ClientCommand::Send { to, text } => RelayCommand::Send { to: to.0, text },
                    ClientCommand::Broadcast(text) => RelayCommand::Broadcast { text },
                    ClientCommand::Who => RelayCommand::Who,
                    ClientCommand::Exit => {
                        if !json {
                            ui.out("* you said exit; you keep receiving until everyone has said exit (/quit leaves now)");
                        }
                        RelayCommand::Exit
                    }
                    ClientCommand::Leave => RelayCommand::Quit,
                    ClientCommand::File(_) => continue,
                },
                Typed::Send(to, path) => RelayCommand::Offer {
                    to: to.map_or(0, |id| id.0),
                    path: path.into(),
                },
                Typed::Accept(number) => RelayCommand::Accept { number },
                Typed::Decline(number) => RelayCommand::Decline { number },
                Typed::Cancel => RelayCommand::Cancel,
                Typed::Help => {
                    ui.out(RELAY_HELP);
                    continue;
                }
                Typed::Nothing | Typed::History(_) => continue,
                Typed::Invalid(why) => {
                    ui.err(&format!("error: {why}"));
                    continue;
                }
            },
            Input::Eof => RelayCommand::Exit,
            Input::Interrupt => RelayCommand::Quit,
        };
        if commands.send(command).await.is_err() {
            return;
        }
    }
}

/// What the terminal shows of a relay session.
struct View {
    ui: Ui,
    json: bool,
    /// Our ID, once known (the roster marks it "you").
    me: Option<u32>,
    /// The relay turned us away: its disconnection says nothing more.
    refused: bool,
}

impl View {
    /// Shows a burst of outputs in one write (see `Ui::hold`).
    fn show(&mut self, burst: Vec<RelayOutput>) {
        self.ui.hold();
        for output in burst {
            let line = self.line(&output);
            self.ui.show(line);
        }
        self.ui.release();
    }

    fn line(&mut self, output: &RelayOutput) -> Option<Line> {
        match output {
            RelayOutput::Event(event) => {
                match event {
                    RelayEvent::Welcome { id, .. }
                    | RelayEvent::Resumed { id }
                    | RelayEvent::Moved { id } => self.me = Some(*id),
                    RelayEvent::Refused { .. } => self.refused = true,
                    RelayEvent::Disconnected(_) if self.refused && !self.json => return None,
                    _ => {}
                }
                if self.json {
                    return Some(Line::Out(to_json_line(event)));
                }
                format::relay_event(event, self.me)
            }
            RelayOutput::Transfer(notice) => {
                self.ui.transfer(notice);
                None
            }
            RelayOutput::Notice(notice) => {
                if let SessionNotice::Restored { id: Some(id), .. } = notice {
                    self.me = Some(*id);
                }
                Some(format::session_notice(notice, self.json))
            }
        }
    }
}
