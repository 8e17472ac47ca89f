//! A direct conversation for any frontend: [`run`] listens for a peer or dials one,
//! then carries a frontend's [`DirectCommand`]s to it and its [`DirectOutput`]s back
//! until both sides have said exit.
//!
//! Beside the protocol it keeps each side's history of the conversation on disk
//! (one log per peer, by its name or else its address) and shows its last lines
//! when the conversation starts; it checks and remembers the peer's key (trust on
//! first use); it saves the conversation as it goes, so that a frontend started
//! again after its process died resumes it; and when the connection is lost the
//! connecting side dials again while the listening side keeps listening, and the
//! conversation resumes.
//!
//! What a frontend must do: send commands, show outputs, stop when [`run`] returns.
//! What it may skip: history lines and notices it has no use for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_channel::Receiver;
use p2pchat_core::{ErrorCode, Limits, Peer, PeerEvent, PeerSide, RecordCipher};
use p2pchat_tcp::{DEFAULT_PORT, FileCommand, PeerCommand, SessionEvent};
use serde::{Deserialize, Serialize};

use crate::conversation::{self, Conversation};
use crate::error::SessionError;
use crate::events::{DirectEvent, HistoryLine};
use crate::history::{Direction, History};
use crate::keys::{self, Trust, Wishes};
use crate::notice::SessionNotice;
use crate::saved::{Committer, Saving, SessionSlot};
use crate::transfer::{TransferNotice, Transfers};

/// Which side of the conversation this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Wait for one peer on this address (port 0 picks a free one).
    Listen(SocketAddr),
    /// Dial `HOST` or `HOST:PORT` (65432 when no port is given).
    Connect(String),
    /// Dial a plain-text listener (`nc -l`, the original app): lines, no handshake,
    /// not encrypted, not saved.
    ConnectPlainText(String),
}

/// How to hold a direct conversation. [`DirectOptions::new`] gives the defaults a
/// user expects: encrypted, history kept, files saved to the current folder.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    /// Listen or connect.
    pub role: Role,
    /// The nickname the peer sees (may be empty).
    pub name: String,
    /// What the user asked of the conversation's security.
    pub wishes: Wishes,
    /// Where accepted files are saved.
    pub download_dir: PathBuf,
    /// Accept every file offered without asking.
    pub auto_accept: bool,
    /// Whether the conversation is saved as it goes, to be resumed after a crash.
    pub saving: Saving,
    /// The data folder: identity, known keys, history, saved sessions.
    pub data_dir: Option<PathBuf>,
    /// The history: where, whether, and how much of it to show at the start.
    pub history: HistoryOptions,
    /// How long a listening side waits for its peer to come back after a lost
    /// connection (`None`: the protocol's default).
    pub resume_grace: Option<Duration>,
}

/// What to do with the conversation's history.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// Keep one (else nothing is written or shown).
    pub keep: bool,
    /// This file rather than one per peer under the data folder.
    pub file: Option<PathBuf>,
    /// How many earlier lines to show when the conversation starts.
    pub lines: usize,
}

impl DirectOptions {
    /// Options for `role` as `name`, with the defaults; conversations not saved.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        DirectOptions {
            role,
            name: name.into(),
            wishes: Wishes {
                insecure: false,
                password: None,
                expect: None,
                cipher: RecordCipher::fastest_here(),
            },
            download_dir: PathBuf::from("."),
            auto_accept: false,
            saving: Saving::Off,
            data_dir: crate::data_dir(),
            history: HistoryOptions {
                keep: true,
                file: None,
                lines: 20,
            },
            resume_grace: None,
        }
    }
}

/// What a frontend asks of a direct conversation. As JSON:
/// `{"cmd":"send","text":"hi"}`, `{"cmd":"history","lines":50}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum DirectCommand {
    /// Send `text` to the peer.
    Send {
        /// The text.
        text: String,
    },
    /// Offer the file at `path` to the peer.
    Offer {
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
    /// Show the last `lines` lines of this conversation's history.
    History {
        /// How many.
        lines: usize,
    },
    /// Stop sending; keep receiving until the peer says exit too.
    Exit,
    /// The user's input ended (a pipe, Ctrl-D): exit, and do not wait for a lost
    /// peer when nothing sent is unconfirmed.
    InputEnded,
    /// Leave now.
    Quit,
}

