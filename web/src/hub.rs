//! The conversation the page drives, and the pages watching it.
//!
//! At most one conversation at a time (a relay session or a direct one), run by the
//! client library on a thread of its own; its outputs are serialised once, kept in
//! a short backlog (a page reloaded mid-conversation shows what it missed) and sent
//! to every open page. What a page sends is a start command (`join`, `listen`,
//! `connect`) or a command of the conversation under way.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use async_channel::{Receiver, Sender};
use p2pchat_client::SessionError;
use p2pchat_client::direct::{self, DirectCommand, DirectOptions, Role};
use p2pchat_client::events::to_json_line;
use p2pchat_client::relay::{self, RelayCommand, RelayOptions};
use serde::{Deserialize, Serialize};

/// How many outputs a page that opens late is sent.
const BACKLOG: usize = 2_000;

/// How many outputs may wait for one page before it is dropped (it reconnects and
/// is sent the backlog): a stalled tab cannot make the app hold everything.
const PAGE_QUEUE: usize = 10_000;

/// Where the hub's conversations keep things.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The data folder: identity, known keys, history.
    pub data_dir: Option<PathBuf>,
    /// Where accepted files go.
    pub download_dir: PathBuf,
}

/// What a page asks to start.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Start {
    /// Join a relay.
    Join {
        host: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        insecure: bool,
        #[serde(default)]
        password: Option<String>,
    },
    /// Wait for a peer on a port (on every interface, as `p2pchat listen`).
    Listen {
        #[serde(default)]
        port: u16,
        #[serde(default)]
        name: String,
        #[serde(default)]
        insecure: bool,
    },
    /// Dial a listening peer.
    Connect {
        host: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        insecure: bool,
    },
}

/// What the web app itself tells pages, beside the conversation's outputs.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WebEvent<'a> {
    /// A conversation started.
    WebStarted {
        /// `relay` or `direct`.
        mode: &'a str,
        /// What it is with (an address).
        target: &'a str,
    },
    /// The conversation ended; `message` says why when it ended badly.
    WebEnded { ok: bool, message: String },
    /// A command from the page could not be carried out.
    WebProblem { message: String },
    /// We sent a message (so that every page, and a page reloaded later, shows
    /// it): to a client ID, `"all"`, or `"peer"`.
    Sent { to: serde_json::Value, text: String },
}

/// The conversation under way.
enum Active {
    Relay(Sender<RelayCommand>),
    Direct(Sender<DirectCommand>),
}

#[derive(Default)]
struct State {
    active: Option<Active>,
    pages: Vec<Sender<String>>,
    backlog: VecDeque<String>,
}

/// The conversation and the pages: shared by every connection's task.
pub struct Hub {
    options: HubOptions,
    state: Mutex<State>,
}

