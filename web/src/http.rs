//! The HTTP side: which requests are answered, and the checks every one passes.
//!
//! Every request must carry the token (`?token=...`), else 403. Every request must
//! name this app as its `Host` (127.0.0.1, localhost or ::1 with our port, or the
//! address given with `--bind`), which defeats DNS rebinding: a foreign site whose
//! name is made to resolve to 127.0.0.1 still sends its own name. The WebSocket and
//! uploads must also come from our own `Origin`, so that a foreign page that
//! somehow had the token still could not drive the app from the user's browser.
//! Every page is sent with a Content-Security-Policy that allows our own scripts,
//! styles and WebSocket only: no inline script, nothing from elsewhere.
//!
//! Routes: `GET /` the page, `GET /app.js`, `GET /app.css`, `GET /ws` the WebSocket,
//! `POST /upload?name=N[&to=ID]` a file to offer.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::hub::Hub;
use crate::token::{Token, query_value};

/// The page, its script and its style: embedded in the binary (no CDN, no build
/// step, nothing fetched).
const PAGE: &str = include_str!("../page/index.html");
const SCRIPT: &str = include_str!("../page/app.js");
const STYLE: &str = include_str!("../page/app.css");

/// Our own resources only; `connect-src 'self'` covers our WebSocket.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// What the request handlers share.
pub struct Site {
    /// The URL's secret.
    pub token: Token,
    /// The port we listen on.
    pub port: u16,
    /// `Host` values accepted (`127.0.0.1:PORT`, ...).
    pub hosts: Vec<String>,
    /// Bound to every interface (`--bind 0.0.0.0`): reached by names we cannot
    /// know, so any `Host` is accepted (the token still guards).
    pub any_host: bool,
    /// The conversation and its pages.
    pub hub: Arc<Hub>,
    /// Where uploads are kept until the app ends.
    pub uploads: PathBuf,
}

impl Site {
    /// Whether a request's `Origin` is this app's own: `http://` and the host the
    /// request was sent to (which [`Site::own_host`] accepted).
    fn own_origin<B>(&self, req: &Request<B>) -> bool {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        match (header(header::ORIGIN), header(header::HOST)) {
            (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
            _ => false,
        }
    }

    fn own_host(&self, host: Option<&HeaderValue>) -> bool {
        host.and_then(|h| h.to_str().ok())
            .is_some_and(|host| self.any_host || self.hosts.iter().any(|h| h == host))
    }
}

/// The response body type.
pub type Body = Full<Bytes>;

/// A response with `status`, a plain-text `text`, and the headers every response
/// carries.
pub fn text(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", text.into())
}

fn respond(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Answers one request.
pub async fn handle(site: Arc<Site>, mut req: Request<Incoming>) -> Response<Body> {
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    if !site.own_host(req.headers().get(header::HOST)) {
        return text(
            StatusCode::FORBIDDEN,
            "forbidden: this app answers to 127.0.0.1, localhost and ::1 only (Host header)",
        );
    }
    let token_ok = query_value(query, "token").is_some_and(|t| site.token.matches(&t));
    if !token_ok {
        return text(
            StatusCode::FORBIDDEN,
            "forbidden: open the URL that `p2pchat web` printed (it carries the token)",
        );
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/") => {
            let page = PAGE.replace("{{TOKEN}}", site.token.as_str());
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        (Method::GET, "/app.js") => respond(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            SCRIPT.as_bytes(),
        ),
        (Method::GET, "/app.css") => {
            respond(StatusCode::OK, "text/css; charset=utf-8", STYLE.as_bytes())
        }
        (Method::GET, "/ws") => {
            if !site.own_origin(&req) {
                return text(
                    StatusCode::FORBIDDEN,
                    "forbidden: the WebSocket is for this app's own page (Origin)",
                );
            }
            crate::socket::upgrade(site.hub.clone(), &mut req)
        }
        (Method::POST, "/upload") => {
            if !site.own_origin(&req) {
                return text(
                    StatusCode::FORBIDDEN,
                    "forbidden: uploads come from this app's own page (Origin)",
                );
            }
            upload(&site, query, req.into_body()).await
        }
        (_, "/" | "/app.js" | "/app.css" | "/ws" | "/upload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `POST /upload?name=NAME[&to=ID]`: the body is written to a file of its own under
/// the uploads folder, then offered in the conversation (to client `to` on a relay).
async fn upload(site: &Site, query: Option<&str>, mut body: Incoming) -> Response<Body> {
    let name = query_value(query, "name").unwrap_or_default();
    let name = p2pchat_client::transfer::safe_name(&name);
    let to = match query_value(query, "to").filter(|t| !t.is_empty()) {
        None => None,
        Some(to) => match to.parse::<u32>() {
            Ok(to) => Some(to),
            Err(_) => return text(StatusCode::BAD_REQUEST, format!("to={to}: not a client ID")),
        },
    };
    let dir = match unique_folder(&site.uploads) {
        Ok(dir) => dir,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make a folder under {}: {e}", site.uploads.display()),
            );
        }
    };
    let path = dir.join(&name);
    let mut file = match std::fs::File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot create {}: {e}", path.display()),
            );
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("the upload broke off: {e}"),
                );
            }
        };
        // A local file takes a chunk of a few KiB at once: written in place.
        if let Ok(data) = frame.into_data()
            && let Err(e) = std::io::Write::write_all(&mut file, &data)
        {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", path.display()),
            );
        }
    }
    if let Err(e) = file.sync_all() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write {}: {e}", path.display()),
        );
    }
    match site.hub.offer(to, path) {
        Ok(()) => text(StatusCode::OK, format!("offering {name}")),
        Err(why) => text(StatusCode::CONFLICT, why),
    }
}

/// A new folder under `base` (one per upload, so that two files of one name do not
/// meet).
fn unique_folder(base: &std::path::Path) -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let dir = base.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
        match std::fs::create_dir_all(base).and_then(|()| std::fs::create_dir(&dir)) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
