//! A `nats-server` of our own, for tests and benchmarks: started with JetStream on a
//! free loopback port and a temporary store, stopped (and its store removed) when
//! dropped. Debian's `nats-server` package (2.9) provides the binary; `.ci/run`
//! installs it when missing.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const START_WITHIN: Duration = Duration::from_secs(10);

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The binary is not there.
    #[error(
        "cannot run {binary}: {source} (install Debian's nats-server: `apt-get install -y nats-server`)"
    )]
    Spawn {
        /// What was run.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// No free port, or no temporary folder.
    #[error("cannot prepare the server: {0}")]
    Prepare(std::io::Error),
    /// It never accepted a connection.
    #[error("nats-server did not accept connections on 127.0.0.1:{port} within {START_WITHIN:?}")]
    NotListening {
        /// The port.
        port: u16,
    },
    /// It stopped before it listened (most often: the port was taken meanwhile).
    #[error("nats-server on 127.0.0.1:{port} stopped before it listened ({status})")]
    Exited {
        /// The port.
        port: u16,
        /// How it ended.
        status: std::process::ExitStatus,
    },
}

/// Attempts at a free port before [`NatsServer::start`] gives up: a port found free
/// can be taken by another process before the server binds it.
const PORT_ATTEMPTS: usize = 5;

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Child,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Starts one (the binary is `$NATS_SERVER` or `nats-server` on the PATH).
    pub fn start() -> Result<NatsServer, StartError> {
        let mut attempt = 0;
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(StartError::Prepare)?
                .port();
            attempt += 1;
            match NatsServer::start_on(port, None) {
                Err(StartError::Exited { .. }) if attempt < PORT_ATTEMPTS => continue,
                started => return started,
            }
        }
    }

    /// Starts one on `port` with the store at `store` (a new temporary folder when
    /// `None`): restarting a server on its port and store keeps its JetStream data.
    pub fn start_on(port: u16, store: Option<PathBuf>) -> Result<NatsServer, StartError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // A name of its own, which it says in its greeting: how it is told apart from
        // whatever else may take the port meanwhile.
        let name = format!(
            "p2pchat-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let store = match store {
            Some(store) => store,
            None => {
                let dir = std::env::temp_dir().join(format!("{name}-store"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(StartError::Prepare)?;
                dir
            }
        };
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-n", &name])
            .args(["-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| StartError::Spawn { binary, source })?;
        let mut server = NatsServer { child, port, store };
        let deadline = Instant::now() + START_WITHIN;
        // Ready when *it* answers: whatever else took the port meanwhile (a relay or
        // a NATS server of another test) accepts connections too, but does not greet
        // with this server's name.
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(StartError::Exited { port, status });
            }
            if greets_as(port, &name) {
                break;
            }
            if Instant::now() > deadline {
                return Err(StartError::NotListening { port });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it keeps JetStream's data.
    pub fn store(&self) -> &std::path::Path {
        &self.store
    }

    /// Stops it at once (SIGKILL), keeping its store, as a crash would.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let store = std::mem::take(&mut self.store);
        std::mem::forget(self);
        store
    }
}

/// Whether the NATS server named `name` listens on `port`: a NATS server sends
/// `INFO {..."server_name":"NAME"...}` and a newline to every new connection at once.
fn greets_as(port: u16, name: &str) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            break end;
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 && line.len() < 64 * 1024 => line.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    };
    let greeting = String::from_utf8_lossy(&line[..end]);
    greeting.starts_with("INFO ") && greeting.contains(&format!("\"server_name\":\"{name}\""))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.store.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}
