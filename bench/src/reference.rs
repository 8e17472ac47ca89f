//! The near-limit reference: a deliberately minimal plain-text relay on smol, with no
//! protocol beyond the original app's (IDs in connection order, `ID text` lines in,
//! `FROM text` lines out, `/all text` to everyone). No limits, no checks, no presence,
//! no bounds: what a Rust relay on this machine costs when it does nothing else.
//!
//! It is built the way a relay is fastest on smol, so that the comparison is against
//! the limit and not against a strawman: one thread, one reader task per connection,
//! each read routed at once and written straight to the target sockets (one write per
//! target per read), and a writer task only for a socket that is full. The bench
//! compares p2pchat against it in the same run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;

use smol::{Async, LocalExecutor};

/// One client: its socket and what it has not been able to take yet.
struct Client {
    stream: Arc<Async<TcpStream>>,
    /// Bytes routed to it during the current read, written at the end of it.
    out: Vec<u8>,
    /// A writer task is draining `out` (the socket was full).
    blocked: bool,
}

#[derive(Default)]
struct Relay {
    clients: HashMap<u32, Client>,
    /// Clients with bytes routed to them during the current read.
    dirty: Vec<u32>,
}

type Shared = Rc<RefCell<Relay>>;

/// Serves the reference relay on `addr` until the process ends; prints its address
/// to stderr (`listening on ADDR`) first.
pub fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let ex = Rc::new(LocalExecutor::new());
    smol::block_on(ex.run(async {
        let listener = Async::<std::net::TcpListener>::bind(addr)?;
        eprintln!(
            "reference relay: listening on {}",
            listener.get_ref().local_addr()?
        );
        let relay: Shared = Rc::default();
        let mut next = 0u32;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.get_ref().set_nodelay(true);
            let stream = Arc::new(stream);
            let id = next;
            next += 1;
            let greeting = format!("* you are client {id}\n");
            relay.borrow_mut().clients.insert(
                id,
                Client {
                    stream: stream.clone(),
                    out: greeting.into_bytes(),
                    blocked: false,
                },
            );
            flush(&relay, &ex, id);
            ex.spawn(serve_one(relay.clone(), ex.clone(), stream, id))
                .detach();
        }
    }))
}

async fn serve_one(
    relay: Shared,
    ex: Rc<LocalExecutor<'static>>,
    stream: Arc<Async<TcpStream>>,
    id: u32,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line_start = 0;
    let mut filled = 0;
    loop {
        if stream.readable().await.is_err() {
            break;
        }
        let n = match stream.get_ref().read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        filled += n;
        {
            let mut r = relay.borrow_mut();
            while let Some(end) = buf[line_start..filled].iter().position(|&b| b == b'\n') {
                route(&mut r, id, &buf[line_start..line_start + end]);
                line_start += end + 1;
            }
        }
        let dirty = std::mem::take(&mut relay.borrow_mut().dirty);
        for target in dirty {
            flush(&relay, &ex, target);
        }
        // Keep the unfinished line at the front of the buffer.
        buf.copy_within(line_start..filled, 0);
        filled -= line_start;
        line_start = 0;
        if filled == buf.len() {
            break; // a line longer than the buffer: not the original app's
        }
    }
    relay.borrow_mut().clients.remove(&id);
}

/// Appends `FROM text` to the line's target (or to everyone else for `/all`).
fn route(r: &mut Relay, from: u32, line: &[u8]) {
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return;
    };
    let (head, text) = (&line[..space], &line[space + 1..]);
    let push = |r: &mut Relay, to: u32| {
        if let Some(c) = r.clients.get_mut(&to) {
            if c.out.is_empty() && !c.blocked {
                r.dirty.push(to);
            }
            let _ = write!(c.out, "{from} ");
            c.out.extend_from_slice(text);
            c.out.push(b'\n');
        }
    };
    if head == b"/all" {
        let others: Vec<u32> = r.clients.keys().copied().filter(|&k| k != from).collect();
        for to in others {
            push(r, to);
        }
    } else if let Some(to) = std::str::from_utf8(head).ok().and_then(|h| h.parse().ok()) {
        push(r, to);
    }
}

/// Writes what is pending for `id` now; a full socket gets a writer task.
fn flush(relay: &Shared, ex: &Rc<LocalExecutor<'static>>, id: u32) {
    let mut r = relay.borrow_mut();
    let Some(c) = r.clients.get_mut(&id) else {
        return;
    };
    if c.blocked || c.out.is_empty() {
        return;
    }
    let written = match c.stream.get_ref().write(&c.out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => c.out.len(),
    };
    c.out.drain(..written);
    if !c.out.is_empty() {
        c.blocked = true;
        let stream = c.stream.clone();
        let relay = relay.clone();
        ex.spawn(async move {
            loop {
                let pending = {
                    let mut r = relay.borrow_mut();
                    let Some(c) = r.clients.get_mut(&id) else {
                        return;
                    };
                    if c.out.is_empty() {
                        c.blocked = false;
                        return;
                    }
                    std::mem::take(&mut c.out)
                };
                let mut done = 0;
                while done < pending.len() {
                    match stream.write_with(|s| (&*s).write(&pending[done..])).await {
                        Ok(n) if n > 0 => done += n,
                        _ => return,
                    }
                }
            }
        })
        .detach();
    }
}
