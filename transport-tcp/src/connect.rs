//! Opening connections and listeners, with errors that say what to do.

use std::net::SocketAddr;
use std::time::Duration;

use smol::net::{TcpListener, TcpStream};

use crate::error::{BindError, ConnectError};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `host` (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`); a missing port
/// means `default_port`.
pub async fn resolve(host: &str, default_port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, default_port)]);
    }
    let with_port = if has_port(host) {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    let addrs = smol::net::resolve(with_port.as_str())
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?;
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

/// Whether `host` ends in `:PORT` (and is not a bare IPv6 address).
fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((name, port)) => !name.contains(':') && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Connects to the first address of `host` that answers: a name's addresses in turn,
/// and several hosts given comma-separated (`HOST1:PORT1,HOST2:PORT2`, the relays of
/// a cluster) in turn. `hint` names the command that should be listening, for the
/// error message.
pub async fn connect(
    host: &str,
    default_port: u16,
    hint: &'static str,
) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for one in host.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        match connect_one(one, default_port, hint).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NoAddress {
        host: host.to_owned(),
    }))
}

/// [`connect`] for one host.
async fn connect_one(
    host: &str,
    default_port: u16,
    hint: &'static str,
) -> Result<TcpStream, ConnectError> {
    let addrs = resolve(host, default_port).await?;
    let mut last = None;
    for addr in addrs {
        let attempt = smol::future::or(async { Some(TcpStream::connect(addr).await) }, async {
            smol::Timer::after(CONNECT_TIMEOUT).await;
            None
        })
        .await;
        match attempt {
            Some(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(ConnectError::Refused { addr, hint });
            }
            Some(Err(source)) => last = Some(ConnectError::Other { addr, source }),
            None => {
                last = Some(ConnectError::TimedOut {
                    addr,
                    secs: CONNECT_TIMEOUT.as_secs(),
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NoAddress {
        host: host.to_owned(),
    }))
}

/// How a session dials `host` again after a lost connection (see
/// [`crate::prepare_with_redial`]): as [`connect`], each time afresh, so that a host
/// whose address changed is found again.
pub fn redial_to(host: String, default_port: u16, hint: &'static str) -> crate::Redial {
    Box::new(move || {
        let host = host.clone();
        Box::pin(async move {
            connect(&host, default_port, hint)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    })
}

/// Connections the kernel completes and queues before the program accepts them.
///
/// The standard library listens with 128; a relay that faces a burst of clients (a
/// reconnect storm, the load generator) overflows that while it is busy, and each
/// overflow costs the client a SYN retransmit: a second or more of waiting. The kernel
/// caps it at `net.core.somaxconn` anyway.
const LISTEN_BACKLOG: i32 = 4096;

/// Opens a listening socket.
pub async fn listen(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let open = || -> std::io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        // As the standard library does: a restarted server can bind at once.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        TcpListener::try_from(std::net::TcpListener::from(socket))
    };
    open().map_err(|e| BindError::from_io(addr, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_recognised_without_mistaking_ipv6() {
        assert!(has_port("example.org:7"));
        assert!(!has_port("example.org"));
        assert!(!has_port("fe80::1"));
    }

    #[test]
    fn literal_addresses_resolve_with_the_default_port() {
        let v4 = smol::block_on(resolve("127.0.0.1", 65432)).unwrap();
        assert_eq!(v4, vec!["127.0.0.1:65432".parse().unwrap()]);
        let v6 = smol::block_on(resolve("::1", 65432)).unwrap();
        assert_eq!(v6, vec!["[::1]:65432".parse().unwrap()]);
        let explicit = smol::block_on(resolve("[::1]:9", 65432)).unwrap();
        assert_eq!(explicit, vec!["[::1]:9".parse().unwrap()]);
    }
}
