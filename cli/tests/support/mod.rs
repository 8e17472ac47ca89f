//! Running the real `p2pchat` binary with piped stdin/stdout, and waiting for lines
//! (never sleeping for fixed times).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long any expected line may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running `p2pchat` process.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    pub out_seen: Vec<String>,
    pub err_seen: Vec<String>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_in(args, &fresh_data_dir())
    }

    /// Starts with `XDG_DATA_HOME` (where history lives) set to `data`.
    pub fn start_in(args: &[&str], data: &std::path::Path) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_p2pchat"));
        command.args(args);
        Proc::spawn(command, data)
    }

    /// Starts with at most `limit` open files (through `sh -c 'ulimit -n'`).
    pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> Proc {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_p2pchat"))
            .args(args);
        Proc::spawn(command, &fresh_data_dir())
    }

    /// Starts in a terminal of its own (a pseudo-terminal, through util-linux's
    /// `script`), so that it runs its line editor as it does for a person; its
    /// output arrives with the terminal's escape sequences in it.
    pub fn start_in_terminal(args: &[&str], data: &std::path::Path) -> Proc {
        let mut line = String::from(env!("CARGO_BIN_EXE_p2pchat"));
        for arg in args {
            line.push_str(" '");
            line.push_str(&arg.replace('\'', "'\\''"));
            line.push('\'');
        }
        let mut command = Command::new("script");
        command
            .args(["-qfec", &line, "/dev/null"])
            .env("COLUMNS", "100");
        Proc::spawn(command, data)
    }

    fn spawn(mut command: Command, data: &std::path::Path) -> Proc {
        let mut child = command
            .env("XDG_DATA_HOME", data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the p2pchat binary starts");
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Proc {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        }
    }

    /// Types a line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (end of input means exit).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line satisfying `pred`; returns it.
    pub fn expect_out(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(
            &self.out,
            &mut self.out_seen,
            what,
            pred,
            "stdout",
            &self.err_seen,
        )
    }

    /// Waits for a stderr line satisfying `pred`; returns it.
    pub fn expect_err(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut seen = std::mem::take(&mut self.err_seen);
        let line = wait_line(&self.err, &mut seen, what, pred, "stderr", &self.out_seen);
        self.err_seen = seen;
        line
    }

    /// Waits for the exact stdout line.
    pub fn expect_out_line(&mut self, line: &str) {
        self.expect_out(line, |l| l == line);
    }

    /// Waits for a stdout line that reads `line` once the key tags of relay lists
    /// (`[3f2a-91c0]`, `[no key: plain text]`) are left out.
    pub fn expect_out_shown(&mut self, line: &str) -> String {
        self.expect_out(line, |l| without_key_tags(l) == line)
    }

    /// Waits for the process to end (at most [`WAIT`]); returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let pid = self.child.id();
        let (tx, rx) = channel();
        let status = std::thread::scope(|scope| {
            let child = &mut self.child;
            scope.spawn(move || {
                let _ = tx.send(child.wait());
            });
            match rx.recv_timeout(WAIT) {
                Ok(Ok(status)) => Some(status),
                _ => {
                    // Too long: kill it, which also ends the waiting thread.
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(pid.to_string())
                        .status();
                    None
                }
            }
        });
        // Collect what is left for diagnostics.
        self.out_seen.extend(self.out.try_iter());
        self.err_seen.extend(self.err.try_iter());
        match status {
            Some(status) => status.code().unwrap_or(-1),
            None => panic!(
                "process did not exit within {WAIT:?}; stdout {:?}; stderr {:?}",
                self.out_seen, self.err_seen
            ),
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// After the process ended: takes every line it wrote that was not read yet (up
    /// to the end of its output, at most [`WAIT`]) into `out_seen` and `err_seen`.
    pub fn drain(&mut self) {
        let until = std::time::Instant::now() + WAIT;
        for (rx, seen) in [
            (&self.out, &mut self.out_seen),
            (&self.err, &mut self.err_seen),
        ] {
            while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(line) => seen.push(line),
                    Err(_) => break,
                }
            }
        }
    }

    /// SIGTERM (a clean shutdown request, like Ctrl-C).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
    stream: &str,
    other: &[String],
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "no {stream} line {what:?}; {stream} so far: {seen:?}; other stream: {other:?}"
                )
            }
        }
    }
}

/// A new, empty folder under the system's temp folder.
pub fn fresh_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "p2pchat-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `p2pchat server` on a free loopback port; returns it and the port.
pub fn server(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["server", "--bind", "127.0.0.1", "--port", "0"];
    args.extend_from_slice(extra);
    let mut p = Proc::start(&args);
    let line = p.expect_err("listening line", |l| l.contains("listening on"));
    (p, port_in(&line))
}

/// Starts `p2pchat listen` (no history) on a free loopback port, with `extra`
/// options; returns it and its `127.0.0.1:PORT`.
pub fn listener(extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "listen",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--no-history",
    ];
    args.extend_from_slice(extra);
    let mut l = Proc::start(&args);
    let line = l.expect_out("listening", |x| x.starts_with("* listening on"));
    (l, format!("127.0.0.1:{}", port_in(&line)))
}

/// The port in the first `127.0.0.1:PORT` of a line.
pub fn port_in(line: &str) -> u16 {
    let at = line.find("127.0.0.1:").expect("an address in the line") + "127.0.0.1:".len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Joins the relay on `port`; waits until admitted with the given ID.
pub fn join(port: u16, name: &str, id: u32) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    let mut p = Proc::start(&["join", &addr, "--name", name]);
    p.expect_out(&format!("admitted as {id}"), |l| {
        l.starts_with(&format!("* you are client {id} "))
    });
    p
}

/// `line` without the ` [...]` key tags that relay lists put after each client.
pub fn without_key_tags(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find(" [") {
        let Some(len) = rest[start..].find(']') else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// A proxy in front of a loopback server whose connections can be cut on demand, as
/// a network failure would: both sides see their connection end, and whatever was
/// on its way through the proxy is lost. A client that dials again gets a new,
/// working connection.
pub struct CuttableProxy {
    /// The port clients connect to.
    pub port: u16,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttableProxy {
    /// A proxy to `127.0.0.1:target`.
    pub fn start(target: u16) -> CuttableProxy {
        use std::io::Read as _;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (open2, accepted2) = (open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                accepted2.fetch_add(1, Ordering::SeqCst);
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableProxy {
            port,
            open,
            accepted,
        }
    }

    /// Cuts every connection through the proxy now.
    pub fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// How many connections the proxy has carried so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}
