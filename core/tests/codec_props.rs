//! Property tests of the wire codec: every frame survives a round trip, any split of a
//! valid stream decodes to the same frames, and no byte sequence makes the decoder
//! panic or hold more than one frame's worth of memory.

use p2pchat_core::{
    ClientId, DecodeError, ErrorCode, ErrorReport, Frame, FrameDecoder, Hello, MAGIC, Payload,
    PayloadKind, PublicKey, Refused, Role, RosterEntry, Welcome,
};
use proptest::prelude::*;

fn arb_entry() -> impl Strategy<Value = RosterEntry> {
    (
        arb_id(),
        any::<bool>(),
        any::<bool>(),
        arb_name(),
        arb_key(),
    )
        .prop_map(|(id, exited, away, name, key)| RosterEntry {
            id,
            exited,
            away,
            name,
            key,
        })
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_u16)
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 éü漢]{0,12}"
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        ".{0,40}".prop_map(|t| Payload::text(&t)),
        (
            prop_oneof![
                Just(PayloadKind::File),
                Just(PayloadKind::Sealed),
                Just(PayloadKind::SealedFile),
                Just(PayloadKind::Keys),
                (6u8..=255).prop_map(PayloadKind::Other),
            ],
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(kind, body)| Payload { kind, body }),
    ]
}

fn arb_id() -> impl Strategy<Value = ClientId> {
    prop_oneof![4 => (0u32..1000).prop_map(ClientId), 1 => Just(ClientId::BROADCAST)]
}

/// Every frame type, with arbitrary field values.
pub fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            1u8..=3,
            arb_name(),
            any::<bool>()
        )
            .prop_map(|(min, max, caps, role, name, resuming)| {
                Frame::Hello(Hello {
                    min_version: min,
                    max_version: max,
                    capabilities: caps,
                    role: match role {
                        1 => Role::RelayClient,
                        2 => Role::DirectPeer,
                        n => Role::Other(n),
                    },
                    name,
                    resuming,
                })
            }),
        (any::<u16>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(v, c, id, max)| {
            Frame::Welcome(Welcome {
                version: v,
                capabilities: c,
                client_id: ClientId(id),
                max_clients: max,
            })
        }),
        (arb_code(), any::<u32>(), any::<u32>(), ".{0,30}").prop_map(
            |(code, online, limit, reason)| {
                Frame::Refused(Refused {
                    code,
                    online,
                    limit,
                    reason,
                })
            }
        ),
        (arb_id(), any::<u64>(), arb_payload()).prop_map(|(to, seq, payload)| Frame::Chat {
            to,
            seq,
            payload
        }),
        (arb_id(), arb_id(), any::<u64>(), arb_payload()).prop_map(|(from, to, seq, payload)| {
            Frame::Deliver {
                from,
                to,
                seq,
                payload,
            }
        }),
        Just(Frame::Who),
        (any::<u32>(), proptest::collection::vec(arb_entry(), 0..6))
            .prop_map(|(total, entries)| Frame::Roster { total, entries }),
        Just(Frame::AllExited),
        arb_id().prop_map(|id| Frame::Lookup { id }),
        arb_entry().prop_map(Frame::Profile),
        (arb_id(), arb_code(), any::<u32>()).prop_map(|(id, code, grace_ms)| Frame::Away {
            id,
            code,
            grace_ms
        }),
        arb_id().prop_map(|id| Frame::Back { id }),
        (arb_id(), any::<u64>(), any::<u32>()).prop_map(|(to, seq, wait_ms)| Frame::Held {
            to,
            seq,
            wait_ms
        }),
        (arb_id(), arb_name(), arb_key()).prop_map(|(id, name, key)| Frame::Joined {
            id,
            name,
            key
        }),
        (arb_id(), arb_code()).prop_map(|(id, code)| Frame::Left { id, code }),
        arb_id().prop_map(|id| Frame::Exited { id }),
        (any::<u64>(), arb_payload()).prop_map(|(seq, payload)| Frame::Message { seq, payload }),
        Just(Frame::Exit),
        any::<u64>().prop_map(|received| Frame::Ack { received }),
        (arb_id(), any::<[u8; 16]>(), any::<u64>()).prop_map(|(id, token, received)| {
            Frame::Resume {
                id,
                token,
                received,
            }
        }),
        any::<u64>().prop_map(|received| Frame::Resumed { received }),
        (any::<[u8; 16]>(), any::<u32>())
            .prop_map(|(token, grace_ms)| Frame::ResumeToken { token, grace_ms }),
        any::<u64>().prop_map(|seq| Frame::Delivered { seq }),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        (
            arb_code(),
            any::<u64>(),
            proptest::option::of(0u32..u32::MAX),
            ".{0,30}"
        )
            .prop_map(|(code, seq, subject, message)| Frame::Error(ErrorReport {
                code,
                seq,
                subject: subject.map(ClientId),
                message
            })),
        (arb_code(), ".{0,30}").prop_map(|(code, message)| Frame::Close { code, message }),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(pattern, message)| Frame::Handshake { pattern, message }),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Frame::Sealed),
    ]
}