/// What a direct conversation tells its frontend. Each serialises to one JSON
/// object whose `event` field names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DirectOutput {
    /// An event of the conversation.
    Event(DirectEvent),
    /// An earlier line of the conversation (between `history_start` and
    /// `history_end` notices).
    History(HistoryLine),
    /// Something about a file transfer.
    Transfer(TransferNotice),
    /// Something about the session itself.
    Notice(SessionNotice),
}

/// Holds the conversation until both sides have said exit, the frontend quits, or
/// it cannot go on. `show` is handed each burst of outputs and must show them
/// before it returns (see [`crate::relay::run`] for why).
pub async fn run(
    options: DirectOptions,
    commands: Receiver<DirectCommand>,
    mut show: impl FnMut(Vec<DirectOutput>),
) -> Result<(), SessionError> {
    let show: &mut dyn FnMut(Vec<DirectOutput>) = &mut show;
    match options.role.clone() {
        Role::Listen(addr) => listen(&options, addr, commands, show).await,
        Role::Connect(host) => connect(&options, &host, false, commands, show).await,
        Role::ConnectPlainText(host) => connect(&options, &host, true, commands, show).await,
    }
}

fn notice(notice: SessionNotice) -> Vec<DirectOutput> {
    vec![DirectOutput::Notice(notice)]
}

/// Listens, waits for one peer (commands given meanwhile are kept for when it
/// comes; quit stops waiting), then holds the conversation.
async fn listen(
    options: &DirectOptions,
    addr: SocketAddr,
    commands: Receiver<DirectCommand>,
    show: &mut dyn FnMut(Vec<DirectOutput>),
) -> Result<(), SessionError> {
    let listener = p2pchat_tcp::listen(addr).await?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let dir = options.data_dir.as_deref();
    // Saved as it goes, so that a listener started again on the same address after
    // its process died resumes the conversation.
    let (slot, saved, warnings) = crate::saved::open(options.saving, dir, "listen", &local);
    show(warnings.into_iter().map(DirectOutput::Notice).collect());
    show(notice(SessionNotice::Listening {
        address: local.clone(),
    }));
    let mut replay = Vec::new();
    let (stream, peer) = loop {
        let next = smol::future::or(async { Ok(listener.accept().await) }, async {
            Err(commands.recv().await)
        })
        .await;
        match next {
            Ok(Ok(accepted)) => break accepted,
            Ok(Err(e)) => return Err(SessionError::Accept(e)),
            Err(Ok(DirectCommand::Quit)) => return Ok(()),
            Err(Ok(command)) => replay.push(command),
            // The frontend is gone: nobody to talk for.
            Err(Err(_)) => return Ok(()),
        }
    };
    show(notice(SessionNotice::Arrived {
        address: peer.to_string(),
    }));
    // The listener stays open: if the connection is lost, the peer dials again and
    // the conversation resumes on its next connection.
    let redial: p2pchat_tcp::Redial = Box::new(move || {
        let listener = listener.clone();
        Box::pin(async move { listener.accept().await.map(|(stream, _)| stream) })
    });
    let trust = Trust::new_in(dir, None, options.wishes.expect.is_some());
    let wishes = Wishes {
        // Followed, not proposed: the connecting side picks.
        cipher: RecordCipher::fastest_here(),
        ..options.wishes.clone()
    };
    let security = wishes.security_in(dir, true, trust.expect())?;
    let mut limits = Limits::default();
    if let Some(grace) = options.resume_grace {
        limits.resume_grace = grace;
    }
    let opening = Opening {
        side: PeerSide::Acceptor,
        limits,
        security,
        slot,
        saved,
        stream,
        redial: Some(redial),
        address: peer.ip().to_string(),
        trust,
    };
    hold(options, opening, replay, &commands, show).await
}

