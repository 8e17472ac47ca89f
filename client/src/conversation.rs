//! The loop every session runs, whatever its topology: a frontend's commands go to
//! the session, the session's events come back as outputs, and what the file threads
//! report (a file hashed, a chunk written) becomes commands, until the session ends.
//!
//! Why one loop: the order of these steps is where crash safety lives. A burst of
//! events is handed to the frontend in one call and only then is the saved session
//! committed (see [`crate::saved`]), so a process killed mid-burst resumes with the
//! burst not yet marked shown, and shows it again rather than never.

use async_channel::Receiver;
use p2pchat_core::SendError;
use p2pchat_tcp::{Driver, FileCommand, Machine, Session, SessionEvent};

use crate::notice::SessionNotice;
use crate::saved::Committer;
use crate::transfer::{Report, TransferError, TransferNotice, Transfers};

/// The machine's command type of a conversation.
pub(crate) type MachineCommand<C> = <<C as Conversation>::Machine as Machine>::Command;

/// One topology's reactions: what a frontend command and a session event each turn
/// into. Outputs are queued ([`Conversation::push`]) and taken after each step.
/// What both topologies do alike (file steps, their notices, problems, warnings) is
/// provided here, once.
pub(crate) trait Conversation {
    /// The session's state machine.
    type Machine: Machine;
    /// What a frontend asks.
    type Command;
    /// What a frontend is told.
    type Output;

    /// A frontend's command.
    fn on_command(&mut self, command: Self::Command) -> Vec<MachineCommand<Self>>;
    /// A session event.
    fn on_event(
        &mut self,
        event: SessionEvent<<Self::Machine as Machine>::Event>,
    ) -> Vec<MachineCommand<Self>>;
    /// The conversation's file transfers.
    fn transfers(&mut self) -> &mut Transfers;
    /// Queues an output.
    fn push(&mut self, output: Self::Output);
    /// What to tell the frontend since the last call.
    fn take_output(&mut self) -> Vec<Self::Output>;
    /// A file step as the machine's command.
    fn file_command(command: FileCommand) -> MachineCommand<Self>;
    /// A transfer's notice as an output.
    fn transfer_output(notice: TransferNotice) -> Self::Output;
    /// A session notice as an output.
    fn notice_output(notice: SessionNotice) -> Self::Output;

    /// Queues a session notice.
    fn notice(&mut self, notice: SessionNotice) {
        let output = Self::notice_output(notice);
        self.push(output);
    }

    /// A warning to pass on (saving the session failed).
    fn warn(&mut self, message: String) {
        self.notice(SessionNotice::Warning { message });
    }

    /// A command the session refused: nothing was sent.
    fn rejected(&mut self, error: SendError) {
        self.notice(SessionNotice::Problem {
            message: error.to_string(),
        });
    }

    /// File steps as the machine's commands, with the transfers' notices queued.
    fn file_commands(&mut self, commands: Vec<FileCommand>) -> Vec<MachineCommand<Self>> {
        let notices: Vec<_> = self.transfers().take_notices().collect();
        for notice in notices {
            self.push(Self::transfer_output(notice));
        }
        commands.into_iter().map(Self::file_command).collect()
    }

    /// A file step the frontend asked for (send, accept, decline): its command, or a
    /// problem notice when it could not be taken.
    fn file_step(&mut self, step: Result<FileCommand, TransferError>) -> Vec<MachineCommand<Self>> {
        match step {
            Ok(command) => self.file_commands(vec![command]),
            Err(e) => {
                let none = self.file_commands(Vec::new());
                self.notice(SessionNotice::Problem {
                    message: e.to_string(),
                });
                none
            }
        }
    }

    /// A file thread's report.
    fn on_report(&mut self, report: Report) -> Vec<MachineCommand<Self>> {
        let commands = self.transfers().on_report(report);
        self.file_commands(commands)
    }
}

/// What woke the loop.
enum Next<C, E> {
    Command(C),
    CommandsClosed,
    Event(SessionEvent<E>),
    File(Report),
    SessionOver,
}

/// Runs one session until it ends. `replay` holds commands given before the
/// session started (while a listener waited for its peer); they go first. The
/// session's driver runs here too, on this thread: a message or a file chunk goes
/// between frontend and socket without a cross-thread wake-up.
pub(crate) async fn run<C: Conversation>(
    conversation: &mut C,
    (session, driver): (Session<C::Machine>, Driver),
    replay: Vec<C::Command>,
    commands: &Receiver<C::Command>,
    files: Receiver<Report>,
    show: &mut dyn FnMut(Vec<C::Output>),
    commit: Option<&Committer>,
) {
    let converse = converse(conversation, session, replay, commands, files, show, commit);
    smol::future::zip(driver, converse).await;
}

async fn converse<C: Conversation>(
    conversation: &mut C,
    session: Session<C::Machine>,
    replay: Vec<C::Command>,
    commands: &Receiver<C::Command>,
    files: Receiver<Report>,
    show: &mut dyn FnMut(Vec<C::Output>),
    commit: Option<&Committer>,
) {
    for command in replay {
        for to_session in conversation.on_command(command) {
            let _ = session.commands.send(to_session).await;
        }
    }
    flush(conversation, show);
    let mut commands_open = true;
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
                    if !commands_open {
                        return std::future::pending().await;
                    }
                    match commands.recv().await {
                        Ok(command) => Next::Command(command),
                        Err(_) => Next::CommandsClosed,
                    }
                },
            ),
        )
        .await;
        let to_session = match next {
            Next::Command(command) => conversation.on_command(command),
            Next::CommandsClosed => {
                commands_open = false;
                Vec::new()
            }
            Next::Event(event) => {
                // A burst of events is handed over in one call, then committed.
                let mut to_session = conversation.on_event(event);
                while let Ok(event) = session.events.try_recv() {
                    to_session.extend(conversation.on_event(event));
                }
                show(conversation.take_output());
                if let Some(commit) = commit {
                    commit.commit();
                    if let Some(warning) = commit.take_warning() {
                        conversation.warn(warning);
                    }
                }
                to_session
            }
            Next::File(report) => conversation.on_report(report),
            Next::SessionOver => {
                flush(conversation, show);
                return;
            }
        };
        flush(conversation, show);
        for command in to_session {
            let _ = session.commands.send(command).await;
        }
    }
}

/// Hands over what is queued, if anything.
fn flush<C: Conversation>(conversation: &mut C, show: &mut dyn FnMut(Vec<C::Output>)) {
    let out = conversation.take_output();
    if !out.is_empty() {
        show(out);
    }
}
