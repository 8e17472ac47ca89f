//! # p2pchat-web
//!
//! `p2pchat web`: p2pchat in the browser, as a local web app on the client library
//! (`p2pchat_client`), the way Jupyter and Syncthing's GUI are: a server on
//! 127.0.0.1 serving one page, embedded in the binary, reached through a URL that
//! carries a secret token. The page joins a relay or holds a direct conversation,
//! and its events arrive over a WebSocket as the same JSON objects `--json` prints.
//!
//! - [`token`]: the secret in the URL, and reading a query.
//! - [`http`]: the routes, and the checks each request passes (token, Host,
//!   Origin, Content-Security-Policy).
//! - [`socket`]: the page's WebSocket.
//! - [`hub`]: the conversation the page drives, and the pages watching it.

pub mod http;
pub mod hub;
pub mod socket;
pub mod token;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use smol::net::TcpListener;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::http::Site;
use crate::hub::{Hub, HubOptions};
use crate::token::Token;

/// The port `p2pchat web` tries first.
pub const DEFAULT_PORT: u16 = 8432;

/// How to serve the app.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// The address to listen on (127.0.0.1 unless the user asks otherwise).
    pub bind: IpAddr,
    /// The port (0: any free one).
    pub port: u16,
    /// When `port` is taken, take a free one instead of failing (for the default
    /// port; a port the user chose is theirs to change).
    pub fall_back: bool,
    /// The data folder: identity, known keys, history, uploads waiting to be sent.
    pub data_dir: Option<PathBuf>,
    /// Where accepted files go.
    pub download_dir: PathBuf,
}

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The port could not be had.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No randomness for the token.
    #[error("no randomness from the system for the token: {0}")]
    Token(getrandom::Error),
}

/// The app, listening, before it serves.
pub struct WebApp {
    listener: TcpListener,
    site: Arc<Site>,
    /// The port asked for, when it was taken and another was used.
    taken: Option<u16>,
}

impl WebApp {
    /// Listens (falling back to a free port if allowed and needed) and makes the
    /// token.
    pub async fn bind(options: WebOptions) -> Result<WebApp, WebError> {
        let addr = SocketAddr::new(options.bind, options.port);
        let (listener, taken) = match TcpListener::bind(addr).await {
            Ok(l) => (l, None),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && options.fall_back => {
                let any = SocketAddr::new(options.bind, 0);
                let l = TcpListener::bind(any)
                    .await
                    .map_err(|source| WebError::Bind { addr: any, source })?;
                (l, Some(options.port))
            }
            Err(source) => return Err(WebError::Bind { addr, source }),
        };
        let port = listener
            .local_addr()
            .map_err(|source| WebError::Bind { addr, source })?
            .port();
        let uploads = options
            .data_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join("web-uploads")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&uploads);
        let hub = Hub::new(HubOptions {
            data_dir: options.data_dir,
            download_dir: options.download_dir,
        });
        let site = Site {
            token: Token::random().map_err(WebError::Token)?,
            port,
            hosts: hosts(options.bind, port),
            any_host: options.bind.is_unspecified(),
            hub,
            uploads,
        };
        Ok(WebApp {
            listener,
            site: Arc::new(site),
            taken,
        })
    }

    /// The URL to open: `http://127.0.0.1:PORT/?token=...`.
    pub fn url(&self) -> String {
        let host = match self.listener.local_addr() {
            Ok(a) if !a.ip().is_unspecified() => {
                SocketAddr::new(a.ip(), self.site.port).to_string()
            }
            _ => format!("127.0.0.1:{}", self.site.port),
        };
        format!("http://{host}/?token={}", self.site.token.as_str())
    }

    /// The port asked for, if it was taken and another one is used instead.
    pub fn port_taken(&self) -> Option<u16> {
        self.taken
    }

    /// Serves until the process ends: each connection on a task of its own.
    pub async fn run(self) -> std::io::Result<()> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let site = self.site.clone();
            smol::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let site = site.clone();
                    async move { Ok::<_, Infallible>(http::handle(site, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(SmolTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(FuturesIo::new(stream), service)
                    .with_upgrades()
                    .await;
            })
            .detach();
        }
    }

    /// Where files uploaded for sending are kept (copies; remove it when the app
    /// ends).
    pub fn uploads(&self) -> &std::path::Path {
        &self.site.uploads
    }
}

/// The `Host` values this app answers to: the loopback names with our port, and
/// the address it was bound to.
fn hosts(bind: IpAddr, port: u16) -> Vec<String> {
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !bind.is_loopback() && !bind.is_unspecified() {
        hosts.push(SocketAddr::new(bind, port).to_string());
    }
    hosts
}