/// Dials the peer, then holds the conversation.
async fn connect(
    options: &DirectOptions,
    host: &str,
    plain_text: bool,
    commands: Receiver<DirectCommand>,
    show: &mut dyn FnMut(Vec<DirectOutput>),
) -> Result<(), SessionError> {
    let hint = if plain_text {
        "a plain-text listener (e.g. `nc -l`)"
    } else {
        "`p2pchat listen`"
    };
    let stream = p2pchat_tcp::connect(host, DEFAULT_PORT, hint).await?;
    let address = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| host.to_owned());
    let dir = options.data_dir.as_deref();
    let trust = Trust::new_in(
        dir,
        Some(keys::host_label(host, DEFAULT_PORT)),
        options.wishes.expect.is_some(),
    );
    if plain_text {
        let clock = p2pchat_tcp::Clock::new();
        let machine = Peer::new_plain_text(Limits::default(), clock.now());
        let session = p2pchat_tcp::prepare_with_redial(stream, machine, clock, None, None);
        let remote = Remote {
            address,
            trust,
            resumed: None,
            commit: None,
        };
        return converse(options, session, Vec::new(), &commands, remote, show).await;
    }
    // Saved as it goes, so that this side started again after its process died
    // resumes the conversation.
    let target = keys::host_with_port(host, DEFAULT_PORT);
    let (slot, saved, warnings) = crate::saved::open(options.saving, dir, "connect", &target);
    show(warnings.into_iter().map(DirectOutput::Notice).collect());
    let security = options.wishes.security_in(dir, false, trust.expect())?;
    let opening = Opening {
        side: PeerSide::Connector,
        limits: Limits::default(),
        security,
        slot,
        saved,
        stream,
        // Dials the listener again if the connection is lost, to resume.
        redial: Some(p2pchat_tcp::redial_to(
            host.to_owned(),
            DEFAULT_PORT,
            "`p2pchat listen`",
        )),
        address,
        trust,
    };
    hold(options, opening, Vec::new(), &commands, show).await
}

/// A conversation about to start: its connection, and what it needs to resume or
/// begin.
struct Opening {
    side: PeerSide,
    limits: Limits,
    security: p2pchat_core::Security,
    /// Where it is saved as it goes, and what a process that died left there.
    slot: Option<SessionSlot>,
    saved: Option<Vec<u8>>,
    stream: smol::net::TcpStream,
    /// How to get the connection back when it is lost.
    redial: Option<p2pchat_tcp::Redial>,
    /// The peer's IP address.
    address: String,
    trust: Trust,
}

/// Resumes the conversation saved in the slot (with a notice) or begins a new one,
/// holds it to its end, and forgets it.
async fn hold(
    options: &DirectOptions,
    opening: Opening,
    replay: Vec<DirectCommand>,
    commands: &Receiver<DirectCommand>,
    show: &mut dyn FnMut(Vec<DirectOutput>),
) -> Result<(), SessionError> {
    let Opening {
        side,
        limits,
        security,
        slot,
        saved,
        stream,
        redial,
        address,
        trust,
    } = opening;
    let clock = p2pchat_tcp::Clock::new();
    let now = clock.now();
    let mut resumed = None;
    let mut machine = None;
    if let (Some(slot), Some(saved)) = (slot.as_ref(), saved) {
        match crate::saved::restore(slot, &saved, |bytes| {
            Peer::restore(bytes, limits.clone(), security.clone(), now)
        }) {
            Ok(mut m) => {
                m.handle_reconnected(now);
                resumed = Some(m.remote_name().unwrap_or_default().to_owned());
                show(notice(SessionNotice::Restored {
                    id: None,
                    file: slot.path().to_owned(),
                }));
                machine = Some(m);
            }
            Err(n) => show(notice(n)),
        }
    }
    let machine = match machine {
        Some(m) => m,
        None => {
            Peer::new(side, &options.name, limits, security, now).map_err(SessionError::Name)?
        }
    };
    let (store, commit) = slot.as_ref().map(SessionSlot::store).unzip();
    let session = p2pchat_tcp::prepare_with_redial(stream, machine, clock, redial, store);
    let remote = Remote {
        address,
        trust,
        resumed,
        commit,
    };
    let result = converse(options, session, replay, commands, remote, show).await;
    // Over: nothing to resume.
    if let Some(slot) = &slot {
        slot.clear();
    }
    result
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
    /// The saved session's commit, made right after events are shown.
    commit: Option<Committer>,
}

