//! A `nats-server` of our own, for tests and benchmarks: started with JetStream on a
//! free loopback port and a temporary store, stopped (and its store removed) when
//! dropped. Debian's `nats-server` package (2.9) provides the binary; `.ci/run`
//! installs it when missing.

use std::net::TcpStream;
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
}

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Child,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Starts one (the binary is `$NATS_SERVER` or `nats-server` on the PATH).
    pub fn start() -> Result<NatsServer, StartError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(StartError::Prepare)?
            .port();
        NatsServer::start_on(port, None)
    }

    /// Starts one on `port` with the store at `store` (a new temporary folder when
    /// `None`): restarting a server on its port and store keeps its JetStream data.
    pub fn start_on(port: u16, store: Option<PathBuf>) -> Result<NatsServer, StartError> {
        let store = match store {
            Some(store) => store,
            None => {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "p2pchat-nats-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(StartError::Prepare)?;
                dir
            }
        };
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| StartError::Spawn { binary, source })?;
        let server = NatsServer { child, port, store };
        let deadline = Instant::now() + START_WITHIN;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
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

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.store.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}
