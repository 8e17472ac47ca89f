//! The cluster's bus against a real `nats-server -js` (Debian's, started here on a
//! free loopback port with a temporary store): IDs unique and in order across
//! relays, the cluster-wide limit, per-publisher order, mailboxes that outlive the
//! relay reading them, and JetStream data that outlives a NATS restart.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use p2pchat_cluster::{Admission, Admitted, Bus, Mail, NatsServer};

fn server() -> NatsServer {
    NatsServer::start().expect("nats-server starts (apt-get install -y nats-server)")
}

fn bus(server: &NatsServer) -> Bus {
    smol::block_on(Bus::connect(&server.url())).expect("connected")
}

/// Waits for `fut`, failing after 15 s.
fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    smol::block_on(smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(Duration::from_secs(15)).await;
        None
    }))
    .unwrap_or_else(|| panic!("{what} took over 15 s"))
}

#[test]
fn three_relays_admitting_at_once_hand_out_unique_ids_in_order_up_to_the_limit() {
    let nats = server();
    let relays: Vec<Admission> = (0..3)
        .map(|_| {
            let bus = bus(&nats);
            within("opening", Admission::open(&bus, "ids")).expect("the bucket")
        })
        .collect();
    // 3 relays x 10 admissions, all at once, limit 30.
    let threads: Vec<_> = relays
        .iter()
        .cloned()
        .map(|relay| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| within("admitting", relay.admit(30)).expect("admitted"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for thread in threads {
        let admitted = thread.join().expect("the thread");
        // Each relay's own admissions come in increasing order.
        let mine: Vec<u32> = admitted
            .iter()
            .map(|a| match a {
                Admitted::Id(id) => *id,
                full => panic!("refused under the limit: {full:?}"),
            })
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        ids.extend(mine);
    }
    assert_eq!(ids, (0..30).collect::<BTreeSet<u32>>(), "unique, no gaps");
    assert_eq!(
        within("the 31st", relays[1].admit(30)).expect("an answer"),
        Admitted::Full {
            online: 30,
            limit: 30
        }
    );
    within("a leave", relays[2].release()).expect("released");
    assert_eq!(
        within("after a leave", relays[0].admit(30)).expect("an answer"),
        Admitted::Id(30),
        "a freed place takes a new ID; IDs are never reused"
    );
}

#[test]
fn a_subject_carries_one_publishers_messages_in_order() {
    let nats = server();
    let (a, b) = (bus(&nats), bus(&nats));
    let inbox = within("subscribing", a.subscribe("p2pchat.t.to.5".into())).expect("subscribed");
    for i in 0..200u32 {
        within(
            "publishing",
            b.publish("p2pchat.t.to.5".into(), Bytes::from(i.to_string())),
        )
        .expect("published");
    }
    for i in 0..200u32 {
        let m = within("receiving", inbox.recv()).expect("a message");
        assert_eq!(m.payload, Bytes::from(i.to_string()));
        assert_eq!(m.subject, "p2pchat.t.to.5");
    }
}

#[test]
fn a_mailbox_outlives_the_relay_reading_it_and_nothing_acknowledged_comes_again() {
    let nats = server();
    let (a, b, c) = (bus(&nats), bus(&nats), bus(&nats));
    let keep = Duration::from_secs(60);
    // Longer than the test: what comes again comes because the session moved, not
    // because JetStream's wait for an acknowledgement ran out.
    let ack_wait = Duration::from_secs(30);
    let mail = within("opening", Mail::open(&a, "m", keep)).expect("the stream");
    for text in ["one", "two", "three"] {
        within("storing", mail.put(7, Bytes::from(text))).expect("stored");
    }
    // Relay B reads all three, confirms two, and dies.
    let reader = within("a reader", Mail::open(&b, "m", keep))
        .expect("the stream")
        .pipe(|m| within("b's reader", m.reader(7, ack_wait, false)).expect("a consumer"));
    let letters = within("fetching", reader.fetch(10, Duration::from_secs(2))).expect("letters");
    let texts: Vec<_> = letters.iter().map(|l| l.payload.clone()).collect();
    assert_eq!(texts, ["one", "two", "three"].map(Bytes::from));
    // Its client read two: acknowledging the second acknowledges both.
    within("ack", reader.acknowledge(&letters[1])).expect("acknowledged");
    drop(reader);
    drop(b);
    // The client resumes on relay C, which takes the mailbox over: only the
    // unconfirmed one comes again, at once.
    let reader = within("c's reader", async {
        Mail::open(&c, "m", keep)
            .await?
            .reader(7, ack_wait, true)
            .await
    })
    .expect("a consumer");
    let again =
        within("fetching again", reader.fetch(10, Duration::from_secs(3))).expect("letters");
    let texts: Vec<_> = again.iter().map(|l| l.payload.clone()).collect();
    assert_eq!(texts, [Bytes::from("three")]);
    assert_eq!(again[0].sequence, letters[2].sequence);
    within("ack", reader.acknowledge(&again[0])).expect("acknowledged");
    let none = within("fetching", reader.fetch(10, Duration::from_millis(800))).expect("no error");
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn mail_stored_before_nats_is_killed_is_there_after_it_restarts() {
    let nats = server();
    let port = nats.port();
    let keep = Duration::from_secs(60);
    let a = bus(&nats);
    let mail = within("opening", Mail::open(&a, "r", keep)).expect("the stream");
    within("storing", mail.put(3, Bytes::from("kept"))).expect("stored");
    drop(mail);
    drop(a);
    let store = nats.kill();
    let nats = NatsServer::start_on(port, Some(store)).expect("restarted on its store");
    let b = bus(&nats);
    let reader = within("reader", async {
        Mail::open(&b, "r", keep)
            .await?
            .reader(3, Duration::from_secs(1), false)
            .await
    })
    .expect("a consumer");
    let letters = within("fetching", reader.fetch(10, Duration::from_secs(3))).expect("letters");
    assert_eq!(
        letters
            .iter()
            .map(|l| l.payload.clone())
            .collect::<Vec<_>>(),
        [Bytes::from("kept")]
    );
}

/// `x.pipe(f)` is `f(x)`: reads left to right in a test.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[test]
fn several_nats_urls_are_accepted_and_one_that_answers_is_used() {
    let nats = server();
    // A loopback port nothing listens on (bound, then released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| format!("nats://{a}"))
        .expect("a free port");
    let urls = format!("{dead}, {}", nats.url());
    let bus = within("connecting", Bus::connect(&urls)).expect("connected through the live one");
    let inbox =
        within("subscribing", bus.subscribe("p2pchat.t.several".into())).expect("subscribed");
    within(
        "publishing",
        bus.publish("p2pchat.t.several".into(), Bytes::from("hi")),
    )
    .expect("published");
    let m = within("receiving", inbox.recv()).expect("a message");
    assert_eq!(m.payload, Bytes::from("hi"));
}

#[test]
fn relays_starting_at_the_same_moment_both_open_the_clusters_streams() {
    let nats = server();
    let (a, b) = (bus(&nats), bus(&nats));
    let keep = Duration::from_secs(60);
    // Fresh names each round: both relays find no stream and race to make it.
    for round in 0..100 {
        let cluster = format!("race{round}");
        let (first, second) = within(
            "opening at once",
            smol::future::zip(
                async {
                    Admission::open(&a, &cluster).await?;
                    Mail::open(&a, &cluster, keep).await.map(|_| ())
                },
                async {
                    Admission::open(&b, &cluster).await?;
                    Mail::open(&b, &cluster, keep).await.map(|_| ())
                },
            ),
        );
        assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    }
}

#[test]
fn a_mailbox_opened_while_nats_restarts_is_read_once_it_is_back() {
    use p2pchat_cluster::NodeOptions;
    use p2pchat_cluster::node::start;
    use p2pchat_core::{ClientId, ClusterInput, ClusterRequest, RosterEntry};
    let nats = server();
    let port = nats.port();
    let keep = Duration::from_secs(60);
    let relay = bus(&nats);
    let (inputs, heard) = async_channel::unbounded();
    let options = NodeOptions {
        cluster: "restart".into(),
        relay: "r1".into(),
        max_clients: 10,
        keep,
    };
    let node = within("starting", start(relay, options, inputs)).expect("a node");
    let (requests, taken) = async_channel::unbounded();
    let serving = std::thread::spawn(move || smol::block_on(node.serve(taken)));
    // NATS goes away; meanwhile the relay takes a client's session over, which
    // publishes its entry and opens its mailbox: both wait for NATS.
    let store = nats.kill();
    let entry = RosterEntry {
        id: ClientId(4),
        exited: false,
        away: false,
        name: "ann".into(),
        key: None,
    };
    requests
        .try_send(ClusterRequest::Adopt(entry))
        .expect("queued");
    // Back on its store (starting it takes longer than the node takes to pick the
    // request up): a letter for the client reaches the relay.
    let nats = NatsServer::start_on(port, Some(store)).expect("restarted on its store");
    let sender = bus(&nats);
    let mail = within("opening", Mail::open(&sender, "restart", keep)).expect("the stream");
    within("storing", mail.put(4, Bytes::from("after"))).expect("stored");
    let letter = within("the letter", async {
        loop {
            match heard.recv().await {
                Ok(ClusterInput::Mail { to, frames, .. }) => break Some((to, frames)),
                Ok(_) => continue,
                Err(_) => break None,
            }
        }
    });
    assert_eq!(letter, Some((ClientId(4), b"after".to_vec())));
    drop(requests);
    let _ = serving.join();
}

#[test]
fn a_relay_does_not_overwrite_the_entry_of_a_client_that_moved_away() {
    use p2pchat_cluster::NodeOptions;
    use p2pchat_cluster::node::start;
    use p2pchat_core::{ClientId, ClusterInput, ClusterRequest, RosterEntry};
    let nats = server();
    let keep = Duration::from_secs(60);
    let node = |name: &str| {
        let (inputs, heard) = async_channel::unbounded();
        let options = NodeOptions {
            cluster: "cas".into(),
            relay: name.into(),
            max_clients: 10,
            keep,
        };
        let node = within("starting", start(bus(&nats), options, inputs)).expect("a node");
        let (requests, taken) = async_channel::unbounded();
        let serving = std::thread::spawn(move || smol::block_on(node.serve(taken)));
        (requests, heard, serving)
    };
    let (old, _, old_serving) = node("old");
    let (new, new_heard, new_serving) = node("new");
    let entry = |away| RosterEntry {
        id: ClientId(4),
        exited: false,
        away,
        name: "ann".into(),
        key: None,
    };
    old.try_send(ClusterRequest::Announce(entry(false)))
        .expect("queued");
    // The client moves to the new relay; the old one, not knowing yet, publishes
    // that it is away (as a relay cut off from the bus would once back).
    within("the old entry seen", async {
        while let Ok(input) = new_heard.recv().await {
            if matches!(input, ClusterInput::Roster(ref e) if e.id == ClientId(4)) {
                break;
            }
        }
    });
    new.try_send(ClusterRequest::Adopt(entry(false)))
        .expect("queued");
    old.try_send(ClusterRequest::Update(entry(true)))
        .expect("queued");
    // A later entry of the new relay's, read back in order behind anything the old
    // one stored: had the old relay's overwritten the new one, the new relay would
    // have been told its client moved away before this.
    new.try_send(ClusterRequest::Update(entry(false)))
        .expect("queued");
    let mut seen_new = 0;
    let moved_away = within("the new relay's entries read back", async {
        while let Ok(input) = new_heard.recv().await {
            match input {
                ClusterInput::MovedAway { id: ClientId(4) } => return true,
                ClusterInput::Roster(e) if e.id == ClientId(4) => {
                    seen_new += 1;
                    if seen_new == 2 {
                        return false;
                    }
                }
                _ => {}
            }
        }
        false
    });
    assert!(
        !moved_away,
        "the old relay's stale entry took the client back"
    );
    drop((old, new));
    let _ = (old_serving.join(), new_serving.join());
}

#[test]
fn a_port_taken_by_something_else_is_not_mistaken_for_a_started_nats_server() {
    // A relay of another test took the port between "free" and "bound": the server
    // cannot listen, and whatever answers there is not it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    match NatsServer::start_on(port, None) {
        Err(p2pchat_cluster::nats_server::StartError::Exited { port: p, .. }) => {
            assert_eq!(p, port)
        }
        Err(other) => panic!("expected the server to stop, got: {other}"),
        Ok(_) => panic!("a server that could not bind its port was taken as started"),
    }
    // And one on a port of its own starts.
    assert!(NatsServer::start().is_ok());
}