async fn converse(
    options: &DirectOptions,
    session: (p2pchat_tcp::PeerSession, p2pchat_tcp::Driver),
    replay: Vec<DirectCommand>,
    commands: &Receiver<DirectCommand>,
    remote: Remote,
    show: &mut dyn FnMut(Vec<DirectOutput>),
) -> Result<(), SessionError> {
    let mut transfers = Transfers::new(options.download_dir.clone(), options.auto_accept, |_| {
        "the peer".to_owned()
    });
    let files = transfers.reports();
    let commit = remote.commit.clone();
    let mut conversation = DirectConversation {
        remote,
        transfers: &mut transfers,
        log: Log {
            options: options.history.clone(),
            data_dir: options.data_dir.clone(),
            history: None,
        },
        we_exited: false,
        out: Vec::new(),
        failed: None,
    };
    conversation::run(
        &mut conversation,
        session,
        replay,
        commands,
        files,
        show,
        commit.as_ref(),
    )
    .await;
    match conversation.failed {
        Some(why) => Err(SessionError::Ended(why)),
        None => Ok(()),
    }
}

/// The conversation's history log, once the peer is known.
struct Log {
    options: HistoryOptions,
    data_dir: Option<PathBuf>,
    history: Option<History>,
}

impl Log {
    /// Opens the log for `peer`; queues its last lines.
    fn start(&mut self, peer: &str, out: &mut Vec<DirectOutput>) {
        if !self.options.keep {
            return;
        }
        let path = self.options.file.clone().or_else(|| {
            self.data_dir
                .as_deref()
                .map(|dir| History::path_in(dir, peer))
        });
        let Some(path) = path else {
            out.push(warning(
                "no history: neither --history nor HOME is set".into(),
            ));
            return;
        };
        match History::open(&path) {
            Ok(h) => {
                show_history(&path, self.options.lines, out);
                self.history = Some(h);
            }
            Err(e) => out.push(warning(format!(
                "no history: cannot open {}: {e}",
                path.display()
            ))),
        }
    }

    fn append(&mut self, direction: Direction, text: &str, out: &mut Vec<DirectOutput>) {
        if let Some(h) = self.history.as_mut()
            && let Err(e) = h.append(direction, text)
        {
            out.push(warning(format!(
                "history not saved ({}): {e}",
                h.path().display()
            )));
            self.history = None;
        }
    }
}

fn warning(message: String) -> DirectOutput {
    DirectOutput::Notice(SessionNotice::Warning { message })
}

/// Queues the last `lines` lines of the history at `path`.
fn show_history(path: &Path, lines: usize, out: &mut Vec<DirectOutput>) {
    let loaded = match History::load_last(path, lines) {
        Ok(l) => l,
        Err(e) => {
            out.push(warning(format!(
                "cannot read history {}: {e}",
                path.display()
            )));
            return;
        }
    };
    if loaded.records.is_empty() && loaded.skipped == 0 {
        return;
    }
    out.push(DirectOutput::Notice(SessionNotice::HistoryStart {
        lines: loaded.records.len(),
        file: path.to_owned(),
    }));
    for r in &loaded.records {
        let from = match r.direction {
            Direction::Sent => "you",
            Direction::Received => "peer",
        };
        out.push(DirectOutput::History(HistoryLine {
            at: r.at.clone(),
            from: from.to_owned(),
            text: r.text.clone(),
        }));
    }
    if loaded.skipped > 0 {
        out.push(warning(format!(
            "history: {} damaged or incomplete record(s) skipped in {}",
            loaded.skipped,
            path.display()
        )));
    }
    out.push(DirectOutput::Notice(SessionNotice::HistoryEnd));
}

/// One direct conversation's reactions (see [`Conversation`]).
struct DirectConversation<'a> {
    remote: Remote,
    transfers: &'a mut Transfers,
    log: Log,
    /// We said exit (nothing we send after is history).
    we_exited: bool,
    out: Vec<DirectOutput>,
    /// Why the conversation ended badly, if it did.
    failed: Option<String>,
}

impl DirectConversation<'_> {
    /// Opens the history for the peer known as `name` (or by its address).
    fn start_log(&mut self, name: &str) {
        let peer = if name.is_empty() {
            self.remote.address.clone()
        } else {
            name.to_owned()
        };
        self.log.start(&peer, &mut self.out);
    }
}

