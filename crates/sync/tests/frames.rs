//! The frame decoder is total: arbitrary bytes give a frame or a typed error, never a panic;
//! every encodable frame decodes back to itself.

use proptest::prelude::*;
use sellsync_model::{DeviceId, RecordId, UserId};
use sellsync_sync::frame::{
    Announce, BatchEntry, DEFAULT_MAX_FRAME, ErrorFrame, Frame, HEADER_LEN, Hello, MAGIC,
    PROTOCOL_VERSION, SyncBatch, Welcome, frame_len,
};
use sellsync_sync::{ErrorCode, FrameError, Role};

fn id_str() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn record_id() -> impl Strategy<Value = RecordId> {
    id_str().prop_map(|s| s.parse().unwrap())
}

fn device_id() -> impl Strategy<Value = DeviceId> {
    id_str().prop_map(|s| s.parse().unwrap())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Hub), Just(Role::Device)]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            device_id(),
            role(),
            any::<u64>(),
            bytes(64),
            bytes(40),
            bytes(40)
        )
            .prop_map(|(node, role, checkpoint, token, nonce, key)| {
                Frame::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    node,
                    role,
                    checkpoint,
                    token,
                    nonce,
                    key,
                })
            }),
        (
            device_id(),
            role(),
            proptest::option::of(any::<u64>()),
            bytes(64),
            any::<u64>(),
            (bytes(40), bytes(80), bytes(200))
        )
            .prop_map(
                |(node, role, user, token, checkpoint, (nonce, proof, grant))| {
                    Frame::Welcome(Welcome {
                        node,
                        role,
                        user: user.map(UserId),
                        token,
                        checkpoint,
                        nonce,
                        proof,
                        grant,
                    })
                }
            ),
        bytes(80).prop_map(Frame::Proof),
        (
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(record_id(), 0..8)
        )
            .prop_map(|(last, a, b, docs)| {
                let (since, upto) = (u64::from(a.min(b)), u64::from(a.max(b)));
                Frame::Announce(Announce {
                    last,
                    since,
                    upto,
                    docs,
                })
            }),
        (
            any::<bool>(),
            proptest::collection::vec((record_id(), bytes(40), bytes(100)), 0..6)
        )
            .prop_map(|(last, entries)| {
                let entries = entries
                    .into_iter()
                    .map(|(doc, message, signatures)| BatchEntry {
                        doc,
                        message,
                        signatures,
                    })
                    .collect();
                Frame::SyncBatch(SyncBatch { last, entries })
            }),
        any::<u64>().prop_map(|checkpoint| Frame::Done { checkpoint }),
        proptest::collection::vec(record_id(), 0..8).prop_map(Frame::AccessRevoked),
        (any::<u16>(), "\\PC{0,100}").prop_map(|(code, reason)| Frame::Error(ErrorFrame {
            code: ErrorCode::from_u16(code),
            reason
        })),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(input in bytes(300)) {
        let _ = Frame::decode(&input, DEFAULT_MAX_FRAME);
        let _ = frame_len(&input, DEFAULT_MAX_FRAME);
    }

    #[test]
    fn decoding_arbitrary_payloads_behind_a_valid_header_never_panics(
        kind in 0u8..10,
        payload in bytes(300),
    ) {
        let mut input = MAGIC.to_vec();
        input.push(PROTOCOL_VERSION);
        input.push(kind);
        input.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        input.extend_from_slice(&payload);
        match Frame::decode(&input, DEFAULT_MAX_FRAME) {
            Ok(f) => {
                // Whatever decodes re-encodes to the same bytes: the format has one spelling.
                prop_assert_eq!(f.encode(DEFAULT_MAX_FRAME).unwrap(), input);
            }
            Err(FrameError::Truncated { .. }) => prop_assert!(false, "length was exact"),
            Err(_) => {}
        }
    }

    #[test]
    fn every_frame_round_trips(f in frame()) {
        let bytes = f.encode(DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(frame_len(&bytes, DEFAULT_MAX_FRAME).unwrap(), Some(bytes.len()));
        prop_assert_eq!(Frame::decode(&bytes, DEFAULT_MAX_FRAME).unwrap(), f);
    }

    #[test]
    fn flipping_one_byte_never_panics(f in frame(), at in any::<usize>(), to in any::<u8>()) {
        let mut bytes = f.encode(DEFAULT_MAX_FRAME).unwrap();
        let at = at % bytes.len();
        bytes[at] = to;
        let _ = Frame::decode(&bytes, DEFAULT_MAX_FRAME);
    }
}

#[test]
fn the_header_alone_reports_an_oversized_frame() {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&[PROTOCOL_VERSION, 4]);
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(header.len(), HEADER_LEN);
    assert!(matches!(
        frame_len(&header, DEFAULT_MAX_FRAME),
        Err(FrameError::Oversized { .. })
    ));
    assert_eq!(frame_len(&header[..5], DEFAULT_MAX_FRAME), Ok(None));
}

/// Inputs that once broke the decoder (or were written to guard a risky path) replay as plain
/// tests: each must decode to a frame or an error without panicking.
#[test]
fn fuzz_crashers_replay_without_panicking() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-crashers");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the crashers directory exists") {
        let bytes = std::fs::read(entry.expect("readable entry").path()).expect("readable file");
        let _ = Frame::decode(&bytes, DEFAULT_MAX_FRAME);
        let _ = frame_len(&bytes, DEFAULT_MAX_FRAME);
        n += 1;
    }
    assert!(n > 0, "no inputs found in {}", dir.display());
}
