//! A relay session for any frontend: [`run`] joins a relay and carries a frontend's
//! [`RelayCommand`]s to it and its [`RelayOutput`]s back, until the conversation is over.
//!
//! Everything a session on a real machine needs above the protocol happens here:
//! identity and trust on first use, files to and from a download folder, the session
//! saved as it goes (so that a frontend started again after its process died resumes
//! it), and getting back to the relay. When the connection is lost (a network blip)
//! the session dials again by itself and resumes: same ID, nothing lost, nothing
//! shown twice; commands given meanwhile go out once it is back. When the relay no
//! longer holds the session (it restarted, or held it longer than its grace period),
//! the session says which messages were not confirmed delivered, joins again as a
//! new client with a new ID, with growing pauses, and says so; commands given while
//! it joins anew are not sent (the IDs they name may mean someone else once back).
//!
//! What a frontend must do: send commands, show outputs, and stop when [`run`]
//! returns. What it may skip: any output it has no use for (a bot reads only
//! messages; [`RelayEvent::Delivered`] is for frontends that tick sent messages).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use p2pchat_core::{ClientEvent, ClientId, ErrorCode, Limits, RecordCipher, RelayClient};
use p2pchat_tcp::{ClientCommand, DEFAULT_PORT, FileCommand, SessionEvent};
use serde::{Deserialize, Serialize};

use crate::conversation::{self, Conversation};
use crate::error::SessionError;
use crate::events::RelayEvent;
use crate::keys::{self, Trust, Wishes};
use crate::notice::SessionNotice;
use crate::saved::{Committer, Saving, SessionSlot};
use crate::transfer::{TransferNotice, Transfers};

/// How to join a relay. [`RelayOptions::new`] gives the defaults a user expects:
/// encrypted, reconnecting, files saved to the current folder once accepted.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// `HOST` or `HOST:PORT` (65432 when no port is given).
    pub host: String,
    /// The nickname others see (may be empty).
    pub name: String,
    /// What the user asked of the session's security.
    pub wishes: Wishes,
    /// Where accepted files are saved.
    pub download_dir: PathBuf,
    /// Accept every file offered without asking.
    pub auto_accept: bool,
    /// Get back to the relay when the connection is lost (else the session ends).
    pub reconnect: bool,
    /// Whether the session is saved as it goes, to be resumed after a crash.
    pub saving: Saving,
    /// The data folder: identity, known keys, saved sessions ([`crate::data_dir`]
    /// by default; a frontend's own profile or a test's temporary folder otherwise).
    pub data_dir: Option<PathBuf>,
}

impl RelayOptions {
    /// Options for joining `host` as `name`, with the defaults; sessions not saved.
    pub fn new(host: impl Into<String>, name: impl Into<String>) -> Self {
        RelayOptions {
            host: host.into(),
            name: name.into(),
            wishes: Wishes {
                insecure: false,
                password: None,
                expect: None,
                cipher: RecordCipher::fastest_here(),
            },
            download_dir: PathBuf::from("."),
            auto_accept: false,
            reconnect: true,
            saving: Saving::Off,
            data_dir: crate::data_dir(),
        }
    }
}

/// What a frontend asks of a relay session. As JSON (the web frontend's WebSocket):
/// `{"cmd":"send","to":1,"text":"hi"}`, `{"cmd":"broadcast","text":"hi all"}`,
/// `{"cmd":"accept","number":null}`, `{"cmd":"who"}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum RelayCommand {
    /// Send `text` to client `to`.
    Send {
        /// The addressee's ID.
        to: u32,
        /// The text.
        text: String,
    },
    /// Send `text` to everyone else.
    Broadcast {
        /// The text.
        text: String,
    },
    /// Offer the file at `path` to client `to`.
    Offer {
        /// The addressee's ID.
        to: u32,
        /// The file.
        path: PathBuf,
    },
    /// Accept a file offer: the oldest, or the one numbered so.
    Accept {
        /// The offer's number ([`TransferNotice::FileOffered`]).
        number: Option<usize>,
    },
    /// Decline a file offer: the oldest, or the one numbered so.
    Decline {
        /// The offer's number.
        number: Option<usize>,
    },
    /// Abandon every transfer under way.
    Cancel,
    /// Ask who is online (answered by a [`RelayEvent::Roster`]).
    Who,
    /// Stop sending; keep receiving until everyone has said exit.
    Exit,
    /// Leave now.
    Quit,
}

/// What a relay session tells its frontend: the relay's events, the transfers'
/// notices, and the session's own notices. Each serialises to one JSON object whose
/// `event` field names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RelayOutput {
    /// An event of the relay session.
    Event(RelayEvent),
    /// Something about a file transfer.
    Transfer(TransferNotice),
    /// Something about the session itself.
    Notice(SessionNotice),
}