impl Conversation for DirectConversation<'_> {
    type Machine = Peer;
    type Command = DirectCommand;
    type Output = DirectOutput;

    fn on_command(&mut self, command: DirectCommand) -> Vec<PeerCommand> {
        let cmd = match command {
            DirectCommand::Send { text } => {
                if !self.we_exited {
                    self.log.append(Direction::Sent, &text, &mut self.out);
                }
                PeerCommand::Send(text)
            }
            DirectCommand::Offer { path } => {
                let step = self.transfers.send(None, &path.to_string_lossy());
                return self.file_step(step);
            }
            DirectCommand::Accept { number } => {
                let step = self.transfers.accept(number);
                return self.file_step(step);
            }
            DirectCommand::Decline { number } => {
                let step = self.transfers.decline(number);
                return self.file_step(step);
            }
            DirectCommand::Cancel => {
                let cmds = self.transfers.cancel_all();
                return self.file_commands(cmds);
            }
            DirectCommand::History { lines } => {
                match self.log.history.as_ref().map(|h| h.path().to_owned()) {
                    Some(path) => show_history(&path, lines, &mut self.out),
                    None => self.notice(SessionNotice::Problem {
                        message: "no history is being kept for this conversation".into(),
                    }),
                }
                return vec![];
            }
            DirectCommand::Exit => {
                self.we_exited = true;
                PeerCommand::Exit
            }
            DirectCommand::InputEnded => {
                self.we_exited = true;
                PeerCommand::EndOfInput
            }
            DirectCommand::Quit => PeerCommand::Leave,
        };
        vec![cmd]
    }

    fn on_event(&mut self, event: SessionEvent<PeerEvent>) -> Vec<PeerCommand> {
        let event = match event {
            SessionEvent::Core(PeerEvent::File(e)) => {
                let cmds = self.transfers.on_event(e);
                return self.file_commands(cmds);
            }
            SessionEvent::Core(event) => event,
            SessionEvent::Rejected(e) => {
                self.rejected(e);
                return vec![];
            }
        };
        let mut after = Vec::new();
        match &event {
            PeerEvent::Disconnected { code, reason } if *code != ErrorCode::Normal => {
                self.failed = Some(format!("{reason} ({code})"));
                if *code == ErrorCode::KeyChanged {
                    after.push(SessionNotice::KeyChanged {
                        hint: self.remote.trust.hint(),
                    });
                }
            }
            PeerEvent::Connected {
                name,
                plain_text,
                key,
                cipher,
                ..
            } => {
                self.out
                    .extend(DirectEvent::from_core(&event).map(DirectOutput::Event));
                if !plain_text {
                    let summary = self.remote.trust.describe(name, *key, *cipher, "the peer");
                    self.notice(SessionNotice::Security {
                        summary,
                        encrypted: key.is_some(),
                    });
                }
                // The log is per peer: by its name, or by its address.
                let name = name.clone();
                self.start_log(&name);
                return vec![];
            }
            // Shown by the process that died before this one resumed.
            PeerEvent::Message { seq, .. }
                if self
                    .remote
                    .commit
                    .as_ref()
                    .is_some_and(|s| !s.fresh(0, *seq)) =>
            {
                return vec![];
            }
            PeerEvent::Message { text, .. } => {
                self.log.append(Direction::Received, text, &mut self.out)
            }
            PeerEvent::Resumed if self.log.history.is_none() => {
                // A conversation resumed from its saved session: its history starts
                // here (by the peer's name, or its address).
                if let Some(name) = self.remote.resumed.clone() {
                    self.start_log(&name);
                }
            }
            _ => {}
        }
        self.out
            .extend(DirectEvent::from_core(&event).map(DirectOutput::Event));
        for notice in after {
            self.notice(notice);
        }
        vec![]
    }

    fn transfers(&mut self) -> &mut Transfers {
        self.transfers
    }

    fn push(&mut self, output: DirectOutput) {
        self.out.push(output);
    }

    fn take_output(&mut self) -> Vec<DirectOutput> {
        std::mem::take(&mut self.out)
    }

    fn file_command(command: FileCommand) -> PeerCommand {
        PeerCommand::File(command)
    }

    fn transfer_output(notice: TransferNotice) -> DirectOutput {
        DirectOutput::Transfer(notice)
    }

    fn notice_output(notice: SessionNotice) -> DirectOutput {
        DirectOutput::Notice(notice)
    }
}
