//! `p2pchat listen` and `p2pchat connect`: direct chat between two terminals, with
//! each side's history of the conversation kept on disk and shown again next time.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;

use p2pchat_core::{ErrorCode, Limits, Peer, PeerEvent, PeerSide};
use p2pchat_tcp::{DEFAULT_PORT, Driver, PeerCommand, PeerSession, SessionEvent};

use crate::args::{ConnectArgs, ListenArgs};
use crate::commands::{self, DIRECT_HELP, Typed};
use p2pchat_client::events::{HistoryLine, to_json_line};

use crate::format::{self, sanitize};
use crate::keys::{self, Trust, Wishes};
use crate::saved::{self, Committer, SessionSlot};
use crate::transfer::{self, Transfers};
use crate::ui::{Input, Ui};
use p2pchat_client::history::{Direction, History};

/// What the user asked of the history.
struct HistoryChoice {
    file: Option<PathBuf>,
    disabled: bool,
    lines: usize,
    /// Where received files go, and whether offers are accepted without asking.
    download_dir: PathBuf,
    auto_accept: bool,
}

/// `p2pchat listen`: waits for one peer, then chats; returns the exit status.
pub fn listen(args: ListenArgs) -> i32 {
    let Ok(ip) = args.bind.parse::<IpAddr>() else {
        eprintln!(
            "p2pchat: --bind {}: not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)",
            args.bind
        );
        return 2;
    };
    let history = HistoryChoice {
        file: args.history.clone(),
        disabled: args.no_history,
        lines: args.history_lines,
        download_dir: args.download_dir.clone(),
        auto_accept: args.auto_accept,
    };
    let (ui, inputs) = Ui::start();
    smol::block_on(async move {
        let listener = match p2pchat_tcp::listen(SocketAddr::new(ip, args.port)).await {
            Ok(l) => l,
            Err(e) => {
                ui.err(&format!("p2pchat: {e}"));
                return 1;
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // The conversation is saved as it goes, so that this command started again
        // on the same address after its process died resumes it (crate::saved).
        let (slot, saved) = saved::open_slot(&ui, "listen", &local, args.new_session);
        if !args.json {
            ui.out(&format!(
                "* listening on {local}; waiting for a peer (`p2pchat connect HOST:PORT`)"
            ));
        }
        let mut replay = Vec::new();
        let (stream, peer) = loop {
            let next = smol::future::or(async { Ok(listener.accept().await) }, async {
                Err(inputs.recv().await)
            })
            .await;
            match next {
                Ok(Ok(accepted)) => break accepted,
                Ok(Err(e)) => {
                    ui.err(&format!("p2pchat: accepting a connection failed: {e}"));
                    return 1;
                }
                Err(Ok(Input::Interrupt)) => return 0,
                Err(Ok(input)) => replay.push(input),
                Err(Err(_)) => std::future::pending::<()>().await,
            }
        };
        if !args.json {
            ui.out(&format!("* {peer} connected"));
        }
        // The listener stays open: if the connection is lost, the peer dials again
        // and the conversation resumes on its next connection.
        let redial: p2pchat_tcp::Redial = Box::new(move || {
            let listener = listener.clone();
            Box::pin(async move { listener.accept().await.map(|(stream, _)| stream) })
        });
        let trust = Trust::new(None, args.expect.is_some());
        let wishes = Wishes {
            insecure: args.insecure,
            password: None,
            expect: args.expect.clone(),
            // Followed, not proposed: the connecting side picks.
            cipher: p2pchat_core::RecordCipher::fastest_here(),
        };
        let security = match wishes.security(true, trust.expect()) {
            Ok(s) => s,
            Err(e) => {
                ui.err(&format!("p2pchat: {e}"));
                return 1;
            }
        };
        let clock = p2pchat_tcp::Clock::new();
        let limits = Limits {
            resume_grace: std::time::Duration::from_secs(args.resume_grace),
            ..Limits::default()
        };
        let now = clock.now();
        let restored = restore_peer(&ui, slot.as_ref(), saved, args.json, now, |bytes| {
            Peer::restore(bytes, limits.clone(), security.clone(), now)
        });
        let resumed = restored.is_some();
        let machine = match restored {
            Some(machine) => Ok(machine),
            None => Peer::new(PeerSide::Acceptor, &args.name, limits, security, now),
        };
        let (store, commit) = slot.as_ref().map(SessionSlot::store).unzip();
        match machine.map(|m| {
            let peer_name = resumed.then(|| m.remote_name().unwrap_or_default().to_owned());
            let session = p2pchat_tcp::prepare_with_redial(stream, m, clock, Some(redial), store);
            (session, peer_name)
        }) {
            Ok((session, resumed)) => {
                let peer = Remote {
                    address: peer.ip().to_string(),
                    trust,
                    resumed,
                    commit,
                };
                let status = converse(session, ui, inputs, replay, args.json, peer, history).await;
                // Over: nothing to resume.
                if let Some(slot) = &slot {
                    slot.clear();
                }
                status
            }
            Err(why) => {
                ui.err(&format!("p2pchat: --name: {why}"));
                2
            }
        }
    })
}

/// `p2pchat connect`: dials a listening peer, then chats; returns the exit status.
pub fn connect(args: ConnectArgs) -> i32 {
    let history = HistoryChoice {
        file: args.history.clone(),
        disabled: args.no_history,
        lines: args.history_lines,
        download_dir: args.download_dir.clone(),
        auto_accept: args.auto_accept,
    };
    let (ui, inputs) = Ui::start();
    smol::block_on(async move {
        let hint = if args.text {
            "a plain-text listener (e.g. `nc -l`)"
        } else {
            "`p2pchat listen`"
        };
        let stream = match p2pchat_tcp::connect(&args.host, DEFAULT_PORT, hint).await {
            Ok(stream) => stream,
            Err(e) => {
                ui.err(&format!("p2pchat: {e}"));
                return 1;
            }
        };
        let remote = stream
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| args.host.clone());
        let trust = Trust::new(
            Some(keys::host_label(&args.host, DEFAULT_PORT)),
            args.expect.is_some(),
        );
        let wishes = Wishes {
            insecure: args.insecure,
            password: None,
            expect: args.expect.clone(),
            cipher: args.cipher.resolve(),
        };
        let clock = p2pchat_tcp::Clock::new();
        let now = clock.now();
        // The conversation is saved as it goes, so that this command started again
        // after its process died resumes it (crate::saved); not in plain text.
        let target = keys::host_with_port(&args.host, DEFAULT_PORT);
        let (slot, saved) = if args.text {
            (None, None)
        } else {
            saved::open_slot(&ui, "connect", &target, args.new_session)
        };
        let mut resumed = None;
        let machine = if args.text {
            Ok(Peer::new_plain_text(Limits::default(), now))
        } else {
            wishes
                .security(false, trust.expect())
                .map_err(|e| e.to_string())
                .and_then(|security| {
                    let restored =
                        restore_peer(&ui, slot.as_ref(), saved, args.json, now, |bytes| {
                            Peer::restore(bytes, Limits::default(), security.clone(), now)
                        });
                    match restored {
                        Some(machine) => {
                            resumed = Some(machine.remote_name().unwrap_or_default().to_owned());
                            Ok(machine)
                        }
                        None => Peer::new(
                            PeerSide::Connector,
                            &args.name,
                            Limits::default(),
                            security,
                            now,
                        ),
                    }
                })
        };
        // Dials the listener again if the connection is lost, to resume.
        let redial = (!args.text)
            .then(|| p2pchat_tcp::redial_to(args.host.clone(), DEFAULT_PORT, "`p2pchat listen`"));
        let (store, commit) = slot.as_ref().map(SessionSlot::store).unzip();
        let session =
            machine.map(|m| p2pchat_tcp::prepare_with_redial(stream, m, clock, redial, store));
        match session {
            Ok(session) => {
                let peer = Remote {
                    address: remote,
                    trust,
                    resumed,
                    commit,
                };
                let status =
                    converse(session, ui, inputs, Vec::new(), args.json, peer, history).await;
                // Over: nothing to resume.
                if let Some(slot) = &slot {
                    slot.clear();
                }
                status
            }
            Err(why) => {
                ui.err(&format!("p2pchat: --name: {why}"));
                2
            }
        }
    })
}

/// The conversation's history log, once the peer is known.
struct Log {
    choice: HistoryChoice,
    history: Option<History>,
    we_exited: bool,
}

impl Log {
    /// Opens the log for `peer` and shows its last lines.
    fn start(&mut self, peer: &str, ui: &Ui, json: bool) {
        if self.choice.disabled {
            return;
        }
        let path = match self
            .choice
            .file
            .clone()
            .or_else(|| History::default_path(peer))
        {
            Some(p) => p,
            None => {
                ui.err("warning: no history: neither --history nor HOME is set");
                return;
            }
        };
        match History::open(&path) {
            Ok(h) => {
                show_history(ui, &path, self.choice.lines, json);
                self.history = Some(h);
            }
            Err(e) => ui.err(&format!(
                "warning: no history: cannot open {}: {e}",
                path.display()
            )),
        }
    }

    fn append(&mut self, ui: &Ui, direction: Direction, text: &str) {
        if let Some(h) = self.history.as_mut()
            && let Err(e) = h.append(direction, text)
        {
            ui.err(&format!(
                "warning: history not saved ({}): {e}",
                h.path().display()
            ));
            self.history = None;
        }
    }
}

fn show_history(ui: &Ui, path: &std::path::Path, lines: usize, json: bool) {
    let loaded = match History::load_last(path, lines) {
        Ok(l) => l,
        Err(e) => {
            ui.err(&format!(
                "warning: cannot read history {}: {e}",
                path.display()
            ));
            return;
        }
    };
    if loaded.records.is_empty() && loaded.skipped == 0 {
        return;
    }
    if !json {
        ui.out(&format!(
            "* history ({} earlier lines; /history shows more):",
            loaded.records.len()
        ));
    }
    for r in &loaded.records {
        let who = match r.direction {
            Direction::Sent => "you",
            Direction::Received => "peer",
        };
        if json {
            ui.out(&to_json_line(&HistoryLine {
                at: r.at.clone(),
                from: who.to_owned(),
                text: r.text.clone(),
            }));
        } else {
            let at = r.at.replace('T', " ").trim_end_matches('Z').to_owned();
            ui.out(&format!("* [{at}] {who}: {}", sanitize(&r.text)));
        }
    }
    if loaded.skipped > 0 {
        ui.err(&format!(
            "warning: history: {} damaged or incomplete record(s) skipped in {}",
            loaded.skipped,
            path.display()
        ));
    }
    if !json {
        ui.out("* end of history");
    }
}

/// Who the conversation is with, as far as known before it starts.
struct Remote {
    /// Its IP address (the history file's name when it gives no name).
    address: String,
    /// Its key, as checked and remembered.
    trust: Trust,
    /// Its name, when the conversation is one resumed from a saved session (no
    /// `Connected` then: the history starts when it is `Resumed`).
    resumed: Option<String>,
    /// The saved session's commit, made right before events are shown.
    commit: Option<Committer>,
}

/// The conversation `saved` restored (see [`saved::restored`]) and turned towards
/// its next connection (already open), with a line that says so.
fn restore_peer(
    ui: &Ui,
    slot: Option<&SessionSlot>,
    saved: Option<Vec<u8>>,
    json: bool,
    now: p2pchat_core::Timestamp,
    restore: impl FnOnce(&[u8]) -> Result<Peer, p2pchat_core::RestoreError>,
) -> Option<Peer> {
    let slot = slot?;
    let mut machine = saved::restored(slot, ui, saved, restore)?;
    machine.handle_reconnected(now);
    if !json {
        ui.out(&format!(
            "* resuming the conversation this command left when its process ended (saved in {})",
            slot.path().display()
        ));
    }
    Some(machine)
}

async fn converse(
    session: (PeerSession, Driver),
    ui: Ui,
    inputs: async_channel::Receiver<Input>,
    replay: Vec<Input>,
    json: bool,
    remote: Remote,
    history: HistoryChoice,
) -> i32 {
    let Remote {
        address: remote,
        mut trust,
        resumed,
        commit,
    } = remote;
    let mut status = 0;
    let transfers = Rc::new(RefCell::new(Transfers::new(
        ui.clone(),
        history.download_dir.clone(),
        history.auto_accept,
        |_| "the peer".to_owned(),
    )));
    let input_transfers = transfers.clone();
    let log = Rc::new(RefCell::new(Log {
        choice: history,
        history: None,
        we_exited: false,
    }));
    let input_log = log.clone();
    let files = transfers.borrow().reports();
    let file_transfers = transfers.clone();
    let shown = commit.clone();
    let handlers = crate::chat::Handlers {
        on_input: |input| match input {
            Input::Line(line) => match commands::direct_line(&line) {
                Typed::Command(cmd) => {
                    let mut log = input_log.borrow_mut();
                    match &cmd {
                        PeerCommand::Exit => {
                            if !json && !log.we_exited {
                                ui.out("* you said exit; you keep receiving until the peer says exit too (/quit leaves now)");
                            }
                            log.we_exited = true;
                        }
                        PeerCommand::Send(text) if !log.we_exited => {
                            log.append(&ui, Direction::Sent, text)
                        }
                        _ => {}
                    }
                    vec![cmd]
                }
                Typed::History(n) => {
                    let log = input_log.borrow();
                    match log.history.as_ref() {
                        Some(h) => show_history(&ui, h.path(), n, json),
                        None => ui.err("error: no history is being kept for this conversation"),
                    }
                    vec![]
                }
                Typed::Send(_, path) => transfer::command(
                    &ui,
                    input_transfers.borrow_mut().send(None, &path),
                    PeerCommand::File,
                ),
                Typed::Accept(n) => transfer::command(
                    &ui,
                    input_transfers.borrow_mut().accept(n),
                    PeerCommand::File,
                ),
                Typed::Decline(n) => transfer::command(
                    &ui,
                    input_transfers.borrow_mut().decline(n),
                    PeerCommand::File,
                ),
                Typed::Cancel => input_transfers
                    .borrow_mut()
                    .cancel_all()
                    .into_iter()
                    .map(PeerCommand::File)
                    .collect(),
                Typed::Help => {
                    ui.out(DIRECT_HELP);
                    vec![]
                }
                Typed::Nothing => vec![],
                Typed::Invalid(why) => {
                    ui.err(&format!("error: {why}"));
                    vec![]
                }
            },
            Input::Eof => {
                input_log.borrow_mut().we_exited = true;
                vec![PeerCommand::EndOfInput]
            }
            Input::Interrupt => vec![PeerCommand::Leave],
        },
        on_event: |event| match event {
            SessionEvent::Core(event) => {
                match &event {
                    PeerEvent::Disconnected { code, .. } if *code != ErrorCode::Normal => {
                        status = 1;
                        if *code == ErrorCode::KeyChanged {
                            ui.show(format::peer_event(&event, json));
                            ui.err(&trust.hint());
                            return vec![];
                        }
                    }
                    PeerEvent::Connected {
                        name,
                        plain_text,
                        key,
                        cipher,
                        ..
                    } => {
                        ui.show(format::peer_event(&event, json));
                        if !plain_text {
                            let line = trust.describe(name, *key, *cipher, "the peer");
                            if !json {
                                ui.out(&line);
                            }
                        }
                        // The log is per peer: by its name, or by its address.
                        let peer = if name.is_empty() {
                            remote.clone()
                        } else {
                            name.clone()
                        };
                        log.borrow_mut().start(&peer, &ui, json);
                        return vec![];
                    }
                    // Shown by the process that died before this one resumed.
                    PeerEvent::Message { seq, .. }
                        if shown.as_ref().is_some_and(|s| !s.fresh(0, *seq)) =>
                    {
                        return vec![];
                    }
                    PeerEvent::Message { text, .. } => {
                        log.borrow_mut().append(&ui, Direction::Received, text)
                    }
                    PeerEvent::Resumed if log.borrow().history.is_none() => {
                        // A conversation resumed from its saved session: its history
                        // starts here (by the peer's name, or its address).
                        if let Some(name) = &resumed {
                            let peer = if name.is_empty() { &remote } else { name };
                            log.borrow_mut().start(peer, &ui, json);
                        }
                    }
                    PeerEvent::File(e) => {
                        return transfers
                            .borrow_mut()
                            .on_event(e.clone())
                            .into_iter()
                            .map(PeerCommand::File)
                            .collect();
                    }
                    _ => {}
                }
                ui.show(format::peer_event(&event, json));
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
                .map(PeerCommand::File)
                .collect()
        },
        ui: ui.clone(),
        commit,
    };
    crate::chat::run(session, inputs, files, replay, handlers).await;
    status
}
