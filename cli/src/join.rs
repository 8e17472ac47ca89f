//! `p2pchat join`: a relay client in the terminal.
//!
//! When the connection to the relay is lost (a network blip), the client dials again
//! by itself and resumes its session: same ID, nothing lost, nothing shown twice;
//! what is typed meanwhile goes out once it is back. When the session cannot be
//! resumed (the relay restarted, or held it longer than its grace period), the client
//! says which of its messages were not confirmed delivered, joins again as a new
//! client with a new ID, with growing pauses, and says so. Lines typed while it joins
//! anew are not sent (the IDs they name may mean someone else once it is back).

use std::time::{Duration, Instant};

use async_channel::Receiver;
use p2pchat_core::{ClientEvent, ClientId, ErrorCode, Limits, RelayClient};
use p2pchat_tcp::{ClientCommand, DEFAULT_PORT, SessionEvent};

use crate::args::JoinArgs;
use crate::commands::{self, RELAY_HELP, Typed};
use crate::format;
use crate::keys::{self, Trust, Wishes};
use crate::saved::{self, SessionSlot};
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
        let mut trust = Trust::new(
            Some(keys::host_label(&args.host, DEFAULT_PORT)),
            args.expect.is_some(),
        );
        let wishes = Wishes {
            insecure: args.insecure,
            password: Wishes::password_from(args.password.clone()),
            expect: args.expect.clone(),
            cipher: args.cipher.resolve(),
        };
        let transfers = std::rc::Rc::new(std::cell::RefCell::new(Transfers::new(
            ui.clone(),
            args.download_dir.clone(),
            args.auto_accept,
            |peer| peer.map_or("someone".to_owned(), |id| format!("client {id}")),
        )));
        // The session is saved as it goes, so that this command started again after
        // its process died resumes it (crate::saved).
        let target = keys::host_with_port(&args.host, DEFAULT_PORT);
        let (slot, mut saved) = saved::open_slot(&ui, "join", &target, args.new_session);
        let mut previous: Option<ClientId> = None;
        let mut first = true;
        loop {
            let stream = match connect(&args, &ui, &inputs, first).await {
                Ok(stream) => stream,
                Err(status) => return status,
            };
            let security = match wishes.security(false, trust.expect()) {
                Ok(s) => s,
                Err(e) => {
                    ui.err(&format!("p2pchat: {e}"));
                    return 1;
                }
            };
            let start = Start {
                security,
                previous,
                saved: saved.take(),
                slot: slot.as_ref(),
            };
            let outcome = session(&args, &ui, &inputs, &mut trust, &transfers, stream, start).await;
            // Over for good, or a new session follows: nothing to resume either way.
            if let Some(slot) = &slot {
                slot.clear();
            }
            match outcome {
                Outcome::Over(status) => return status,
                Outcome::Lost(id) => {
                    previous = id.or(previous);
                    first = false;
                }
            }
        }
    })
}

/// How one session with the relay ended.
enum Outcome {
    /// For good, with this exit status.
    Over(i32),
    /// The connection was lost (we were this client): reconnect.
    Lost(Option<ClientId>),
}

/// Whether a session that ended this way should be followed by a new one: the relay
/// no longer held it (it restarted, or our absence outlasted its grace period), or
/// the connection broke before there was a session to resume; but not when we were
/// refused or left, the relay shut down in order, or found something wrong.
fn worth_reconnecting(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ResumeFailed | ErrorCode::ConnectionLost | ErrorCode::PeerTimeout
    )
}

/// Pauses between reconnection attempts: growing, then steady.
const BACKOFF: [u64; 7] = [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000];

/// How long to keep trying before giving up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// Connects to the relay. The first time, a failure is final; when reconnecting it
/// tries again with growing pauses (meanwhile, typed lines are answered: not sent),
/// until it gives up or the user leaves. `Err` is the exit status.
async fn connect(
    args: &JoinArgs,
    ui: &Ui,
    inputs: &Receiver<Input>,
    first: bool,
) -> Result<smol::net::TcpStream, i32> {
    let target = "`p2pchat server`";
    if first {
        return p2pchat_tcp::connect(&args.host, DEFAULT_PORT, target)
            .await
            .map_err(|e| {
                ui.err(&format!("p2pchat: {e}"));
                1
            });
    }
    let started = Instant::now();
    for attempt in 0.. {
        let pause = BACKOFF[attempt.min(BACKOFF.len() - 1)];
        if !args.json {
            ui.out(&format!(
                "* reconnecting to the relay in {:.1} s (attempt {})",
                pause as f64 / 1000.0,
                attempt + 1
            ));
        }
        if wait_away(ui, inputs, Duration::from_millis(pause)).await {
            return Err(0);
        }
        match p2pchat_tcp::connect(&args.host, DEFAULT_PORT, target).await {
            Ok(stream) => return Ok(stream),
            Err(e) if started.elapsed() >= GIVE_UP_AFTER => {
                ui.err(&format!(
                    "p2pchat: gave up reconnecting after {} s: {e}",
                    started.elapsed().as_secs()
                ));
                return Err(1);
            }
            Err(_) => {}
        }
    }
    Err(1)
}

