//! Random scenarios from a handful of numbers, so that a failing case is replayed by
//! one command line: `p2pchat sim --seed N --clients C --messages M --max-clients K
//! --faults ...`. Property tests shrink those numbers, not the scenario itself.

use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use p2pchat_core::Limits;

use crate::rng::Rng;
use crate::scenario::{Action, ClientPlan, NetworkConfig, Scenario, Target, Topology};

/// Which faults a random scenario may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultSet {
    /// Writes split into random pieces, down to single bytes; reads not always merged.
    pub split: bool,
    /// Random extra delay per piece.
    pub jitter: bool,
    /// Connection resets.
    pub reset: bool,
    /// Readers that stop reading for a while (with small buffers and queue bounds, so
    /// backpressure and slow-consumer cut-offs happen).
    pub stall: bool,
    /// Links that go dead without a word.
    pub cut: bool,
    /// Clients whose machine disappears.
    pub vanish: bool,
    /// Clients that quit and start again as new clients after a reset or a cut.
    pub reconnect: bool,
    /// The relay crashes and restarts (every connection reset, every session lost).
    pub restart: bool,
    /// Client processes killed (`kill -9`) and started again, from their saved
    /// sessions only.
    pub crash: bool,
}

const NAMES: [&str; 9] = [
    "split",
    "jitter",
    "reset",
    "stall",
    "cut",
    "vanish",
    "reconnect",
    "restart",
    "crash",
];

impl FaultSet {
    /// Every fault kind.
    pub fn all() -> Self {
        FaultSet {
            split: true,
            jitter: true,
            reset: true,
            stall: true,
            cut: true,
            vanish: true,
            reconnect: true,
            restart: true,
            crash: true,
        }
    }

    fn flags(&self) -> [bool; 9] {
        [
            self.split,
            self.jitter,
            self.reset,
            self.stall,
            self.cut,
            self.vanish,
            self.reconnect,
            self.restart,
            self.crash,
        ]
    }

    /// From nine flags in the order of [`FaultSet`]'s fields.
    pub fn from_flags(f: [bool; 9]) -> Self {
        FaultSet {
            split: f[0],
            jitter: f[1],
            reset: f[2],
            stall: f[3],
            cut: f[4],
            vanish: f[5],
            reconnect: f[6],
            restart: f[7],
            crash: f[8],
        }
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = NAMES
            .iter()
            .zip(self.flags())
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

impl FromStr for FaultSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "" => return Ok(FaultSet::default()),
            "all" => return Ok(FaultSet::all()),
            _ => {}
        }
        let mut flags = [false; 9];
        for part in s.split(',') {
            let Some(i) = NAMES.iter().position(|n| *n == part.trim()) else {
                return Err(format!(
                    "unknown fault {part:?}; known: all, none, {}",
                    NAMES.join(", ")
                ));
            };
            flags[i] = true;
        }
        Ok(FaultSet::from_flags(flags))
    }
}

/// How the messages of a random scenario are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Traffic {
    /// From a random client to a random ID; one in ten to everyone and one in ten to an
    /// ID nobody holds. The harshest mix for small runs, but at scale every client
    /// ends up agreeing keys with every other (n² key agreements on one core).
    #[default]
    Uniform,
    /// Shaped like real chat: each client talks with a few others, its favourites
    /// more (Zipf-like), a few announcers write to everyone now and then (1 in 100
    /// messages, 1 in n past 100 clients), and 1 in 200 messages goes to an ID nobody
    /// holds. Key agreements grow with the
    /// clients, not their square, so runs of thousands of clients stay fast while
    /// every agreement is still real X25519.
    Chat,
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Traffic::Uniform => "uniform",
            Traffic::Chat => "chat",
        })
    }
}

impl FromStr for Traffic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Traffic::Uniform),
            "chat" => Ok(Traffic::Chat),
            other => Err(format!(
                "unknown traffic shape {other:?}; known: uniform, chat"
            )),
        }
    }
}

