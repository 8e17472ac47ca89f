//! The web app's API driven as its page drives it, over real TCP on 127.0.0.1: a
//! WebSocket with the token and our Origin joins a real relay, chats both ways with
//! a library client, sends a file uploaded like the page does and accepts one;
//! requests without the token, with a wrong one or from a foreign Origin get 403.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_channel::Receiver;
use p2pchat_client::RelayEvent;
use p2pchat_client::relay::{self, RelayCommand, RelayOptions, RelayOutput};
use p2pchat_client::transfer::TransferNotice;
use p2pchat_core::{Identity, Limits, Security};
use p2pchat_tcp::{Relay, ShutdownHandle};
use p2pchat_web::{WebApp, WebOptions};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// How long any one expected event may take.
const WAIT: Duration = Duration::from_secs(15);

fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2pchat-web-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp folder");
    dir
}

fn start_relay() -> (SocketAddr, ShutdownHandle) {
    let security = Security::encrypted(Identity::from_secret([5; 32]), [6; 32]);
    let relay = smol::block_on(Relay::bind(
        "127.0.0.1:0".parse().expect("an address"),
        Limits::default(),
        security,
    ))
    .expect("a free port");
    let addr = relay.local_addr().expect("its address");
    let (handle, signal) = ShutdownHandle::new();
    let (log, _) = async_channel::unbounded();
    relay.spawn(log, signal);
    (addr, handle)
}

/// The web app on a free loopback port; returns its URL.
fn start_web(data: &Path, downloads: &Path) -> String {
    let app = smol::block_on(WebApp::bind(WebOptions {
        bind: "127.0.0.1".parse().expect("an address"),
        port: 0,
        fall_back: false,
        data_dir: Some(data.to_owned()),
        download_dir: downloads.to_owned(),
    }))
    .expect("the web app listens");
    let url = app.url();
    std::thread::spawn(move || smol::block_on(app.run()));
    url
}

/// `http://127.0.0.1:PORT/?token=T` -> (`127.0.0.1:PORT`, `T`).
fn parts(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, query) = rest.split_once("/?token=").expect("a token");
    (host.to_owned(), query.to_owned())
}

/// Opens the WebSocket with `token` and `origin`; the HTTP status when refused.
fn open_socket(host: &str, token: &str, origin: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let mut request = format!("ws://{host}/ws?token={token}")
        .into_client_request()
        .expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("a header value"));
    }
    let stream = TcpStream::connect(host).expect("the app listens");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("unexpected handshake result: {e}"),
    }
}

/// The page's side: a WebSocket, and every event seen.
struct Page {
    socket: WebSocket<TcpStream>,
    seen: Vec<Value>,
}

impl Page {
    fn send(&mut self, command: Value) {
        self.socket
            .send(Message::text(command.to_string()))
            .expect("the socket is open");
    }

    /// Waits for an event matching `pred`; returns it.
    fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let event: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    self.seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("the socket broke waiting for {what}: {e}"),
            }
        }
        panic!("no {what} within {WAIT:?}; seen: {:#?}", self.seen);
    }
}

