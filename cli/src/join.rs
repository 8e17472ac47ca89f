//! `p2pchat join`: a relay client in the terminal.

use p2pchat_core::{ClientEvent, ErrorCode, Limits, RelayClient};
use p2pchat_tcp::{ClientCommand, DEFAULT_PORT, SessionEvent};

use crate::args::JoinArgs;
use crate::commands::{self, RELAY_HELP, Typed};
use crate::format;
use crate::keys::{self, Trust, Wishes};
use crate::transfer::{self, Transfers};
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
    smol::block_on(async move {
        let stream = match p2pchat_tcp::connect(&args.host, DEFAULT_PORT, "`p2pchat server`").await
        {
            Ok(stream) => stream,
            Err(e) => {
                ui.err(&format!("p2pchat: {e}"));
                return 1;
            }
        };
        let mut trust = Trust::new(
            Some(keys::host_label(&args.host, DEFAULT_PORT)),
            args.expect.is_some(),
        );
        let wishes = Wishes {
            insecure: args.insecure,
            password: Wishes::password_from(args.password.clone()),
            expect: args.expect.clone(),
        };
        let security = match wishes.security(false, trust.expect()) {
            Ok(s) => s,
            Err(e) => {
                ui.err(&format!("p2pchat: {e}"));
                return 1;
            }
        };
        let clock = p2pchat_tcp::Clock::new();
        let session = match RelayClient::new(&args.name, Limits::default(), security, clock.now()) {
            Ok(machine) => p2pchat_tcp::prepare(stream, machine, clock),
            Err(why) => {
                ui.err(&format!("p2pchat: --name: {why}"));
                return 2;
            }
        };
        let json = args.json;
        let mut me = None;
        let mut status = 0;
        let mut refused = false;
        let transfers = std::rc::Rc::new(std::cell::RefCell::new(Transfers::new(
            ui.clone(),
            args.download_dir.clone(),
            args.auto_accept,
            |peer| peer.map_or("someone".to_owned(), |id| format!("client {id}")),
        )));
        let input_transfers = transfers.clone();
        let files = transfers.borrow().reports();
        let file_transfers = transfers.clone();
        let handlers = crate::chat::Handlers {
            on_input: |input| match input {
                Input::Line(line) => match commands::relay_line(&line) {
                    Typed::Command(cmd) => {
                        if cmd == ClientCommand::Exit && !json {
                            ui.out("* you said exit; you keep receiving until everyone has said exit (/quit leaves now)");
                        }
                        vec![cmd]
                    }
                    Typed::Send(to, path) => {
                        transfer::started(&ui, input_transfers.borrow_mut().send(to, &path))
                    }
                    Typed::Accept(n) => transfer::command(
                        &ui,
                        input_transfers.borrow_mut().accept(n),
                        ClientCommand::File,
                    ),
                    Typed::Decline(n) => transfer::command(
                        &ui,
                        input_transfers.borrow_mut().decline(n),
                        ClientCommand::File,
                    ),
                    Typed::Cancel => input_transfers
                        .borrow_mut()
                        .cancel_all()
                        .into_iter()
                        .map(ClientCommand::File)
                        .collect(),
                    Typed::Help => {
                        ui.out(RELAY_HELP);
                        vec![]
                    }
                    Typed::Nothing | Typed::History(_) => vec![],
                    Typed::Invalid(why) => {
                        ui.err(&format!("error: {why}"));
                        vec![]
                    }
                },
                Input::Eof => vec![ClientCommand::Exit],
                Input::Interrupt => vec![ClientCommand::Leave],
            },
            on_event: |event| match event {
                SessionEvent::Core(ClientEvent::File(e)) => transfers
                    .borrow_mut()
                    .on_event(e)
                    .into_iter()
                    .map(ClientCommand::File)
                    .collect(),
                SessionEvent::Core(event) => {
                    match &event {
                        ClientEvent::Welcomed { id, relay_key, .. } => {
                            me = Some(*id);
                            ui.show(format::relay_event(&event, me, json));
                            let line = trust.describe("", *relay_key, "the relay");
                            if !json {
                                ui.out(&line);
                            }
                            return vec![];
                        }
                        ClientEvent::Disconnected {
                            code: ErrorCode::KeyChanged,
                            ..
                        } => {
                            status = 1;
                            ui.show(format::relay_event(&event, me, json));
                            ui.err(&trust.hint());
                            return vec![];
                        }
                        ClientEvent::Refused(_) => {
                            refused = true;
                            status = 1;
                        }
                        ClientEvent::Disconnected { code, .. } if *code != ErrorCode::Normal => {
                            status = 1;
                            if refused && !json {
                                return vec![];
                            }
                        }
                        _ => {}
                    }
                    ui.show(format::relay_event(&event, me, json));
                    vec![]
                }
                SessionEvent::Rejected(e) => {
                    ui.err(&format!("error: {e}"));
                    vec![]
                }
            },
            on_file: |report| {
                file_transfers
                    .borrow_mut()
                    .on_report(report)
                    .into_iter()
                    .map(ClientCommand::File)
                    .collect()
            },
        };
        crate::chat::run(session, inputs, files, Vec::new(), handlers).await;
        status
    })
}