/// Joins the relay and runs the session until the conversation is over, the
/// frontend quits, or it cannot go on. `show` is handed each burst of outputs and
/// must show them before it returns: the saved session is committed right after,
/// so a burst shown by a process that dies is not shown again by the next, and a
/// burst it had not shown is (see [`crate::saved`]). A frontend that only queues
/// them (a channel to a web page) may lose the last burst in a crash, nothing more.
pub async fn run(
    options: RelayOptions,
    commands: Receiver<RelayCommand>,
    mut show: impl FnMut(Vec<RelayOutput>),
) -> Result<(), SessionError> {
    let show: &mut dyn FnMut(Vec<RelayOutput>) = &mut show;
    let dir = options.data_dir.as_deref();
    let mut trust = Trust::new_in(
        dir,
        Some(keys::host_label(&options.host, DEFAULT_PORT)),
        options.wishes.expect.is_some(),
    );
    let mut transfers = Transfers::new(options.download_dir.clone(), options.auto_accept, |peer| {
        peer.map_or("someone".to_owned(), |id| format!("client {id}"))
    });
    let target = keys::host_with_port(&options.host, DEFAULT_PORT);
    let (slot, mut saved, warnings) = crate::saved::open(options.saving, dir, "join", &target);
    show(warnings.into_iter().map(RelayOutput::Notice).collect());
    let mut previous: Option<ClientId> = None;
    let mut first = true;
    loop {
        let Some(stream) = dial(&options, &commands, first, show).await? else {
            return Ok(());
        };
        let security = options.wishes.security_in(dir, false, trust.expect())?;
        let clock = p2pchat_tcp::Clock::new();
        let machine = machine(
            &options,
            slot.as_ref(),
            saved.take(),
            security,
            &clock,
            show,
        )?;
        let mut conversation = RelayConversation {
            me: machine.id(),
            previous,
            trust: &mut trust,
            transfers: &mut transfers,
            shown: None,
            out: Vec::new(),
            failed: None,
            refused: false,
            lost: false,
            reconnect: options.reconnect,
        };
        session(
            &options,
            &mut conversation,
            machine,
            clock,
            stream,
            slot.as_ref(),
            &commands,
            show,
        )
        .await;
        // Over for good, or a new session follows: nothing to resume either way.
        if let Some(slot) = &slot {
            slot.clear();
        }
        if !conversation.lost {
            return match conversation.failed {
                Some(why) => Err(SessionError::Ended(why)),
                None => Ok(()),
            };
        }
        previous = conversation.me.or(previous);
        first = false;
    }
}

/// Whether a session that ended this way should be followed by a new one: the relay
/// no longer held it (it restarted, or our absence outlasted its grace period), or
/// the connection broke before there was a session to resume; but not when we were
/// refused or left, the relay shut down in order, or found something wrong.
fn worth_rejoining(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ResumeFailed | ErrorCode::ConnectionLost | ErrorCode::PeerTimeout
    )
}

/// Pauses between attempts to join anew: growing, then steady.
const BACKOFF: [u64; 7] = [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000];

