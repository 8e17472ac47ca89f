//! `p2pchat server`: the relay, logging joins, departures and refusals to stderr
//! (never what clients say to each other).

use std::net::{IpAddr, SocketAddr};

use p2pchat_core::{Limits, ServerEvent};
use p2pchat_tcp::{Relay, RelayLog, ShutdownHandle};

use crate::args::ServerArgs;

/// Runs the relay until Ctrl-C or SIGTERM; returns the exit status.
pub fn run(args: ServerArgs) -> i32 {
    let Ok(ip) = args.bind.parse::<IpAddr>() else {
        eprintln!(
            "p2pchat: --bind {}: not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)",
            args.bind
        );
        return 2;
    };
    if args.max_clients == 0 {
        eprintln!("p2pchat: --max-clients must be at least 1");
        return 2;
    }
    let limits = Limits {
        max_clients: args.max_clients,
        max_connections_per_address: args.max_per_address,
        message_rate: args.message_rate,
        message_burst: args.message_rate,
        resume_grace: std::time::Duration::from_secs(args.resume_grace),
        ..Limits::default()
    };
    let wishes = crate::keys::Wishes {
        insecure: args.insecure,
        password: crate::keys::Wishes::password_from(args.password.clone()),
        expect: None,
        // Followed, not proposed: each client picks.
        cipher: p2pchat_core::RecordCipher::fastest_here(),
    };
    let security = match wishes.security(true, p2pchat_core::Expect::Any) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("p2pchat: {e}");
            return 1;
        }
    };
    let key = security
        .identity
        .as_ref()
        .map(|i| i.public().fingerprint())
        .unwrap_or_default();
    let mut admits = vec![if args.insecure {
        "encrypted clients and, with --insecure, unencrypted ones".to_owned()
    } else {
        "encrypted clients only".to_owned()
    }];
    if security.password.is_some() {
        admits.push("with the password".into());
    } else {
        admits.push("plain-text clients (nc, telnet) too".into());
    }
    if let Some(cluster) = &args.cluster {
        if !p2pchat_cluster::valid_cluster_name(&args.cluster_name) {
            eprintln!(
                "p2pchat: --cluster-name {:?}: letters, digits, - and _ only (at most 32)",
                args.cluster_name
            );
            return 2;
        }
        admits.push(format!(
            "one relay of cluster {:?} over NATS at {cluster}",
            args.cluster_name
        ));
    }
    let resume_grace = limits.resume_grace;
    // The relay runs on this thread: its tasks share the core without locks.
    smol::block_on(async move {
        let relay = match Relay::bind(SocketAddr::new(ip, args.port), limits, security).await {
            Ok(relay) => relay,
            Err(e) => {
                eprintln!("p2pchat: {e}");
                return 1;
            }
        };
        let relay = match &args.cluster {
            Some(url) => match join_cluster(url, &args, resume_grace).await {
                Ok(link) => relay.in_cluster(link),
                Err(e) => {
                    eprintln!("p2pchat: --cluster {url}: {e}");
                    return 1;
                }
            },
            None => relay,
        };
        let local = relay
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        eprintln!(
            "p2pchat server: listening on {local} (at most {} clients; Ctrl-C stops)",
            args.max_clients
        );
        eprintln!("p2pchat server: key {key}; admits {}", admits.join(", "));
        let (handle, signal) = ShutdownHandle::new();
        if let Err(e) = ctrlc::set_handler(move || handle.shutdown()) {
            eprintln!("p2pchat server: warning: Ctrl-C will not shut down cleanly: {e}");
        }
        let (log_tx, log_rx) = async_channel::unbounded();
        let logger = smol::spawn(async move {
            while let Ok(line) = log_rx.recv().await {
                eprintln!("p2pchat server: {}", describe(&line));
            }
        });
        relay.run(log_tx, signal).await;
        logger.await;
        eprintln!("p2pchat server: stopped");
        0
    })
}

/// Connects to the cluster's NATS and starts this relay's node (on a thread of its
/// own, beside the relay's); returns the relay's link to it.
async fn join_cluster(
    url: &str,
    args: &ServerArgs,
    keep: std::time::Duration,
) -> Result<p2pchat_tcp::ClusterLink, p2pchat_cluster::BusError> {
    let bus = p2pchat_cluster::Bus::connect(url).await?;
    let (requests_tx, requests) = async_channel::unbounded();
    let (inputs, inputs_rx) = async_channel::unbounded();
    let relay_name = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let options = p2pchat_cluster::NodeOptions {
        cluster: args.cluster_name.clone(),
        relay: relay_name,
        max_clients: args.max_clients,
        // Mail waits for its reader as long as a session is held, at least a minute.
        keep: keep.max(std::time::Duration::from_secs(60)),
    };
    let (started_tx, started) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("p2pchat-cluster".into())
        .spawn(move || {
            smol::block_on(async move {
                match p2pchat_cluster::node::start(bus, options, inputs).await {
                    Ok(node) => {
                        let _ = started_tx.send(Ok(())).await;
                        node.serve(requests).await;
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e)).await;
                    }
                }
            });
        })
        .map_err(|e| p2pchat_cluster::BusError::Nats(e.to_string()))?;
    started
        .recv()
        .await
        .map_err(|_| p2pchat_cluster::BusError::Stopped)??;
    Ok(p2pchat_tcp::ClusterLink {
        requests: requests_tx,
        inputs: inputs_rx,
    })
}

fn describe(log: &RelayLog) -> String {
    let from = log.peer.map(|p| format!(" from {p}")).unwrap_or_default();
    let name = |n: &str| {
        if n.is_empty() {
            String::new()
        } else {
            format!(" {:?}", crate::format::sanitize(n))
        }
    };
    match &log.event {
        ServerEvent::Admitted { id, name: n, .. } => {
            format!("joined: client {id}{}{from}", name(n))
        }
        ServerEvent::Refused { code, reason, .. } => format!("refused{from}: {reason} ({code})"),
        ServerEvent::Exited { id } => format!("exit: client {id} sends no more"),
        ServerEvent::Left {
            id, code, detail, ..
        } => format!("left: client {id}{from}: {detail} ({code})"),
        ServerEvent::Dropped { code, detail, .. } => format!("dropped{from}: {detail} ({code})"),
        ServerEvent::Parked { id, code, .. } => {
            format!("lost: client {id} ({code}); its ID and messages are held for it to come back")
        }
        ServerEvent::Resumed { id, .. } => format!("back: client {id}{from} resumed its session"),
    }
}