/// Waits `pause` while disconnected, answering what is typed meanwhile: lines are not
/// sent; `exit`, `/quit`, end of input or Ctrl-C stop reconnecting (then `true`).
async fn wait_away(ui: &Ui, inputs: &Receiver<Input>, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    loop {
        let typed = smol::future::or(async { inputs.recv().await.ok() }, async {
            smol::Timer::at(until).await;
            None
        })
        .await;
        match typed {
            None => return false,
            Some(Input::Eof | Input::Interrupt) => return true,
            Some(Input::Line(line)) => match commands::relay_line(&line) {
                Typed::Command(ClientCommand::Exit | ClientCommand::Leave) => return true,
                Typed::Nothing => {}
                _ => ui.err(&format!(
                    "error: not connected to the relay (reconnecting); not sent: {line}"
                )),
            },
        }
    }
}

/// How one session with the relay starts.
struct Start<'a> {
    security: p2pchat_core::Security,
    /// Our ID in the previous session, if this one follows one that ended.
    previous: Option<ClientId>,
    /// A session saved by a process that died, to resume.
    saved: Option<Vec<u8>>,
    /// Where the session is saved as it goes.
    slot: Option<&'a SessionSlot>,
}

/// The client for a new session: the saved one, restored and dialling back (with a
/// note of it), or else a new one. `Err` is the exit status.
fn machine(
    args: &JoinArgs,
    ui: &Ui,
    start: &mut Start<'_>,
    now: p2pchat_core::Timestamp,
) -> Result<RelayClient, i32> {
    if let Some(slot) = start.slot {
        let restored = saved::restored(slot, ui, start.saved.take(), |bytes| {
            RelayClient::restore(bytes, Limits::default(), start.security.clone(), now)
        });
        if let Some(mut machine) = restored {
            machine.handle_reconnected(now);
            if !args.json
                && let Some(id) = machine.id()
            {
                ui.out(&format!(
                    "* resuming the session this command left when its process ended, as client {id} (saved in {})",
                    slot.path().display()
                ));
            }
            return Ok(machine);
        }
    }
    RelayClient::new(&args.name, Limits::default(), start.security.clone(), now).map_err(|why| {
        ui.err(&format!("p2pchat: --name: {why}"));
        2
    })
}

/// One session with the relay, from its handshake to its end.
async fn session(
    args: &JoinArgs,
    ui: &Ui,
    inputs: &Receiver<Input>,
    trust: &mut Trust,
    transfers: &std::rc::Rc<std::cell::RefCell<Transfers>>,
    stream: smol::net::TcpStream,
    mut start: Start<'_>,
) -> Outcome {
    let clock = p2pchat_tcp::Clock::new();
    // Dials the relay again when the connection is lost, to resume the session.
    let redial = (!args.no_reconnect)
        .then(|| p2pchat_tcp::redial_to(args.host.clone(), DEFAULT_PORT, "`p2pchat server`"));
    let machine = match machine(args, ui, &mut start, clock.now()) {
        Ok(machine) => machine,
        Err(status) => return Outcome::Over(status),
    };
    let previous = start.previous;
    let mut me = machine.id();
    let (store, commit) = start.slot.map(SessionSlot::store).unzip();
    let session = p2pchat_tcp::prepare_with_redial(stream, machine, clock, redial, store);
    let json = args.json;
    let mut status = 0;
    let mut refused = false;
    let mut lost = false;
    let input_transfers = transfers.clone();
    let files = transfers.borrow().reports();
    let file_transfers = transfers.clone();
    let event_transfers = transfers.clone();
    let shown = commit.clone();
    let handlers = crate::chat::Handlers {
        on_input: |input| match input {
            Input::Line(line) => match commands::relay_line(&line) {
                Typed::Command(cmd) => {
                    if cmd == ClientCommand::Exit && !json {
                        ui.out("* you said exit; you keep receiving until everyone has said exit (/quit leaves now)");
                    }
                    vec![cmd]
                }
                Typed::Send(to, path) => transfer::command(
                    ui,
                    input_transfers.borrow_mut().send(to, &path),
                    ClientCommand::File,
                ),
                Typed::Accept(n) => transfer::command(
                    ui,
                    input_transfers.borrow_mut().accept(n),
                    ClientCommand::File,
                ),
                Typed::Decline(n) => transfer::command(
                    ui,
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
            SessionEvent::Core(ClientEvent::File(e)) => event_transfers
                .borrow_mut()
                .on_event(e)
                .into_iter()
                .map(ClientCommand::File)
                .collect(),
            SessionEvent::Core(event) => {
                match &event {
                    // Shown by the process that died before this one resumed.
                    ClientEvent::Message { from, seq, .. }
                        if shown.as_ref().is_some_and(|s| !s.fresh(from.0, *seq)) =>
                    {
                        return vec![];
                    }
                    ClientEvent::Welcomed {
                        id,
                        relay_key,
                        cipher,
                        ..
                    } => {
                        me = Some(*id);
                        ui.show(format::relay_event(&event, me, json));
                        let line = trust.describe("", *relay_key, *cipher, "the relay");
                        if !json {
                            ui.out(&line);
                            if let Some(was) = previous {
                                ui.out(&format!(
                                    "* reconnected: you are a new client, {id} (you were {was}); IDs may have changed, /who lists who is online"
                                ));
                            }
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
                    ClientEvent::Disconnected { code, reason }
                        if worth_reconnecting(*code) && !refused && !args.no_reconnect =>
                    {
                        lost = true;
                        if !json {
                            ui.out(&format!("* {reason} ({code})"));
                            return vec![];
                        }
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
        ui: ui.clone(),
        commit,
    };
    crate::chat::run(session, inputs.clone(), files, Vec::new(), handlers).await;
    if lost {
        Outcome::Lost(me)
    } else {
        Outcome::Over(status)
    }
}
