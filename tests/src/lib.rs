//! Cross-crate tests of p2pchat live in `tests/tests/`: property tests that replay
//! random many-client scenarios with faults on the simulator, checks that the
//! invariant checker catches corrupted transcripts, and snapshot tests of canonical
//! transcripts (stored in the repository's `snapshots/` folder).
//!
//! This library holds the canonical scenarios, shared by the snapshot tests and by
//! anyone who wants to replay them.

use core::time::Duration;

use p2pchat_sim::{Action, Scenario, Target, ms};

/// The original app's three-client relay session: clients 0, 1 and 2; `1 hello` from 0
/// arrives at 1 as `0 hello`; everyone says exit.
pub fn original_three_clients() -> Scenario {
    let mut s = Scenario::relay(3);
    let ann = s.join("ann", ms(0));
    let bob = s.join("bob", ms(100));
    let cy = s.join("cy", ms(200));
    s.send(ms(1_000), ann, 1, "hello");
    s.send(ms(1_500), bob, 0, "hi ann");
    s.send(ms(1_700), cy, 0, "hello from cy, with spaces");
    s.at(
        ms(2_000),
        cy,
        Action::Send {
            to: Target::All,
            text: "bye all".into(),
        },
    );
    s.at(ms(3_000), ann, Action::Exit);
    s.send(ms(3_100), bob, 0, "ann, you still hear me");
    s.at(ms(3_200), bob, Action::Exit);
    s.at(ms(3_400), cy, Action::Exit);
    s
}

/// A fourth client arrives at a full three-client relay and is refused with the reason.
pub fn fourth_client_refused() -> Scenario {
    let mut s = Scenario::relay(3);
    let clients: Vec<usize> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, name)| s.join(name, ms(100 * i as u64)))
        .collect();
    s.send(ms(1_000), clients[0], 2, "the fourth one never got in");
    for (i, &c) in clients.iter().take(3).enumerate() {
        s.at(ms(2_000 + 100 * i as u64), c, Action::Exit);
    }
    s
}

/// Direct chat: both talk, then exit, the listener (`first_listener`) or the
/// connector first; the one that exited first still receives.
pub fn direct_exit(listener_first: bool) -> Scenario {
    let mut s = Scenario::direct("lis", "con", ms(50));
    let (first, second) = if listener_first { (0, 1) } else { (1, 0) };
    let say = |text: &str| Action::Send {
        to: Target::Peer,
        text: text.into(),
    };
    s.at(ms(500), 0, say("hello from the listener"));
    s.at(ms(500), 1, say("hello from the connector"));
    s.at(ms(1_000), first, Action::Exit);
    s.at(ms(1_200), second, say("you still hear me after your exit"));
    s.at(ms(1_400), first, say("but I can no longer send"));
    s.at(ms(2_000), second, Action::Exit);
    s
}

/// Client 1 vanishes mid-conversation (no close, no more bytes); the relay notices by
/// its silence, holds its session for the grace period in case it comes back, then
/// tells the others, who go on and finish.
pub fn client_vanishes() -> Scenario {
    let mut s = Scenario::relay(3);
    let a = s.join("a", ms(0));
    let b = s.join("b", ms(100));
    let c = s.join("c", ms(200));
    s.send(ms(1_000), a, 1, "are you there?");
    s.at(ms(1_500), b, Action::Vanish);
    s.send(ms(2_000), a, 2, "b went quiet");
    s.send(ms(2_500), c, 0, "I am still here");
    s.at(ms(70_000), a, Action::Exit);
    s.at(ms(70_100), c, Action::Exit);
    s.settle = Duration::from_secs(60);
    s
}

/// A message to an ID that has left is answered with an error naming that ID.
pub fn message_to_departed_id() -> Scenario {
    let mut s = Scenario::relay(3);
    let a = s.join("a", ms(0));
    let b = s.join("b", ms(100));
    s.send(ms(500), a, 1, "before b leaves");
    s.at(ms(1_000), b, Action::Leave);
    s.send(ms(2_000), a, 1, "after b left");
    s.at(ms(3_000), a, Action::Exit);
    s
}

/// Client 1's connection is reset while a message is on its way to it and more are
/// written to it while it is away; it writes one itself meanwhile. It dials again
/// and resumes: same ID, every message once, in order, both ways.
pub fn connection_reset_and_resumed() -> Scenario {
    let mut s = Scenario::relay(3);
    let a = s.join("a", ms(0));
    let b = s.join("b", ms(100));
    s.send(ms(1_000), a, 1, "before the reset");
    s.send(ms(1_499), a, 1, "on its way during the reset");
    s.at(ms(1_500), b, Action::Reset);
    s.send(ms(1_510), b, 0, "written while away");
    s.send(ms(1_600), a, 1, "written while b is away");
    s.send(ms(3_000), a, 1, "after b is back");
    s.at(ms(4_000), a, Action::Exit);
    s.at(ms(4_100), b, Action::Exit);
    s
}

/// The relay crashes with two clients on it and is back 2 s later, knowing nothing:
/// their resumes are refused, each names the message it wrote meanwhile as not
/// confirmed delivered, and joins again as a new client with a new ID.
pub fn relay_restarts() -> Scenario {
    let mut s = Scenario::relay(3);
    let a = s.join("a", ms(0));
    let b = s.join("b", ms(100));
    // The crash comes after the receipt for the first message (a lone receipt waits
    // up to a second for company), so that only the second is unconfirmed.
    s.send(ms(1_000), a, 1, "before the crash");
    s.restart_server(ms(3_000), ms(2_000));
    s.send(ms(3_100), a, 1, "written while the relay is down");
    s.send(ms(7_500), a, 1, "after the restart");
    s.at(ms(8_500), a, Action::Exit);
    s.at(ms(8_600), b, Action::Exit);
    s
}

/// Direct chat: the connection is reset while both have messages on their way; the
/// connecting side dials again, the listening side takes it back, and the
/// conversation goes on with every message once, in order, both ways.
pub fn direct_reset_and_resumed() -> Scenario {
    let mut s = Scenario::direct("lis", "con", ms(50));
    let say = |text: &str| Action::Send {
        to: Target::Peer,
        text: text.into(),
    };
    s.at(ms(500), 0, say("before the reset"));
    s.at(ms(999), 1, say("on its way during the reset"));
    s.at(ms(1_000), 1, Action::Reset);
    s.at(ms(1_010), 0, say("written while away"));
    s.at(ms(3_000), 1, say("after the resume"));
    s.at(ms(4_000), 0, Action::Exit);
    s.at(ms(4_100), 1, Action::Exit);
    s
}
