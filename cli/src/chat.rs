//! The loop shared by relay chat and direct chat: typed input goes to the session,
//! session events come back to be shown, until the session is over.

use async_channel::Receiver;
use p2pchat_tcp::{Driver, Machine, Session, SessionEvent};

use crate::ui::Input;

/// What woke the loop.
enum Next<E> {
    Input(Input),
    InputClosed,
    Event(SessionEvent<E>),
    SessionOver,
}

/// Runs until the session ends. `replay` holds input that arrived before the session
/// started (while a listener waited for its peer); it is handled first.
///
/// The session's driver runs here too, on this thread: a message or a file chunk
/// goes between the terminal and the socket without a cross-thread wake-up.
pub async fn run<M: Machine>(
    (session, driver): (Session<M>, Driver),
    inputs: Receiver<Input>,
    replay: Vec<Input>,
    on_input: impl FnMut(Input) -> Vec<M::Command>,
    on_event: impl FnMut(SessionEvent<M::Event>) -> Vec<M::Command>,
) {
    smol::future::zip(
        driver,
        converse(session, inputs, replay, on_input, on_event),
    )
    .await;
}

async fn converse<M: Machine>(
    session: Session<M>,
    inputs: Receiver<Input>,
    replay: Vec<Input>,
    mut on_input: impl FnMut(Input) -> Vec<M::Command>,
    mut on_event: impl FnMut(SessionEvent<M::Event>) -> Vec<M::Command>,
) {
    for input in replay {
        for cmd in on_input(input) {
            let _ = session.commands.send(cmd).await;
        }
    }
    let mut inputs_open = true;
    loop {
        let next = smol::future::or(
            async {
                if !inputs_open {
                    return std::future::pending().await;
                }
                match inputs.recv().await {
                    Ok(input) => Next::Input(input),
                    Err(_) => Next::InputClosed,
                }
            },
            async {
                match session.events.recv().await {
                    Ok(event) => Next::Event(event),
                    Err(_) => Next::SessionOver,
                }
            },
        )
        .await;
        match next {
            Next::Input(input) => {
                for cmd in on_input(input) {
                    let _ = session.commands.send(cmd).await;
                }
            }
            Next::InputClosed => inputs_open = false,
            Next::Event(event) => {
                for cmd in on_event(event) {
                    let _ = session.commands.send(cmd).await;
                }
            }
            Next::SessionOver => return,
        }
    }
}
