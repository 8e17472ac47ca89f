//! A relay server started by the bench as a child process, and what /proc says about it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server child.
pub struct ServerProc {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Resource use of a process, from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size now, in KiB.
    pub rss_kib: u64,
    /// Peak resident set size, in KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
}

impl ServerProc {
    /// Starts `program server` on a free loopback port with room for `max_clients`.
    /// With `insecure` it also admits clients that do not encrypt (`--insecure`).
    ///
    /// Every client comes from 127.0.0.1, and a benchmark measures what the relay can
    /// carry, so the per-address limit and the per-client message rate are off.
    pub fn start(program: &Path, max_clients: u32, insecure: bool) -> std::io::Result<ServerProc> {
        let max = max_clients.to_string();
        let mut args = vec![
            "server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--max-clients",
            &max,
            "--max-per-address",
            "0",
            "--message-rate",
            "0",
        ];
        if insecure {
            args.push("--insecure");
        }
        Self::spawn(program, &args)
    }

    /// Starts the minimal reference relay (`program bench --serve-reference`).
    pub fn start_reference(program: &Path) -> std::io::Result<ServerProc> {
        Self::spawn(program, &["bench", "--serve-reference"])
    }

    /// Starts `ncat --broker` on a free loopback port (it cannot pick one itself).
    pub fn start_ncat() -> std::io::Result<ServerProc> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
            .to_string();
        Self::spawn(
            Path::new("ncat"),
            &[
                "-v",
                "--broker",
                "--max-conns",
                "20000",
                "--listen",
                "127.0.0.1",
                &port,
            ],
        )
    }

    fn spawn(program: &Path, args: &[&str]) -> std::io::Result<ServerProc> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                return Err(std::io::Error::other("the server exited before listening"));
            };
            // "listening on ADDR" (p2pchat) or "Listening on ADDR" (ncat -v).
            if let Some(rest) = line.split("istening on ").nth(1)
                && let Some(addr) = rest.split_whitespace().next()
                && let Ok(addr) = addr.parse()
            {
                break addr;
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(ServerProc { child, addr })
    }

    /// The child's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resource use now.
    pub fn usage(&self) -> Usage {
        usage_of(self.pid())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads VmRSS, VmHWM and CPU time of `pid` (zeros where /proc is not available).
pub fn usage_of(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of /proc/PID/stat, i.e. 11 and 12 here;
    // clock ticks are 100 per second on Linux.
    Usage {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_ms: (ticks(11) + ticks(12)) * 10,
    }
}