/// A raw HTTP request; returns the status code and the body.
fn http(host: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(host).expect("the app listens");
    stream.set_read_timeout(Some(WAIT)).expect("a timeout");
    let request = format!(
        "{head}\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("sent");
    stream.write_all(body).expect("sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// A library client on a thread: its commands and outputs.
fn library_client(
    host: &str,
    name: &str,
    downloads: &Path,
) -> (async_channel::Sender<RelayCommand>, Receiver<RelayOutput>) {
    let mut options = RelayOptions::new(host, name);
    options.data_dir = Some(fresh_dir(name));
    options.download_dir = downloads.to_owned();
    let (commands, session_commands) = async_channel::unbounded();
    let (session_outputs, outputs) = async_channel::unbounded();
    std::thread::spawn(move || {
        smol::block_on(relay::run(options, session_commands, move |burst| {
            for output in burst {
                let _ = session_outputs.try_send(output);
            }
        }))
    });
    (commands, outputs)
}

fn expect_output(
    outputs: &Receiver<RelayOutput>,
    what: &str,
    pred: impl Fn(&RelayOutput) -> bool,
) -> RelayOutput {
    let deadline = Instant::now() + WAIT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let next = smol::block_on(smol::future::or(
            async { outputs.recv().await.ok() },
            async {
                smol::Timer::after(left).await;
                None
            },
        ));
        match next {
            Some(output) if pred(&output) => return output,
            Some(_) => {}
            None => break,
        }
    }
    panic!("no {what} within {WAIT:?}");
}

#[test]
fn the_page_api_joins_chats_sends_and_accepts_files_and_refuses_strangers() {
    let (relay_addr, relay) = start_relay();
    let relay_host = relay_addr.to_string();
    let web_data = fresh_dir("web-data");
    let web_downloads = fresh_dir("web-downloads");
    let url = start_web(&web_data, &web_downloads);
    let (host, token) = parts(&url);
    let origin = format!("http://{host}");

    // Strangers: no token, a wrong token, a foreign Origin.
    assert_eq!(http(&host, "GET / HTTP/1.1", b"").0, 403);
    assert_eq!(http(&host, "GET /?token=0123 HTTP/1.1", b"").0, 403);
    let (status, page) = http(&host, &format!("GET /?token={token} HTTP/1.1"), b"");
    assert_eq!(status, 200);
    assert!(page.contains("<title>p2pchat</title>"), "{page}");
    assert_eq!(open_socket(&host, "", Some(&origin)).err(), Some(403));
    assert_eq!(open_socket(&host, "wrong", Some(&origin)).err(), Some(403));
    assert_eq!(
        open_socket(&host, &token, Some("http://evil.example")).err(),
        Some(403)
    );
    assert_eq!(open_socket(&host, &token, None).err(), Some(403));

    let socket = open_socket(&host, &token, Some(&origin)).expect("our own page is let in");
    let mut page = Page {
        socket,
        seen: Vec::new(),
    };
    page.send(json!({"cmd": "join", "host": relay_host, "name": "web"}));
    page.expect("the welcome", |e| e["event"] == "welcome" && e["id"] == 0);
    let security = page.expect("the security line", |e| e["event"] == "security");
    assert_eq!(security["encrypted"], true, "{security}");

    let bob_downloads = fresh_dir("bob-downloads");
    let (bob, bob_out) = library_client(&relay_host, "bob", &bob_downloads);
    page.expect("bob joining", |e| {
        e["event"] == "joined" && e["id"] == 1 && e["name"] == "bob" && e["key"].is_string()
    });

    // Chat both ways.
    page.send(json!({"cmd": "send", "to": 1, "text": "hello bob"}));
    page.expect("our message echoed", |e| {
        e["event"] == "sent" && e["to"] == 1 && e["text"] == "hello bob"
    });
    expect_output(
        &bob_out,
        "the page's message",
        |o| matches!(o, RelayOutput::Event(RelayEvent::Message { from: 0, text, e2e: true, .. }) if text == "hello bob"),
    );
    bob.send_blocking(RelayCommand::Send {
        to: 0,
        text: "hello page".into(),
    })
    .expect("bob's session runs");
    page.expect("bob's answer", |e| {
        e["event"] == "message" && e["from"] == 1 && e["text"] == "hello page" && e["e2e"] == true
    });

    // The page may not name a path on this machine: files are uploaded.
    page.send(json!({"cmd": "offer", "to": 1, "path": "/etc/passwd"}));
    page.expect("the offer refused", |e| e["event"] == "web_problem");

    // A file from the page, uploaded as its file picker does.
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (status, _) = http(
        &host,
        &format!("POST /upload?token={token}&name=plan.bin&to=1 HTTP/1.1\r\nOrigin: {origin}"),
        &contents,
    );
    assert_eq!(status, 200);
    let (status, _) = http(
        &host,
        &format!(
            "POST /upload?token={token}&name=x.bin&to=1 HTTP/1.1\r\nOrigin: http://evil.example"
        ),
        b"x",
    );
    assert_eq!(status, 403, "an upload from a foreign page is refused");
    page.expect("the offer", |e| {
        e["event"] == "file_offering" && e["name"] == "plan.bin"
    });
    let offered = expect_output(
        &bob_out,
        "the offer at bob",
        |o| matches!(o, RelayOutput::Transfer(TransferNotice::FileOffered { name, .. }) if name == "plan.bin"),
    );
    let RelayOutput::Transfer(TransferNotice::FileOffered { number, .. }) = offered else {
        unreachable!("matched above");
    };
    bob.send_blocking(RelayCommand::Accept {
        number: Some(number),
    })
    .expect("bob's session runs");
    let received = expect_output(&bob_out, "the file at bob", |o| {
        matches!(
            o,
            RelayOutput::Transfer(TransferNotice::FileReceived { .. })
        )
    });
    let RelayOutput::Transfer(TransferNotice::FileReceived { path, .. }) = received else {
        unreachable!("matched above");
    };
    assert_eq!(std::fs::read(&path).expect("the received file"), contents);
    page.expect("the delivery", |e| {
        e["event"] == "file_delivered" && e["name"] == "plan.bin"
    });

    // A file to the page, accepted from it.
    let notes = fresh_dir("bob-files").join("notes.txt");
    std::fs::write(&notes, b"from bob to the page\n").expect("a file");
    bob.send_blocking(RelayCommand::Offer { to: 0, path: notes })
        .expect("bob's session runs");
    let offer = page.expect("bob's offer", |e| e["event"] == "file_offered");
    page.send(json!({"cmd": "accept", "number": offer["number"]}));
    let received = page.expect("the file received", |e| e["event"] == "file_received");
    let path = received["path"].as_str().expect("a path");
    assert!(Path::new(path).starts_with(&web_downloads), "{path}");
    assert_eq!(
        std::fs::read(path).expect("the received file"),
        b"from bob to the page\n"
    );

    // A second page (a reload) is sent what it missed.
    let mut again = Page {
        socket: open_socket(&host, &token, Some(&origin)).expect("let in"),
        seen: Vec::new(),
    };
    again.expect("the backlog", |e| {
        e["event"] == "message" && e["text"] == "hello page"
    });

    page.send(json!({"cmd": "quit"}));
    page.expect("the end", |e| e["event"] == "web_ended" && e["ok"] == true);
    relay.shutdown();
}

#[test]
fn a_taken_default_port_is_said_and_another_is_used_but_a_chosen_one_is_an_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = holder.local_addr().expect("its address").port();
    let options = |fall_back| WebOptions {
        bind: "127.0.0.1".parse().expect("an address"),
        port,
        fall_back,
        data_dir: Some(fresh_dir("ports")),
        download_dir: fresh_dir("ports-downloads"),
    };
    let app = smol::block_on(WebApp::bind(options(true))).expect("another port");
    assert_eq!(app.port_taken(), Some(port));
    assert!(!app.url().contains(&format!(":{port}/")), "{}", app.url());
    let err = smol::block_on(WebApp::bind(options(false)))
        .err()
        .expect("a chosen port that is taken is an error");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[test]
fn the_page_listens_for_a_direct_peer_and_chats_with_it() {
    let url = start_web(&fresh_dir("direct-data"), &fresh_dir("direct-downloads"));
    let (host, token) = parts(&url);
    let mut page = Page {
        socket: open_socket(&host, &token, Some(&format!("http://{host}"))).expect("let in"),
        seen: Vec::new(),
    };
    page.send(json!({"cmd": "listen", "port": 0, "name": "page"}));
    let listening = page.expect("listening", |e| e["event"] == "listening");
    let address = listening["address"].as_str().expect("an address");
    let port = address.rsplit(':').next().expect("a port");

    let mut options = p2pchat_client::direct::DirectOptions::new(
        p2pchat_client::direct::Role::Connect(format!("127.0.0.1:{port}")),
        "peer",
    );
    options.data_dir = Some(fresh_dir("direct-peer"));
    let (commands, session_commands) = async_channel::unbounded();
    let (session_outputs, outputs) = async_channel::unbounded();
    std::thread::spawn(move || {
        smol::block_on(p2pchat_client::direct::run(
            options,
            session_commands,
            move |burst| {
                for output in burst {
                    let _ = session_outputs.try_send(output);
                }
            },
        ))
    });
    page.expect("the peer", |e| {
        e["event"] == "connected" && e["name"] == "peer"
    });
    page.send(json!({"cmd": "send", "text": "hello peer"}));
    let deadline = Instant::now() + WAIT;
    let got = loop {
        let next = smol::block_on(smol::future::or(
            async { outputs.recv().await.ok() },
            async {
                smol::Timer::after(Duration::from_millis(100)).await;
                None
            },
        ));
        match next {
            Some(p2pchat_client::direct::DirectOutput::Event(
                p2pchat_client::DirectEvent::Message { text, .. },
            )) => break text,
            _ if Instant::now() > deadline => panic!("the peer never got the message"),
            _ => {}
        }
    };
    assert_eq!(got, "hello peer");
    commands
        .send_blocking(p2pchat_client::direct::DirectCommand::Send {
            text: "hello page".into(),
        })
        .expect("the peer's session runs");
    page.expect("the peer's message", |e| {
        e["event"] == "message" && e["text"] == "hello page"
    });
    page.send(json!({"cmd": "exit"}));
    commands
        .send_blocking(p2pchat_client::direct::DirectCommand::Exit)
        .expect("the peer's session runs");
    page.expect("the end", |e| e["event"] == "web_ended" && e["ok"] == true);
}
