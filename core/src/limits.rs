//! Every bound the protocol enforces, in one place, with the defaults `docs/PROTOCOL.md`
//! documents.
//!
//! A bound that lives in one struct is a bound that tests, the simulator and the CLI
//! can all turn; scattered constants drift.

use core::time::Duration;

/// The four bytes that open every p2pchat byte stream, in both directions.
///
/// The first byte, `0xFF`, never occurs in UTF-8 text, so one byte is enough to tell a
/// p2pchat peer from a plain-text client (nc, telnet) that types characters.
pub const MAGIC: [u8; 4] = [0xFF, b'P', b'2', b'C'];

/// The newest protocol version this build speaks. Version 2 is version 1 with the
/// secure channel (a Noise handshake after the `Hello`s, then encrypted records) and
/// keys in rosters. Version 3 is version 2 with the cipher chosen by the connecting
/// side (handshake patterns 3 and 4: AES-256-GCM), the AES-GCM flag in end-to-end
/// envelopes, and a file's hash in `Done` instead of `Offer`. Version 4 is version 3
/// with away presence (`Away`, `Back`, `Held`, and the away flag in roster entries).
pub const PROTOCOL_VERSION: u16 = 4;

/// The oldest protocol version this build speaks: 4, since a version 3 client would
/// take the relay's away notices for frames it does not know and drop the
/// connection, rather than say why (version negotiation says it plainly).
pub const MIN_PROTOCOL_VERSION: u16 = 4;

/// Bounds on frames, queues and time. `Limits::default()` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest value the 4-byte length prefix may carry (frame type byte + body).
    pub max_frame_len: u32,
    /// Largest chat text, in bytes of UTF-8.
    pub max_text_len: usize,
    /// Largest nickname, in bytes of UTF-8.
    pub max_name_len: usize,
    /// Bytes queued towards one connection (not yet written plus written but not yet
    /// confirmed by the driver) past which that connection is cut off as too slow. On
    /// a relay, bytes a resuming client has not yet acknowledged count too (the relay
    /// holds them to resend them), whichever is larger.
    pub max_outbound_bytes: usize,
    /// How long a new connection may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// Relay server: clients admitted at once; the next one is refused.
    pub max_clients: u32,
    /// Relay server: connections still in their handshake at once; more are closed.
    pub max_pending_handshakes: usize,
    /// Quiet time after which a side sends a `Ping` to show it is alive.
    pub keepalive_interval: Duration,
    /// Silence from the other side after which it is declared vanished.
    pub idle_timeout: Duration,
    /// Relay server: while at most this many clients are online, every client is told
    /// of each join, exit and departure. Past it, presence notices stop: they cost
    /// O(clients) per change, O(clients²) for a crowd arriving.
    pub presence_limit: u32,
    /// Relay server: the largest `Roster` frame, in bytes; a longer list is cut (its
    /// `total` still counts everyone).
    pub max_roster_bytes: usize,
    /// Plain text: a pause this long after bytes without a newline ends the line (the
    /// original app sent messages without newlines), for a sender that has never sent
    /// a newline, and only once the driver reads the connection and finds nothing
    /// more (`RelayServer::read_idle_check`, docs/PROTOCOL.md section 10).
    pub text_pause: Duration,
    /// Relay server: a new connection silent this long is greeted in plain text, so
    /// that someone on `nc` learns what to type. Framed clients speak at once.
    pub text_greeting_delay: Duration,
    /// Relay server: connections from one network address at once (counted only when
    /// the driver passes addresses); the next is refused. 0: no limit.
    pub max_connections_per_address: u32,
    /// Relay server: chat messages per second one client may send, sustained (file
    /// traffic and key exchange are not counted: they are paced by their own windows).
    /// A client that sends faster is read from more slowly, and told so. 0: no limit.
    pub message_rate: u32,
    /// Relay server: how many messages a client may send at once above `message_rate`
    /// (the token bucket's depth).
    pub message_burst: u32,
    /// Relay server: the largest file it carries, in bytes.
    pub max_file_size: u64,
    /// Relay server: files one client may be offering or sending at once.
    pub max_transfers_per_client: usize,
    /// File chunks a relay client keeps unacknowledged per transfer. The relay queues
    /// up to that much for a receiver that lags, so it must stay under the relay's
    /// `max_outbound_bytes` (8 chunks of 48 KiB = 384 KiB, under 512 KiB).
    pub relay_file_window: u64,
    /// File chunks a direct peer keeps unacknowledged per transfer. Nothing sits in
    /// between, so it can be larger: a window is what one round trip carries, and a
    /// round trip through two busy processes is about a millisecond.
    pub direct_file_window: u64,
    /// How long a side holds a session whose connection was lost for the other side
    /// to come back to it (`Resume`): the relay keeps the client's ID and what was
    /// sent to it; a listening peer keeps the conversation.
    pub resume_grace: Duration,
    /// Relay clients and direct peers: bytes of their session stream kept until the
    /// other side acknowledges them (to resend them after a lost connection). While
    /// connected this is what is in flight; while away, what was typed meanwhile.
    /// Chat past it is refused until acknowledgements free room.
    pub max_unacked_bytes: usize,
    /// Relay server: what a client may send that the relay cannot use (lines that are
    /// not UTF-8, not a message or a command; messages after its exit, repeated
    /// sequence numbers), each answered, before it is disconnected
    /// (`too-many-errors`): more than this many in `bad_input_window`. 0: no limit.
    pub max_bad_inputs: u32,
    /// Relay server: the window of `max_bad_inputs` (strikes drain at that rate).
    pub bad_input_window: Duration,
}

/// The most bytes one presence notice takes on the wire: a `Joined` frame with the
/// longest name and a key (75 bytes), rounded up.
pub const PRESENCE_NOTICE_BYTES: usize = 80;

impl Limits {
    /// The bound on bytes the relay queues for one client: `max_outbound_bytes` for
    /// what clients send each other, plus an allowance for presence: a roster and a
    /// notice from every client up to the presence limit joining and as many leaving
    /// (56 KiB with the defaults). A crowd arriving at once must not by itself cut
    /// off a client that reads at a normal pace, nor leave a newcomer's roster no
    /// room for the first messages; IRC servers size a client's send queue for a
    /// netjoin burst in the same way. The allowance is bounded, since notices stop
    /// past `presence_limit` clients.
    pub fn relay_queue_bytes(&self) -> usize {
        let presence =
            self.max_roster_bytes + 2 * self.presence_limit as usize * PRESENCE_NOTICE_BYTES;
        self.max_outbound_bytes.saturating_add(presence)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: 65_536,
            max_text_len: 16_384,
            max_name_len: 32,
            max_outbound_bytes: 512 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_clients: 256,
            max_pending_handshakes: 1024,
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            presence_limit: 256,
            max_roster_bytes: 16 * 1024,
            text_pause: Duration::from_millis(200),
            text_greeting_delay: Duration::from_secs(1),
            max_connections_per_address: 64,
            message_rate: 20_000,
            message_burst: 20_000,
            max_file_size: 64 * 1024 * 1024 * 1024,
            max_transfers_per_client: 8,
            relay_file_window: 8,
            direct_file_window: 64,
            resume_grace: Duration::from_secs(60),
            max_unacked_bytes: 4 * 1024 * 1024,
            max_bad_inputs: 20,
            bad_input_window: Duration::from_secs(10),
        }
    }
}
