//! `p2pchat web` in a real browser: headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs), driven over the DevTools protocol. The page joins a real
//! relay on 127.0.0.1 with a `p2pchat join` in a terminal beside it; they chat both
//! ways, a file picked on the page arrives byte-identical, and a screenshot of the
//! page is written to docs/web.png.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::{Proc, WAIT, fresh_data_dir, server};
use tungstenite::{Message, WebSocket};

/// Where Debian puts Chromium (override with `CHROMIUM`).
fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Headless Chromium with a fresh profile and nothing of its own on the network;
/// returns it and its DevTools WebSocket address.
fn start_chromium(profile: &Path) -> (Child, String) {
    let path = chromium_path();
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`apt-get install -y chromium`; .ci/run does)",
        path.display()
    );
    let mut child = Command::new(path)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--window-size=1280,800",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().expect("its stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("ws://") {
                let _ = tx.send(line[at..].trim().to_owned());
            }
        }
    });
    let ws = rx
        .recv_timeout(WAIT)
        .expect("chromium prints its DevTools address");
    (child, ws)
}

/// A DevTools protocol connection, attached to one page.
struct Browser {
    socket: WebSocket<TcpStream>,
    next: u64,
    session: Option<String>,
}

impl Browser {
    fn connect(ws: &str) -> Browser {
        let host = ws
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// address");
        let stream = TcpStream::connect(host).expect("DevTools listens");
        stream.set_read_timeout(Some(WAIT)).expect("a timeout");
        let (socket, _) = tungstenite::client(ws, stream).expect("DevTools handshake");
        Browser {
            socket,
            next: 1,
            session: None,
        }
    }

    /// Calls `method`; returns its result (events meanwhile are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("DevTools is open");
        loop {
            let text = match self.socket.read().expect("DevTools answers") {
                Message::Text(text) => text,
                _ => continue,
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("JSON");
            if answer["id"] == id {
                assert!(
                    answer.get("error").is_none(),
                    "{method} failed: {}",
                    answer["error"]
                );
                return answer["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab and attaches to it.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = attached["sessionId"].as_str().map(str::to_owned);
    }

    /// Evaluates `js` in the page; returns its value.
    fn eval(&mut self, js: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{js}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `js` is true in the page.
    fn wait_for(&mut self, what: &str, js: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.eval(js) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let shown = self.eval("document.getElementById('messages').innerText");
        panic!("the page never showed {what}; it shows: {shown}");
    }

    /// Puts `path` in the file input `selector`, as a user picking it would.
    fn pick_file(&mut self, selector: &str, path: &Path) {
        let document = self.call("DOM.getDocument", json!({}));
        let node = self.call(
            "DOM.querySelector",
            json!({"nodeId": document["root"]["nodeId"], "selector": selector}),
        );
        self.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": node["nodeId"], "files": [path]}),
        );
    }

    fn screenshot(&mut self, to: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("base64 data"))
            .expect("a PNG");
        std::fs::write(to, png).expect("the screenshot is written");
    }
}

/// A string as a JavaScript literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

fn messages_contain(text: &str) -> String {
    format!(
        "document.getElementById('messages').innerText.includes({})",
        js(text)
    )
}

#[test]
fn a_page_and_a_terminal_chat_through_a_relay_and_the_page_sends_a_file() {
    let (_relay, port) = server(&[]);
    let relay = format!("127.0.0.1:{port}");
    let mut web = Proc::start_in(&["web", "--port", "0"], &fresh_data_dir());
    let url = web.expect_out("the URL", |l| l.starts_with("http://127.0.0.1:"));

    let profile = fresh_data_dir();
    let (mut chromium, devtools) = start_chromium(&profile);
    let mut browser = Browser::connect(&devtools);
    browser.open(&url);
    browser.wait_for(
        "the join form",
        "document.body !== null && document.body.dataset.socket === 'open'",
    );

    // The page joins, as a user filling in the form would.
    browser.eval(&format!(
        "document.getElementById('host').value = {}; \
         document.getElementById('name').value = 'ann (web)'; \
         document.getElementById('join').click(); true",
        js(&relay)
    ));
    browser.wait_for("the welcome", &messages_contain("you are client 0"));
    browser.wait_for(
        "the security line",
        "document.getElementById('security').innerText.startsWith('encrypted (')",
    );

    // A terminal joins; the page lists it with its key.
    let downloads = fresh_data_dir();
    let mut cli = Proc::start(&[
        "join",
        &relay,
        "--name",
        "bob",
        "--download-dir",
        downloads.to_str().expect("a UTF-8 path"),
    ]);
    cli.expect_out("admitted as 1", |l| l.starts_with("* you are client 1 "));
    browser.wait_for(
        "bob in the roster",
        "[...document.querySelectorAll('#roster li')].some(li => li.dataset.id === '1' \
         && li.querySelector('.fp'))",
    );

    // Both ways.
    browser.eval(
        "document.getElementById('to').value = '1'; \
         document.getElementById('text').value = 'hello from the page'; \
         document.getElementById('send').click(); true",
    );
    cli.expect_out_line("0 hello from the page");
    cli.send("0 hello from the terminal");
    browser.wait_for(
        "bob's message",
        &messages_contain("hello from the terminal"),
    );

    // A file picked on the page.
    let contents: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let file = fresh_data_dir().join("plan.bin");
    std::fs::write(&file, &contents).expect("a file");
    browser.pick_file("#file", &file);
    cli.expect_out("the offer", |l| l.contains("offers plan.bin"));
    cli.send("/accept 1");
    let received = cli.expect_out("the file", |l| l.starts_with("* received plan.bin"));
    let path = received.rsplit(": ").next().expect("a path");
    assert_eq!(std::fs::read(path).expect("the received file"), contents);
    browser.wait_for(
        "the delivery",
        &messages_contain("plan.bin delivered to client 1"),
    );
    browser.wait_for(
        "a full progress bar",
        "[...document.querySelectorAll('#transfers progress')].some(p => p.value === p.max)",
    );

    // A file dropped on the messages, as dragged from a file manager.
    browser.eval(
        "const dt = new DataTransfer(); \
         dt.items.add(new File(['dropped on the page\\n'], 'dropped.txt')); \
         document.getElementById('messages').dispatchEvent(\
           new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); true",
    );
    cli.expect_out("the second offer", |l| l.contains("offers dropped.txt"));
    cli.send("/accept 2");
    let received = cli.expect_out("the dropped file", |l| {
        l.starts_with("* received dropped.txt")
    });
    let path = received.rsplit(": ").next().expect("a path");
    assert_eq!(
        std::fs::read(path).expect("the received file"),
        b"dropped on the page\n"
    );
    browser.wait_for(
        "its delivery",
        &messages_contain("dropped.txt delivered to client 1"),
    );

    // The picture in the README is this page, as this run left it.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    browser.screenshot(&docs.join("web.png"));

    cli.send("/quit");
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
    web.kill();
}