/// The numbers a random scenario is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomSpec {
    /// Seeds both the scenario and the run.
    pub seed: u64,
    /// Clients (for direct chat: ignored, always 2).
    pub clients: u32,
    /// Messages in all.
    pub messages: u32,
    /// The relay's limit.
    pub max_clients: u32,
    /// Which faults may occur.
    pub faults: FaultSet,
    /// Direct chat instead of a relay.
    pub direct: bool,
    /// Files sent (up to 200 KB each), beside the messages.
    pub files: u32,
    /// How messages are addressed.
    pub traffic: Traffic,
}

impl RandomSpec {
    /// The command line that replays this run.
    pub fn command(&self) -> String {
        let mut cmd = format!(
            "p2pchat sim --seed {} --clients {} --messages {} --max-clients {} --faults {}",
            self.seed, self.clients, self.messages, self.max_clients, self.faults
        );
        if self.files > 0 {
            cmd.push_str(&format!(" --files {}", self.files));
        }
        if self.direct {
            cmd.push_str(" --direct");
        }
        if self.traffic != Traffic::Uniform {
            cmd.push_str(&format!(" --traffic {}", self.traffic));
        }
        cmd
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Builds the scenario for `spec` (deterministically).
pub fn random_scenario(spec: &RandomSpec) -> Scenario {
    let mut rng = Rng::new(spec.seed ^ 0x5CE_A210);
    let f = spec.faults;
    let network = NetworkConfig {
        latency: ms(rng.between(1, 20)),
        jitter: if f.jitter {
            ms(rng.between(1, 15))
        } else {
            Duration::ZERO
        },
        // Past 16 clients the smallest pieces drop out: a simulated event per byte
        // would make a thousand-client run a run of byte events and nothing else.
        max_chunk: if f.split {
            let smallest = match if spec.direct { 2 } else { spec.clients } {
                0..=16 => 1,
                17..=200 => 17,
                _ => 200,
            };
            [1, 3, 17, 200, 1500][rng.below(5) as usize].max(smallest)
        } else {
            64 * 1024
        },
        coalesce: !f.split || rng.chance(50),
        // Narrow links for every client (the stall fault's setting) are one fault
        // that hits the whole run at once, so past 16 clients they widen: on 512-byte
        // buffers a thousand clients would spend the run waiting for their rosters.
        buffer: if f.stall {
            let narrowest = match if spec.direct { 2 } else { spec.clients } {
                0..=16 => 512,
                17..=200 => 4096,
                _ => 16_384,
            };
            [512, 4096, 65_536][rng.below(3) as usize].max(narrowest)
        } else {
            256 * 1024
        },
    };
    let limits = Limits {
        max_clients: spec.max_clients.max(1),
        // Sometimes a relay past its presence limit, where exit completion must work
        // without join/exit/leave notices.
        presence_limit: if rng.chance(30) {
            rng.between(1, 4) as u32
        } else {
            256
        },
        max_outbound_bytes: if f.stall {
            8 * 1024
        } else {
            Limits::default().max_outbound_bytes
        },
        ..Limits::default()
    };
    let n = if spec.direct {
        2
    } else {
        spec.clients.max(1) as usize
    };
    let mut clients: Vec<ClientPlan> = (0..n)
        .map(|i| ClientPlan {
            name: format!("u{i}"),
            join_at: if spec.direct {
                ms(i as u64 * 10)
            } else {
                ms(rng.below(2_000))
            },
            actions: Vec::new(),
        })
        .collect();
    // Messages, each after its sender joined.
    let mut last = ms(2_000);
    match spec.traffic {
        _ if spec.direct => uniform_messages(&mut rng, spec, &mut clients, &mut last),
        Traffic::Uniform => uniform_messages(&mut rng, spec, &mut clients, &mut last),
        Traffic::Chat => chat_messages(&mut rng, spec, &mut clients, &mut last),
    }
    // Files, each after its sender joined.
    for _ in 0..spec.files {
        let s = rng.below(n as u64) as usize;
        let t = clients[s].join_at + ms(rng.between(1, 8_000));
        last = last.max(t);
        let to = if spec.direct {
            Target::Peer
        } else {
            Target::Id(rng.below(n as u64) as u32)
        };
        let size = rng.below(200_000);
        clients[s].actions.push((t, Action::SendFile { to, size }));
    }
    // Faults, somewhere in each client's active life. Past 16 clients each client's
    // chance of a fault shrinks as 1/sqrt(clients): a thousand clients still see
    // dozens of faults of every kind, but a run with faults keeps delivering most of
    // its messages instead of collapsing (up to 16 clients nothing changes, so seeds
    // replay as they always did).
    let scale = fault_scale_permille(n);
    for plan in clients.iter_mut() {
        let when = plan.join_at + ms(rng.between(1, 9_000));
        let roll = rng.below(100) * 1000 / scale;
        let fault = if f.reset && roll < 10 {
            Some(Action::Reset)
        } else if f.stall && roll < 20 {
            // 0.1 to 8 s: the messages of a run span about eight seconds, so a longer
            // stall is a client absent from the whole run (and, with a relay restart
            // meanwhile, one that learns its session is gone only at the end).
            Some(Action::Stall(ms(
                100 + (rng.between(100, 30_000) - 100) * 7_900 / 29_900
            )))
        } else if f.cut && roll < 25 {
            Some(Action::Cut)
        } else if f.vanish && roll < 30 && !spec.direct {
            Some(Action::Vanish)
        } else {
            None
        };
        if let Some(action) = fault {
            let reconnect = f.reconnect
                && !spec.direct
                && matches!(action, Action::Reset | Action::Cut)
                && rng.chance(60);
            plan.actions.push((when, action));
            last = last.max(when);
            if reconnect {
                let again = when + ms(rng.between(10, 3_000));
                plan.actions.push((again, Action::Reconnect));
                last = last.max(again);
            }
        }
    }
    // Sometimes the relay crashes, and is back after a pause.
    // A restart ends every session at once (everyone joins again, with new IDs), so
    // it too is rarer and shorter past 16 clients.
    let mut server_restarts = Vec::new();
    if f.restart && !spec.direct && rng.below(100) * 1000 / scale < 70 {
        let at = ms(rng.between(500, last.as_millis() as u64 + 1));
        // Down for 0.1 to 1.5 s (less past 16 clients): every client then learns its
        // session is gone only at its next dial, so a longer outage in a run whose
        // messages span eight seconds would be most of the run.
        let down = ms(100 + (rng.between(100, 5_000) - 100) * 1_400 / 4_900 * scale / 1000);
        server_restarts.push((at, down));
        last = last.max(at + down);
    }
    // Some client processes are killed and started again (drawn last, so that the
    // other faults of a seed stay what they were before this kind existed). Relay
    // clients only, for now: a restarted direct peer is proved by
    // `peer::resume::tests` and `cli/tests/restart_e2e.rs`, but in random runs a
    // peer killed before it had its token, or one finishing (both said exit) while
    // its last message is unacknowledged, loses messages unreported (issue notes).
    if f.crash && !spec.direct {
        for plan in clients.iter_mut() {
            if rng.below(100) * 1000 / scale < 20 {
                let when = plan.join_at + ms(rng.between(1, 9_000));
                let down = ms(rng.between(10, 5_000));
                plan.actions.push((when, Action::Crash(down)));
                last = last.max(when + down);
            }
        }
    }
    // Everyone says exit at the end, in a random order, after every fault and
    // reconnect (so that the last incarnation of each client is the one that exits).
    let end = last + ms(1_000);
    for plan in clients.iter_mut() {
        let at = end + ms(rng.below(2_000));
        plan.actions.push((at, Action::Exit));
        plan.actions.sort_by_key(|(t, _)| *t);
    }
    Scenario {
        topology: if spec.direct {
            Topology::Direct
        } else {
            Topology::Relay
        },
        limits,
        network,
        clients,
        settle: Duration::from_secs(240),
        encrypted: true,
        server_restarts,
    }
}

/// Each client's chance of a fault, in thousandths of the base chance: 1000 up to 16
/// clients, then 1000 * sqrt(16 / clients) (126 at 1,000 clients, 40 at 10,000).
fn fault_scale_permille(clients: usize) -> u64 {
    if clients <= 16 {
        1000
    } else {
        ((1000.0 * (16.0 / clients as f64).sqrt()) as u64).max(1)
    }
}

/// A message text: its number, then up to 39 random letters.
fn message_text(rng: &mut Rng, k: u32) -> String {
    let mut text = format!("m{k}");
    for _ in 0..rng.below(40) {
        text.push((b'a' + rng.below(26) as u8) as char);
    }
    text
}

/// [`Traffic::Uniform`] (and every direct run).
fn uniform_messages(
    rng: &mut Rng,
    spec: &RandomSpec,
    clients: &mut [ClientPlan],
    last: &mut Duration,
) {
    let n = clients.len();
    for k in 0..spec.messages {
        let s = rng.below(n as u64) as usize;
        let t = clients[s].join_at + ms(rng.between(1, 8_000));
        *last = (*last).max(t);
        let to = if spec.direct {
            Target::Peer
        } else {
            match rng.below(10) {
                0 => Target::All,
                1 => Target::Id(n as u32 + rng.below(5) as u32),
                _ => Target::Id(rng.below(n as u64) as u32),
            }
        };
        let text = message_text(rng, k);
        clients[s].actions.push((t, Action::Send { to, text }));
    }
}

/// Ranks drawn with Zipf-like weights: rank `r` in proportion to 1 / (r + 1).
struct Zipf {
    /// Cumulative integer weights (exact, so that every machine draws the same).
    cumulative: Vec<u64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0u64;
        let cumulative = (0..n.max(1) as u64)
            .map(|r| {
                total += (1u64 << 32) / (r + 1);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = rng.below(total);
        self.cumulative.partition_point(|&c| c <= x) as u64
    }
}

/// [`Traffic::Chat`]: each client talks with 1 to 5 partners, its favourites most
/// (Zipf-like over its partners), the partners being IDs near one drawn for it at
/// random (Zipf-like over the distance), so that every ID is someone's partner but
/// no ID is everyone's: one ID that receives from all would be a slow consumer on
/// the simulator's narrowest links, and the run about that one client. A few
/// announcers write to everyone now and then.
fn chat_messages(
    rng: &mut Rng,
    spec: &RandomSpec,
    clients: &mut [ClientPlan],
    last: &mut Duration,
) {
    let n = clients.len() as u64;
    let near = Zipf::new(clients.len());
    let favourite = Zipf::new(5);
    let contacts: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            let base = rng.below(n);
            (0..rng.between(1, 5))
                .map(|_| ((base + near.sample(rng)) % n) as u32)
                .collect()
        })
        .collect();
    let announcers = (n / 200).clamp(1, 5);
    // A message to everyone is delivered n - 1 times: 1 in 100 of them for up to 100
    // clients, then 1 in n, so that messages to everyone make about as many
    // deliveries as all the others (at 1 in 100, a thousand clients would receive
    // ten times more announcements than chat, faster than the narrowest links carry).
    let to_all = (100_000 / n.max(1)).clamp(1, 1_000);
    for k in 0..spec.messages {
        let roll = rng.below(100_000);
        let (s, to) = if roll < to_all {
            (rng.below(announcers) as usize, Target::All)
        } else if roll < to_all + 500 {
            let s = rng.below(n) as usize;
            (s, Target::Id(n as u32 + rng.below(5) as u32))
        } else {
            let s = rng.below(n) as usize;
            let mine = &contacts[s];
            let pick = (favourite.sample(rng) as usize).min(mine.len() - 1);
            (s, Target::Id(mine[pick]))
        };
        let t = clients[s].join_at + ms(rng.between(1, 8_000));
        *last = (*last).max(t);
        let text = message_text(rng, k);
        clients[s].actions.push((t, Action::Send { to, text }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_sets_print_and_parse_back() {
        for s in ["none", "all", "split,cut", "reconnect"] {
            let f: FaultSet = s.parse().unwrap();
            let again: FaultSet = f.to_string().parse().unwrap();
            assert_eq!(f, again);
        }
        assert!("bogus".parse::<FaultSet>().is_err());
    }

    #[test]
    fn the_same_spec_gives_the_same_scenario() {
        let spec = RandomSpec {
            seed: 9,
            clients: 5,
            messages: 30,
            max_clients: 4,
            faults: FaultSet::all(),
            direct: false,
            files: 3,
            traffic: Traffic::Uniform,
        };
        assert_eq!(random_scenario(&spec), random_scenario(&spec));
    }
}
