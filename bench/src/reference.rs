//! The near-limit reference: a deliberately minimal plain-text relay on smol, with no
//! protocol beyond the original app's (IDs in connection order, `ID text` lines in,
//! `FROM text` lines out, `/all text` to everyone). No limits, no checks, no
//! presence: what a Rust relay on this machine costs when it does nothing else.
//! The bench compares p2pchat against it in the same run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use async_channel::Sender;
use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};

type Clients = Rc<RefCell<HashMap<u32, Sender<Vec<u8>>>>>;

/// Serves the reference relay on `addr` until the process ends; prints its address
/// to stderr (`listening on ADDR`) first.
pub fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("reference relay: listening on {}", listener.local_addr()?);
        let clients: Clients = Rc::new(RefCell::new(HashMap::new()));
        let mut next = 0u32;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let id = next;
            next += 1;
            ex.spawn(serve_one(stream, id, clients.clone())).detach();
        }
    }))
}

async fn serve_one(stream: TcpStream, id: u32, clients: Clients) {
    let (tx, rx) = async_channel::unbounded::<Vec<u8>>();
    let _ = tx.try_send(format!("* you are client {id}\n").into_bytes());
    clients.borrow_mut().insert(id, tx);
    let mut writer = stream.clone();
    let write = async move {
        while let Ok(mut bytes) = rx.recv().await {
            // Batch whatever else is waiting into the same write.
            while let Ok(more) = rx.try_recv() {
                bytes.extend_from_slice(&more);
            }
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        let mut lines = BufReader::new(stream).lines();
        while let Some(Ok(line)) = smol::stream::StreamExt::next(&mut lines).await {
            let (head, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let out = format!("{id} {text}\n").into_bytes();
            let clients = clients.borrow();
            if head == "/all" {
                for (&other, tx) in clients.iter() {
                    if other != id {
                        let _ = tx.try_send(out.clone());
                    }
                }
            } else if let Ok(to) = head.parse::<u32>()
                && let Some(tx) = clients.get(&to)
            {
                let _ = tx.try_send(out);
            }
        }
    };
    smol::future::or(write, read).await;
    clients.borrow_mut().remove(&id);
}
