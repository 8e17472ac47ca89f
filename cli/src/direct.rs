//! `p2pchat listen` and `p2pchat connect`: direct chat between two terminals.

use std::net::{IpAddr, SocketAddr};

use p2pchat_core::{ErrorCode, Limits, PeerEvent, PeerSide};
use p2pchat_tcp::{DEFAULT_PORT, PeerCommand, PeerSession, SessionEvent};

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
        drop(listener);
        if !args.json {
            ui.out(&format!("* {peer} connected"));
        }
        match p2pchat_tcp::start_peer(stream, PeerSide::Acceptor, &args.name, Limits::default()) {
            Ok(session) => converse(session, ui, inputs, replay, args.json).await,
            Err(why) => {
                ui.err(&format!("p2pchat: --name: {why}"));
                2
            }
        }
    })
}

/// `p2pchat connect`: dials a listening peer, then chats; returns the exit status.
pub fn connect(args: ConnectArgs) -> i32 {
    let (ui, inputs) = Ui::start();
    smol::block_on(async move {
        let stream = match p2pchat_tcp::connect(&args.host, DEFAULT_PORT, "`p2pchat listen`").await
        {
            Ok(stream) => stream,
            Err(e) => {
                ui.err(&format!("p2pchat: {e}"));
                return 1;
            }
        };
        match p2pchat_tcp::start_peer(stream, PeerSide::Connector, &args.name, Limits::default()) {
            Ok(session) => converse(session, ui, inputs, Vec::new(), args.json).await,
            Err(why) => {
                ui.err(&format!("p2pchat: --name: {why}"));
                2
            }
        }
    })
}

async fn converse(
    session: PeerSession,
    ui: Ui,
    inputs: async_channel::Receiver<Input>,
    replay: Vec<Input>,
    json: bool,
) -> i32 {
    let mut status = 0;
    crate::chat::run(
        session,
        inputs,
        replay,
        |input| match input {
            Input::Line(line) => match commands::direct_line(&line) {
                Typed::Command(cmd) => {
                    if cmd == PeerCommand::Exit && !json {
                        ui.out("* you said exit; you keep receiving until the peer says exit too (/quit leaves now)");
                    }
                    Some(cmd)
                }
                Typed::Help => {
                    ui.out(DIRECT_HELP);
                    None
                }
                Typed::Nothing => None,
                Typed::Invalid(why) => {
                    ui.err(&format!("error: {why}"));
                    None
                }
            },
            Input::Eof => Some(PeerCommand::Exit),
            Input::Interrupt => Some(PeerCommand::Leave),
        },
        |event| match event {
            SessionEvent::Core(event) => {
                if let PeerEvent::Disconnected { code, .. } = &event
                    && *code != ErrorCode::Normal
                {
                    status = 1;
                }
                match format::peer_event(&event, json) {
                    Some(Line::Out(line)) => ui.out(&line),
                    Some(Line::Err(line)) => ui.err(&line),
                    None => {}
                }
            }
            SessionEvent::Rejected(e) => ui.err(&format!("error: {e}")),
        },
    )
    .await;
    status
}