/// How long to keep trying before giving up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// Connects to the relay. The first time, a failure is final; when joining anew it
/// tries again with growing pauses (meanwhile, commands are answered: not sent),
/// until it gives up or the frontend quits (then `None`).
async fn dial(
    options: &RelayOptions,
    commands: &Receiver<RelayCommand>,
    first: bool,
    show: &mut dyn FnMut(Vec<RelayOutput>),
) -> Result<Option<smol::net::TcpStream>, SessionError> {
    let target = "`p2pchat server`";
    if first {
        return Ok(Some(
            p2pchat_tcp::connect(&options.host, DEFAULT_PORT, target).await?,
        ));
    }
    let started = Instant::now();
    for attempt in 0.. {
        let pause = BACKOFF[attempt.min(BACKOFF.len() - 1)];
        show(vec![RelayOutput::Notice(SessionNotice::Rejoining {
            attempt: attempt as u32 + 1,
            wait_ms: pause,
        })]);
        if wait_away(commands, Duration::from_millis(pause), show).await {
            return Ok(None);
        }
        match p2pchat_tcp::connect(&options.host, DEFAULT_PORT, target).await {
            Ok(stream) => return Ok(Some(stream)),
            Err(last) if started.elapsed() >= GIVE_UP_AFTER => {
                return Err(SessionError::GaveUp {
                    secs: started.elapsed().as_secs(),
                    last,
                });
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

/// Waits `pause` while disconnected, answering commands given meanwhile: not sent;
/// exit, quit or the frontend going away stop reconnecting (then `true`).
async fn wait_away(
    commands: &Receiver<RelayCommand>,
    pause: Duration,
    show: &mut dyn FnMut(Vec<RelayOutput>),
) -> bool {
    let until = Instant::now() + pause;
    loop {
        let command = smol::future::or(async { Some(commands.recv().await) }, async {
            smol::Timer::at(until).await;
            None
        })
        .await;
        match command {
            None => return false,
            Some(Err(_) | Ok(RelayCommand::Exit | RelayCommand::Quit)) => return true,
            Some(Ok(command)) => show(vec![RelayOutput::Notice(SessionNotice::Problem {
                message: format!(
                    "not connected to the relay (joining again); not sent: {}",
                    describe(&command)
                ),
            })]),
        }
    }
}

/// A command in a few words, for saying it was not carried out.
fn describe(command: &RelayCommand) -> String {
    match command {
        RelayCommand::Send { to, text } => format!("{to} {text}"),
        RelayCommand::Broadcast { text } => format!("/all {text}"),
        RelayCommand::Offer { to, path } => format!("/send {to} {}", path.display()),
        RelayCommand::Accept { .. } => "/accept".into(),
        RelayCommand::Decline { .. } => "/decline".into(),
        RelayCommand::Cancel => "/cancel".into(),
        RelayCommand::Who => "/who".into(),
        RelayCommand::Exit => "exit".into(),
        RelayCommand::Quit => "/quit".into(),
    }
}

/// The client for a new session: the saved one, restored and dialling back (with a
/// notice of it), or else a new one.
fn machine(
    options: &RelayOptions,
    slot: Option<&SessionSlot>,
    saved: Option<Vec<u8>>,
    security: p2pchat_core::Security,
    clock: &p2pchat_tcp::Clock,
    show: &mut dyn FnMut(Vec<RelayOutput>),
) -> Result<RelayClient, SessionError> {
    let now = clock.now();
    if let (Some(slot), Some(saved)) = (slot, saved) {
        let restored = crate::saved::restore(slot, &saved, |bytes| {
            RelayClient::restore(bytes, Limits::default(), security.clone(), now)
        });
        match restored {
            Ok(mut machine) => {
                machine.handle_reconnected(now);
                if let Some(id) = machine.id() {
                    show(vec![RelayOutput::Notice(SessionNotice::Restored {
                        id: Some(id.0),
                        file: slot.path().to_owned(),
                    })]);
                }
                return Ok(machine);
            }
            Err(notice) => show(vec![RelayOutput::Notice(notice)]),
        }
    }
    RelayClient::new(&options.name, Limits::default(), security, now).map_err(SessionError::Name)
}

/// One session with the relay, from its handshake to its end.
#[allow(clippy::too_many_arguments)]
async fn session(
    options: &RelayOptions,
    conversation: &mut RelayConversation<'_>,
    machine: RelayClient,
    clock: p2pchat_tcp::Clock,
    stream: smol::net::TcpStream,
    slot: Option<&SessionSlot>,
    commands: &Receiver<RelayCommand>,
    show: &mut dyn FnMut(Vec<RelayOutput>),
) {
    // Dials the relay again when the connection is lost, to resume the session.
    let redial = options
        .reconnect
        .then(|| p2pchat_tcp::redial_to(options.host.clone(), DEFAULT_PORT, "`p2pchat server`"));
    let (store, commit) = slot.map(SessionSlot::store).unzip();
    conversation.shown = commit.clone();
    let files = conversation.transfers.reports();
    let session = p2pchat_tcp::prepare_with_redial(stream, machine, clock, redial, store);
    conversation::run(
        conversation,
        session,
        Vec::new(),
        commands,
        files,
        show,
        commit.as_ref(),
    )
    .await;
}

/// One relay session's reactions (see [`Conversation`]).
struct RelayConversation<'a> {
    /// Our ID, once known.
    me: Option<ClientId>,
    /// Our ID in the session before this one, if one ended.
    previous: Option<ClientId>,
    trust: &'a mut Trust,
    transfers: &'a mut Transfers,
    /// What was shown by a process that died before this one resumed.
    shown: Option<Committer>,
    out: Vec<RelayOutput>,
    /// Why the session ended badly, if it did.
    failed: Option<String>,
    refused: bool,
    /// The relay no longer holds the session: join anew.
    lost: bool,
    reconnect: bool,
}

impl Conversation for RelayConversation<'_> {
    type Machine = RelayClient;
    type Command = RelayCommand;
    type Output = RelayOutput;

    fn on_command(&mut self, command: RelayCommand) -> Vec<ClientCommand> {
        let cmd = match command {
            RelayCommand::Send { to, text } => ClientCommand::Send {
                to: ClientId(to),
                text,
            },
            RelayCommand::Broadcast { text } => ClientCommand::Broadcast(text),
            RelayCommand::Offer { to, path } => {
                let step = self
                    .transfers
                    .send(Some(ClientId(to)), &path.to_string_lossy());
                return self.file_step(step);
            }
            RelayCommand::Accept { number } => {
                let step = self.transfers.accept(number);
                return self.file_step(step);
            }
            RelayCommand::Decline { number } => {
                let step = self.transfers.decline(number);
                return self.file_step(step);
            }
            RelayCommand::Cancel => {
                let cmds = self.transfers.cancel_all();
                return self.file_commands(cmds);
            }
            RelayCommand::Who => ClientCommand::Who,
            RelayCommand::Exit => ClientCommand::Exit,
            RelayCommand::Quit => ClientCommand::Leave,
        };
        vec![cmd]
    }

    fn on_event(&mut self, event: SessionEvent<ClientEvent>) -> Vec<ClientCommand> {
        let event = match event {
            SessionEvent::Core(ClientEvent::File(e)) => {
                let cmds = self.transfers.on_event(e);
                return self.file_commands(cmds);
            }
            SessionEvent::Core(event) => event,
            SessionEvent::Rejected(e) => {
                self.rejected(e);
                return vec![];
            }
        };
        let mut notices = Vec::new();
        match &event {
            // Shown by the process that died before this one resumed.
            ClientEvent::Message { from, seq, .. }
                if self.shown.as_ref().is_some_and(|s| !s.fresh(from.0, *seq)) =>
            {
                return vec![];
            }
            ClientEvent::Welcomed {
                id,
                relay_key,
                cipher,
                ..
            } => {
                self.me = Some(*id);
                notices.push(SessionNotice::Security {
                    summary: self.trust.describe("", *relay_key, *cipher, "the relay"),
                    encrypted: relay_key.is_some(),
                });
                if let Some(was) = self.previous {
                    notices.push(SessionNotice::Rejoined {
                        id: id.0,
                        was: was.0,
                    });
                }
            }
            ClientEvent::Disconnected {
                code: ErrorCode::KeyChanged,
                reason,
            } => {
                self.failed = Some(reason.clone());
                notices.push(SessionNotice::KeyChanged {
                    hint: self.trust.hint(),
                });
            }
            ClientEvent::Refused(r) => {
                self.refused = true;
                self.failed = Some(r.reason.clone());
            }
            ClientEvent::Disconnected { code, reason }
                if worth_rejoining(*code) && !self.refused && self.reconnect =>
            {
                self.lost = true;
                self.notice(SessionNotice::SessionLost {
                    code: code.to_string(),
                    reason: reason.clone(),
                });
                return vec![];
            }
            ClientEvent::Disconnected { code, reason }
                if *code != ErrorCode::Normal && self.failed.is_none() =>
            {
                self.failed = Some(format!("{reason} ({code})"));
            }
            _ => {}
        }
        self.out.push(RelayOutput::Event(RelayEvent::from(&event)));
        for notice in notices {
            self.notice(notice);
        }
        vec![]
    }

    fn transfers(&mut self) -> &mut Transfers {
        self.transfers
    }

    fn push(&mut self, output: RelayOutput) {
        self.out.push(output);
    }

    fn take_output(&mut self) -> Vec<RelayOutput> {
        std::mem::take(&mut self.out)
    }

    fn file_command(command: FileCommand) -> ClientCommand {
        ClientCommand::File(command)
    }

    fn transfer_output(notice: TransferNotice) -> RelayOutput {
        RelayOutput::Transfer(notice)
    }

    fn notice_output(notice: SessionNotice) -> RelayOutput {
        RelayOutput::Notice(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_from_json_as_the_web_page_writes_them() {
        let c: RelayCommand =
            serde_json::from_str(r#"{"cmd":"send","to":1,"text":"hi"}"#).expect("a send command");
        assert_eq!(
            c,
            RelayCommand::Send {
                to: 1,
                text: "hi".into()
            }
        );
        let c: RelayCommand =
            serde_json::from_str(r#"{"cmd":"accept","number":null}"#).expect("accept");
        assert_eq!(c, RelayCommand::Accept { number: None });
        assert!(serde_json::from_str::<RelayCommand>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    #[test]
    fn outputs_serialise_with_their_own_event_names() {
        let out = RelayOutput::Notice(SessionNotice::Rejoined { id: 4, was: 1 });
        assert_eq!(
            crate::events::to_json_line(&out),
            r#"{"event":"rejoined","id":4,"was":1}"#
        );
        let out = RelayOutput::Event(RelayEvent::Exited { id: 2 });
        assert_eq!(
            crate::events::to_json_line(&out),
            r#"{"event":"exited","id":2}"#
        );
    }
}