impl Hub {
    /// A hub with no conversation yet.
    pub fn new(options: HubOptions) -> Arc<Hub> {
        Arc::new(Hub {
            options,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new page: what it missed, and where the rest will come.
    pub fn subscribe(&self) -> (Vec<String>, Receiver<String>) {
        let (tx, rx) = async_channel::bounded(PAGE_QUEUE);
        let mut state = self.state();
        state.pages.push(tx);
        (state.backlog.iter().cloned().collect(), rx)
    }

    /// Sends one JSON object to every page (and keeps it for pages to come).
    fn publish(&self, json: String) {
        let mut state = self.state();
        if state.backlog.len() == BACKLOG {
            state.backlog.pop_front();
        }
        state.backlog.push_back(json.clone());
        state
            .pages
            .retain(|page| page.try_send(json.clone()).is_ok());
    }

    fn problem(&self, message: impl Into<String>) {
        self.publish(to_json_line(&WebEvent::WebProblem {
            message: message.into(),
        }));
    }

    /// A message from a page (one JSON object).
    pub fn handle(self: &Arc<Self>, text: &str) {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.problem(format!("not a JSON command: {e}")),
        };
        let cmd = value
            .get("cmd")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_owned();
        match cmd.as_str() {
            "join" | "listen" | "connect" => match serde_json::from_value::<Start>(value) {
                Ok(start) => self.start(start),
                Err(e) => self.problem(format!("{cmd}: {e}")),
            },
            // A page offers files it uploaded (POST /upload), never a path on this
            // machine: a page must not be able to send any file the user can read.
            "offer" => self.problem("files are offered by uploading them from the page"),
            _ => self.forward(value),
        }
    }

    /// A command for the conversation under way.
    fn forward(&self, value: serde_json::Value) {
        let state = self.state();
        let sent = match &state.active {
            None => Err("no conversation: join a relay, listen or connect first".to_owned()),
            Some(Active::Relay(tx)) => serde_json::from_value::<RelayCommand>(value)
                .map_err(|e| format!("not a relay command: {e}"))
                .map(|c| {
                    let echo = match &c {
                        RelayCommand::Send { to, text } => Some((serde_json::json!(to), text)),
                        RelayCommand::Broadcast { text } => Some((serde_json::json!("all"), text)),
                        _ => None,
                    }
                    .map(|(to, text)| WebEvent::Sent {
                        to,
                        text: text.clone(),
                    });
                    let _ = tx.try_send(c);
                    echo
                }),
            Some(Active::Direct(tx)) => serde_json::from_value::<DirectCommand>(value)
                .map_err(|e| format!("not a direct command: {e}"))
                .map(|c| {
                    let echo = match &c {
                        DirectCommand::Send { text } => Some(WebEvent::Sent {
                            to: serde_json::json!("peer"),
                            text: text.clone(),
                        }),
                        _ => None,
                    };
                    let _ = tx.try_send(c);
                    echo
                }),
        };
        drop(state);
        match sent {
            Ok(Some(echo)) => self.publish(to_json_line(&echo)),
            Ok(None) => {}
            Err(message) => self.problem(message),
        }
    }

    /// Offers an uploaded file (to client `to` on a relay).
    pub fn offer(&self, to: Option<u32>, path: PathBuf) -> Result<(), String> {
        let state = self.state();
        match (&state.active, to) {
            (None, _) => Err("no conversation to send the file in".into()),
            (Some(Active::Relay(_)), None) => Err("a relay needs the recipient's ID".into()),
            (Some(Active::Relay(tx)), Some(to)) => {
                let _ = tx.try_send(RelayCommand::Offer { to, path });
                Ok(())
            }
            (Some(Active::Direct(tx)), _) => {
                let _ = tx.try_send(DirectCommand::Offer { path });
                Ok(())
            }
        }
    }

    /// Starts a conversation on a thread of its own, unless one is under way.
    fn start(self: &Arc<Self>, start: Start) {
        let mut state = self.state();
        if state.active.is_some() {
            drop(state);
            return self.problem("a conversation is open; quit it first");
        }
        state.backlog.clear();
        let (mode, target) = match &start {
            Start::Join { host, .. } => ("relay", host.clone()),
            Start::Listen { port, .. } => ("direct", format!("port {port}")),
            Start::Connect { host, .. } => ("direct", host.clone()),
        };
        let (commands, run): (Active, Box<dyn FnOnce() -> Result<(), SessionError> + Send>) =
            match start {
                Start::Join {
                    host,
                    name,
                    insecure,
                    password,
                } => {
                    let mut options = RelayOptions::new(host, name);
                    options.wishes.insecure = insecure;
                    options.wishes.password = password.filter(|p| !p.is_empty());
                    options.data_dir = self.options.data_dir.clone();
                    options.download_dir = self.options.download_dir.clone();
                    let (tx, rx) = async_channel::unbounded();
                    let hub = self.clone();
                    let run = move || {
                        smol::block_on(relay::run(options, rx, |burst| {
                            for output in burst {
                                hub.publish(to_json_line(&output));
                            }
                        }))
                    };
                    (Active::Relay(tx), Box::new(run))
                }
                Start::Listen {
                    port,
                    name,
                    insecure,
                } => self.direct(
                    Role::Listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
                    name,
                    insecure,
                ),
                Start::Connect {
                    host,
                    name,
                    insecure,
                } => self.direct(Role::Connect(host), name, insecure),
            };
        state.active = Some(commands);
        drop(state);
        // Said before the conversation can say anything (or end).
        self.publish(to_json_line(&WebEvent::WebStarted {
            mode,
            target: &target,
        }));
        let ended = self.clone();
        std::thread::spawn(move || ended.ended(run()));
    }

    /// A direct conversation's commands, and how it runs (on a thread of its own).
    #[allow(clippy::type_complexity)]
    fn direct(
        self: &Arc<Self>,
        role: Role,
        name: String,
        insecure: bool,
    ) -> (Active, Box<dyn FnOnce() -> Result<(), SessionError> + Send>) {
        let mut options = DirectOptions::new(role, name);
        options.wishes.insecure = insecure;
        options.data_dir = self.options.data_dir.clone();
        options.download_dir = self.options.download_dir.clone();
        let (tx, rx) = async_channel::unbounded();
        let hub = self.clone();
        let run = move || {
            smol::block_on(direct::run(options, rx, |burst| {
                for output in burst {
                    hub.publish(to_json_line(&output));
                }
            }))
        };
        (Active::Direct(tx), Box::new(run))
    }

    /// The conversation is over: pages are told, and a new one may start.
    fn ended(&self, result: Result<(), SessionError>) {
        self.state().active = None;
        let (ok, message) = match result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e.to_string()),
        };
        self.publish(to_json_line(&WebEvent::WebEnded { ok, message }));
    }
}
