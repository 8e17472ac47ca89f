//! The loop shared by relay chat and direct chat: typed input goes to the session,
//! session events come back to be shown, and what the file threads report (a file
//! hashed, a chunk written) becomes commands, until the session is over.

use async_channel::Receiver;
use p2pchat_tcp::{Driver, Machine, Session, SessionEvent};

use crate::transfer::Report;
use crate::ui::Input;

/// What woke the loop.
enum Next<E> {
    Input(Input),
    InputClosed,
    Event(SessionEvent<E>),
    File(Report),
    SessionOver,
}

/// Where each kind of input goes: the chat loop's callbacks.
pub struct Handlers<I, E, F> {
    /// A typed line, end of input or Ctrl-C.
    pub on_input: I,
    /// An event of the session.
    pub on_event: E,
    /// A report of a file thread.
    pub on_file: F,
    /// Where the handlers show things (bursts of events are shown in one write).
    pub ui: crate::ui::Ui,
    /// The saved session's commit, made right after a burst is shown (see
    /// `p2pchat_tcp::SessionStore` and `crate::saved`).
    pub commit: Option<crate::saved::Committer>,
}

/// Runs until the session ends. `replay` holds input that arrived before the session
/// started (while a listener waited for its peer); it is handled first.
///
/// The session's driver runs here too, on this thread: a message or a file chunk
/// goes between the terminal and the socket without a cross-thread wake-up.
pub async fn run<M, I, E, F>(
    (session, driver): (Session<M>, Driver),
    inputs: Receiver<Input>,
    files: Receiver<Report>,
    replay: Vec<Input>,
    handlers: Handlers<I, E, F>,
) where
    M: Machine,
    I: FnMut(Input) -> Vec<M::Command>,
    E: FnMut(SessionEvent<M::Event>) -> Vec<M::Command>,
    F: FnMut(Report) -> Vec<M::Command>,
{
    smol::future::zip(driver, converse(session, inputs, files, replay, handlers)).await;
}

async fn converse<M, I, E, F>(
    session: Session<M>,
    inputs: Receiver<Input>,
    files: Receiver<Report>,
    replay: Vec<Input>,
    mut handlers: Handlers<I, E, F>,
) where
    M: Machine,
    I: FnMut(Input) -> Vec<M::Command>,
    E: FnMut(SessionEvent<M::Event>) -> Vec<M::Command>,
    F: FnMut(Report) -> Vec<M::Command>,
{
    for input in replay {
        for cmd in (handlers.on_input)(input) {
            let _ = session.commands.send(cmd).await;
        }
    }
    let mut inputs_open = true;
    loop {
        let next = smol::future::or(
            async {
                match session.events.recv().await {
                    Ok(event) => Next::Event(event),
                    Err(_) => Next::SessionOver,
                }
            },
            smol::future::or(
                async {
                    match files.recv().await {
                        Ok(report) => Next::File(report),
                        Err(_) => std::future::pending().await,
                    }
                },
                async {
                    if !inputs_open {
                        return std::future::pending().await;
                    }
                    match inputs.recv().await {
                        Ok(input) => Next::Input(input),
                        Err(_) => Next::InputClosed,
                    }
                },
            ),
        )
        .await;
        let commands = match next {
            Next::Input(input) => (handlers.on_input)(input),
            Next::InputClosed => {
                inputs_open = false;
                Vec::new()
            }
            Next::Event(event) => {
                // A burst of events is shown in one write (see Ui::hold).
                handlers.ui.hold();
                let mut commands = (handlers.on_event)(event);
                while let Ok(event) = session.events.try_recv() {
                    commands.extend((handlers.on_event)(event));
                }
                handlers.ui.release();
                if let Some(commit) = &handlers.commit {
                    commit.commit();
                    if let Some(warning) = commit.take_warning() {
                        handlers.ui.err(&format!("warning: {warning}"));
                    }
                }
                commands
            }
            Next::File(report) => (handlers.on_file)(report),
            Next::SessionOver => return,
        };
        for cmd in commands {
            let _ = session.commands.send(cmd).await;
        }
    }
}
