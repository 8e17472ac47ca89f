//! The page's WebSocket: the conversation's outputs go out as JSON text messages,
//! commands come in as JSON text messages (see [`crate::hub`]).
//!
//! hyper answers the upgrade request; the connection it hands back is the very
//! smol TCP stream it was given (with any bytes it read ahead), and async-tungstenite
//! speaks WebSocket on it from there.

use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role;
use futures_lite::StreamExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use smol::net::TcpStream;
use smol_hyper::rt::FuturesIo;

use crate::http::{Body, text};
use crate::hub::Hub;

/// The largest message a page may send (a chat line is at most a few KiB; files
/// are uploaded, not sent here).
const MAX_MESSAGE: usize = 64 * 1024;

/// Answers a WebSocket upgrade request with 101, and serves the socket once hyper
/// has handed the connection over.
pub fn upgrade(hub: Arc<Hub>, req: &mut Request<Incoming>) -> Response<Body> {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket request needs Sec-WebSocket-Key",
        );
    };
    if !is_upgrade {
        return text(
            StatusCode::BAD_REQUEST,
            "this address is the page's WebSocket",
        );
    }
    let on_upgrade = hyper::upgrade::on(req);
    smol::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let Ok(parts) = upgraded.downcast::<FuturesIo<TcpStream>>() else {
            return;
        };
        let config = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let socket = WebSocketStream::from_partially_read(
            parts.io.into_inner(),
            parts.read_buf.to_vec(),
            Role::Server,
            Some(config),
        )
        .await;
        serve(hub, socket).await;
    })
    .detach();
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Sends the page what it missed, then everything as it happens, and hands what it
/// sends to the hub, until either side closes.
async fn serve(hub: Arc<Hub>, socket: WebSocketStream<TcpStream>) {
    let (backlog, outputs) = hub.subscribe();
    let (mut to_page, mut from_page) = socket.split();
    let sending = async {
        for json in backlog {
            if to_page.send(Message::text(json)).await.is_err() {
                return;
            }
        }
        while let Ok(json) = outputs.recv().await {
            if to_page.send(Message::text(json)).await.is_err() {
                return;
            }
        }
    };
    let receiving = async {
        while let Some(Ok(message)) = from_page.next().await {
            match message {
                Message::Text(text) => hub.handle(text.as_str()),
                Message::Close(_) => return,
                // Pings are answered by tungstenite; binary has no meaning here.
                _ => {}
            }
        }
    };
    smol::future::or(sending, receiving).await;
}