fn arb_key() -> impl Strategy<Value = Option<PublicKey>> {
    proptest::option::of(any::<[u8; 32]>().prop_map(PublicKey))
}

/// Decodes `bytes` fed in the given chunk sizes, returning frames and the first error.
fn decode_in_chunks(bytes: &[u8], cuts: &[usize], max: u32) -> (Vec<Frame>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(
            d.buffered_len() <= max as usize + 4 + chunk.len(),
            "decoder holds more than one frame"
        );
    }
    (frames, None)
}

/// Like [`decode_in_chunks`], through [`FrameDecoder::feed`] (frames read in place).
fn feed_in_chunks(bytes: &[u8], cuts: &[usize], max: u32) -> (Vec<Frame>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut bad = None;
        let fed = d.feed(chunk, |raw| match Frame::decode(raw.type_byte, raw.body) {
            Ok(f) => {
                frames.push(f);
                true
            }
            Err(e) => {
                bad = Some(e);
                false
            }
        });
        if let Some(e) = bad.or(fed.err()) {
            return (frames, Some(e));
        }
        assert!(
            d.buffered_len() <= max as usize + 4,
            "decoder holds more than one unfinished frame"
        );
    }
    (frames, None)
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in arb_frame()) {
        let bytes = frame.to_bytes();
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        prop_assert_eq!(len, bytes.len() - 4);
        prop_assert_eq!(Frame::decode(bytes[4], &bytes[5..]), Ok(frame));
    }

    #[test]
    fn any_split_of_a_valid_stream_gives_the_same_frames(
        frames in proptest::collection::vec(arb_frame(), 0..20),
        cuts in proptest::collection::vec(1usize..64, 1..20),
    ) {
        let mut bytes = MAGIC.to_vec();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let (decoded, err) = decode_in_chunks(&bytes, &cuts, 65_536);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&decoded, &frames);
        let (fed, err) = feed_in_chunks(&bytes, &cuts, 65_536);
        prop_assert_eq!(err, None);
        prop_assert_eq!(fed, frames);
    }

    #[test]
    fn feeding_in_place_finds_the_same_frames_and_errors_as_pulling(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(1usize..50, 1..10),
        with_magic in any::<bool>(),
    ) {
        let mut input = if with_magic { MAGIC.to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let pulled = decode_in_chunks(&input, &cuts, 256);
        let fed = feed_in_chunks(&input, &cuts, 256);
        prop_assert_eq!(fed, pulled);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(1usize..50, 1..10),
        with_magic in any::<bool>(),
    ) {
        let mut input = if with_magic { MAGIC.to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let (_, err) = decode_in_chunks(&input, &cuts, 256);
        if let Some(e) = err {
            // Every failure is a typed error with a wire code other than "normal".
            prop_assert_ne!(e.code(), ErrorCode::Normal);
        }
    }

    #[test]
    fn frame_bodies_of_random_bytes_never_panic(ty in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Frame::decode(ty, &body);
    }
}
