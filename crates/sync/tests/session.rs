//! Behaviour of the session: round trips, authentication, access, bad frames, frame limits.

mod support;

use automerge::ReadDoc;
use sellsync_model::{RecordId, UserId};
use sellsync_sync::frame::{BatchEntry, ErrorFrame, Frame, Hello, PROTOCOL_VERSION, SyncBatch};
use sellsync_sync::memory::MemReplica;
use sellsync_sync::{
    AcceptConfig, CloseReason, DialConfig, Effect, ErrorCode, Event, IgnoreReason, Limits, Role,
    Session,
};
use support::{HUB, Net, check_converged, deal, node_id, record_id, set_field, standard_acl};

/// A hub and one device of user 1, both holding `n` synced deals owned by user 1.
fn synced_pair(n: usize) -> Net {
    let mut net = Net::new(&[1], standard_acl());
    for i in 0..n {
        let d = deal(&net.nodes[HUB], 1, 30, i as u64);
        net.nodes[HUB].put(record_id(&format!("deal-{i}")), d);
    }
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", run.effects);
    net
}

fn closes(run: &support::Run) -> Vec<(usize, CloseReason)> {
    run.effects
        .iter()
        .filter_map(|(i, e)| match e {
            Effect::Close(r) => Some((*i, r.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn reconnect_round_trips_do_not_grow_with_the_number_of_changed_documents() {
    let mut legs = Vec::new();
    for n in [1usize, 10, 100, 400] {
        let mut net = synced_pair(2 * n);
        for i in 0..n {
            // n documents changed on the device, n others on the hub, 3 fields each.
            for f in 0..3 {
                assert!(set_field(
                    &mut net.nodes[1],
                    &record_id(&format!("deal-{i}")),
                    &format!("f{f}"),
                    7
                ));
                assert!(set_field(
                    &mut net.nodes[HUB],
                    &record_id(&format!("deal-{}", n + i)),
                    &format!("f{f}"),
                    8
                ));
            }
        }
        let run = net.sync(1, HUB, None);
        assert!(run.finished, "{:?}", run.effects);
        assert_eq!(run.changed, 2 * n as u32);
        check_converged(&net);
        legs.push(run.legs);
    }
    assert!(legs.iter().all(|l| *l == legs[0]), "legs per N: {legs:?}");
    // Handshake (hello, welcome) plus at most 3 round trips.
    assert!(legs[0] <= 2 + 6, "legs: {legs:?}");
}

#[test]
fn a_reconnect_with_nothing_changed_is_a_handshake_and_the_two_dones() {
    let mut net = synced_pair(50);
    let run = net.sync(1, HUB, None);
    assert!(run.finished);
    // Hello; welcome with an empty announce; the device's empty announce and done; the hub's
    // done. The documents the device received last time are not announced back.
    assert_eq!(run.legs, 4, "{:?}", run.effects);
    assert!(run.bytes < 200, "{} bytes", run.bytes);
    assert_eq!(run.changed, 0);
}

#[test]
fn a_fresh_device_pulls_everything_it_may_see_and_nothing_else() {
    let mut net = Net::new(&[1, 3], standard_acl());
    for i in 0..30u64 {
        let owner = [1, 2, 3][i as usize % 3];
        let d = deal(&net.nodes[HUB], owner, 5, i);
        net.nodes[HUB].put(record_id(&format!("deal-{i}")), d);
    }
    let run = net.sync(1, HUB, None);
    assert!(run.finished);
    assert_eq!(
        net.nodes[1].doc_ids().count(),
        20,
        "user 1 sees its own and user 2's deals"
    );
    let run = net.sync(2, HUB, None);
    assert!(run.finished);
    assert_eq!(net.nodes[2].doc_ids().count(), 10);
    check_converged(&net);
    let checkpoints: Vec<_> = run
        .effects
        .iter()
        .filter(|(_, e)| matches!(e, Effect::CheckpointAdvanced { .. }))
        .collect();
    assert_eq!(checkpoints.len(), 2, "both sides record a checkpoint");
}

#[test]
fn a_bad_token_gets_an_auth_error_and_nothing_else() {
    let mut net = synced_pair(5);
    net.tokens[1] = b"forged".to_vec();
    let hub_heads: Vec<_> = net.nodes[HUB]
        .doc_ids()
        .map(|d| net.nodes[HUB].heads(d))
        .collect();
    set_field(&mut net.nodes[1], &record_id("deal-0"), "f0", 99);
    let run = net.sync(1, HUB, None);
    assert_eq!(run.frames, 2, "hello, then the error: {:?}", run.effects);
    let c = closes(&run);
    assert!(matches!(&c[0], (HUB, CloseReason::AuthFailed(_))), "{c:?}");
    assert!(
        matches!(
            &c[1],
            (
                1,
                CloseReason::PeerError {
                    code: ErrorCode::AuthFailed,
                    ..
                }
            )
        ),
        "{c:?}"
    );
    let after: Vec<_> = net.nodes[HUB]
        .doc_ids()
        .map(|d| net.nodes[HUB].heads(d))
        .collect();
    assert_eq!(hub_heads, after);
}

#[test]
fn a_revoked_token_or_one_issued_to_another_device_is_refused() {
    let mut net = Net::new(&[1, 2], standard_acl());
    // Device 1 presents device 2's token.
    net.tokens[1] = net.tokens[2].clone();
    let run = net.sync(1, HUB, None);
    assert!(matches!(closes(&run)[0], (HUB, CloseReason::AuthFailed(_))));
    // Device 2's token is revoked at the hub.
    let t = net.tokens[2].clone();
    net.nodes[HUB].revoke_token(&t);
    let run = net.sync(2, HUB, None);
    assert!(matches!(closes(&run)[0], (HUB, CloseReason::AuthFailed(_))));
}

#[test]
fn lan_peers_check_each_others_tokens() {
    let mut net = Net::new(&[1, 2], standard_acl());
    let d = deal(&net.nodes[1], 1, 5, 1);
    net.nodes[1].put(record_id("deal-a"), d);
    // The acceptor's token is unknown to the dialer: the dialer refuses it after the welcome.
    let t = net.tokens[2].clone();
    net.nodes[1].revoke_token(&t);
    let run = net.sync(1, 2, None);
    assert!(
        matches!(closes(&run)[0], (1, CloseReason::AuthFailed(_))),
        "{:?}",
        run.effects
    );
    assert!(net.nodes[2].doc(&record_id("deal-a")).is_none());
    // With valid tokens both ways, teammates sync directly.
    let mut net = Net::new(&[1, 2], standard_acl());
    let d = deal(&net.nodes[1], 1, 5, 1);
    net.nodes[1].put(record_id("deal-a"), d);
    let run = net.sync(1, 2, None);
    assert!(run.finished, "{:?}", run.effects);
    assert_eq!(
        net.nodes[2].heads(&record_id("deal-a")),
        net.nodes[1].heads(&record_id("deal-a"))
    );
}

#[test]
fn a_lan_peer_of_another_team_gets_none_of_our_documents() {
    let mut net = Net::new(&[1, 3], standard_acl());
    let d = deal(&net.nodes[1], 1, 5, 1);
    net.nodes[1].put(record_id("deal-a"), d);
    let run = net.sync(2, 1, None);
    assert!(run.finished, "{:?}", run.effects);
    assert!(net.nodes[2].doc(&record_id("deal-a")).is_none());
}

#[test]
fn frames_before_the_hello_close_the_session_and_apply_nothing() {
    let mut hub = Net::new(&[1], standard_acl()).nodes.remove(HUB);
    let mut s = Session::accept(AcceptConfig {
        node: node_id(HUB),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    });
    let batch = Frame::SyncBatch(SyncBatch {
        last: true,
        entries: vec![BatchEntry::new(record_id("x"), vec![0x42, 0])],
    })
    .encode(1 << 20)
    .unwrap();
    let fx = s.handle(&mut hub, Event::Received(&batch));
    assert!(
        matches!(fx.effects[..], [Effect::Close(CloseReason::OutOfOrder(_))]),
        "{fx:?}"
    );
    assert_eq!(fx.send.len(), 1, "an error frame");
    assert!(matches!(
        Frame::decode(&fx.send[0], 1 << 20),
        Ok(Frame::Error(ErrorFrame {
            code: ErrorCode::OutOfOrder,
            ..
        }))
    ));
    assert_eq!(hub.doc_ids().count(), 0);
    // Once closed, the session ignores everything.
    assert_eq!(
        s.handle(&mut hub, Event::Received(&batch)),
        Default::default()
    );
}

/// Runs an authenticated device session by hand up to the device's turn, then hands the hub a
/// crafted frame.
fn hub_after_handshake(net: &mut Net) -> (Session, Vec<Vec<u8>>) {
    let mut s = Session::accept(AcceptConfig {
        node: node_id(HUB),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: net.limits,
    });
    let hello = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        node: node_id(1),
        role: Role::Device,
        checkpoint: 0,
        token: net.tokens[1].clone(),
        nonce: Vec::new(),
        key: Vec::new(),
    })
    .encode(1 << 20)
    .unwrap();
    let fx = s.handle(&mut net.nodes[HUB], Event::Received(&hello));
    assert!(matches!(fx.effects[0], Effect::Authenticated(_)), "{fx:?}");
    (s, fx.send)
}

#[test]
fn garbage_and_bad_sync_messages_mid_exchange_close_without_applying_anything() {
    for garbage in [
        b"not a frame at all".to_vec(),
        // A well-formed frame whose sync message is not automerge.
        Frame::SyncBatch(SyncBatch {
            last: true,
            entries: vec![BatchEntry::new(record_id("deal-0"), vec![1, 2, 3])],
        })
        .encode(1 << 20)
        .unwrap(),
        // A frame announcing more payload than the limit.
        {
            let mut b = b"SY".to_vec();
            b.extend_from_slice(&[PROTOCOL_VERSION, 4, 0x7f, 0xff, 0xff, 0xff]);
            b
        },
    ] {
        let mut net = synced_pair(3);
        let before: Vec<_> = net.nodes[HUB]
            .doc_ids()
            .map(|d| net.nodes[HUB].heads(d))
            .collect();
        let (mut s, _) = hub_after_handshake(&mut net);
        let calls = net.nodes[HUB].receive_calls;
        let fx = s.handle(&mut net.nodes[HUB], Event::Received(&garbage));
        assert!(fx.ended(), "{fx:?}");
        assert!(
            fx.effects.iter().all(|e| matches!(
                e,
                Effect::Close(CloseReason::Malformed(_) | CloseReason::OutOfOrder(_))
            )),
            "{fx:?}"
        );
        let after: Vec<_> = net.nodes[HUB]
            .doc_ids()
            .map(|d| net.nodes[HUB].heads(d))
            .collect();
        assert_eq!(before, after);
        assert_eq!(
            net.nodes[HUB].receive_calls, calls,
            "nothing reached the replica"
        );
    }
}

#[test]
fn a_peer_error_frame_closes_with_its_reason() {
    let mut net = synced_pair(1);
    let (mut s, _) = hub_after_handshake(&mut net);
    let err = Frame::Error(ErrorFrame {
        code: ErrorCode::Internal,
        reason: "disk full".into(),
    })
    .encode(1 << 20)
    .unwrap();
    let fx = s.handle(&mut net.nodes[HUB], Event::Received(&err));
    assert_eq!(
        fx.effects,
        vec![Effect::Close(CloseReason::PeerError {
            code: ErrorCode::Internal,
            reason: "disk full".into()
        })]
    );
    assert!(fx.send.is_empty());
}

#[test]
fn large_flights_split_into_frames_under_the_limit() {
    let mut net = Net::new(&[1], standard_acl());
    net.limits = Limits {
        max_frame: 8 * 1024,
        target_frame: 4 * 1024,
    };
    for i in 0..300u64 {
        let d = deal(&net.nodes[HUB], 1, 10, i);
        net.nodes[HUB].put(record_id(&format!("deal-{i}")), d);
    }
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", run.effects);
    assert!(run.frames > 20, "{} frames", run.frames);
    assert!(run.bytes / u64::from(run.frames) <= 8 * 1024);
    check_converged(&net);
    assert!(
        net.nodes[1].receive_calls > 1,
        "one replica call per frame, several frames"
    );
}

#[test]
fn a_message_larger_than_a_frame_is_skipped_and_the_checkpoint_stays() {
    let mut net = Net::new(&[1], standard_acl());
    net.limits = Limits {
        max_frame: 1024,
        target_frame: 1024,
    };
    let big = deal(&net.nodes[HUB], 1, 3000, 1);
    net.nodes[HUB].put(record_id("big"), big);
    let small = deal(&net.nodes[HUB], 1, 2, 2);
    net.nodes[HUB].put(record_id("small"), small);
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", run.effects);
    assert!(run.effects.iter().any(|(i, e)| *i == HUB
        && matches!(
            e,
            Effect::Ignored {
                reason: IgnoreReason::TooLarge(_),
                ..
            }
        )));
    assert!(net.nodes[1].doc(&record_id("small")).is_some());
    assert!(net.nodes[1].doc(&record_id("big")).is_none());
    // The device must not skip past the big document in the hub's feed.
    assert!(
        !run.effects
            .iter()
            .any(|(i, e)| *i == 1 && matches!(e, Effect::CheckpointAdvanced { .. }))
    );
}

#[test]
fn losing_access_is_reported_and_the_document_is_no_longer_exchanged() {
    let mut net = synced_pair(3);
    let id = record_id("deal-1");
    // The device edits the deal offline, then the hub moves it to user 3's team.
    set_field(&mut net.nodes[1], &id, "f0", 1234);
    net.nodes[HUB].edit(&id, |doc| {
        use automerge::transaction::Transactable;
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(automerge::ROOT, "owner", 3u64).map(|_| ())
        })
        .unwrap();
    });
    let hub_heads = net.nodes[HUB].heads(&id);
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", run.effects);
    assert!(
        run.effects
            .iter()
            .any(|(i, e)| *i == 1 && *e == Effect::AccessRevoked(vec![id.clone()])),
        "{:?}",
        run.effects
    );
    // The device no longer offers it, and the hub kept its own version.
    assert_eq!(net.nodes[HUB].heads(&id), hub_heads);
    // The device keeps its offline edit (the caller turns it into a permission conflict).
    let fields = net.nodes[1]
        .doc(&id)
        .unwrap()
        .get(automerge::ROOT, "fields")
        .unwrap()
        .unwrap()
        .1;
    assert_eq!(
        net.nodes[1]
            .doc(&id)
            .unwrap()
            .get(&fields, "f0")
            .unwrap()
            .unwrap()
            .0
            .as_i64(),
        Some(1234)
    );
    // Reported once.
    let run = net.sync(1, HUB, None);
    assert!(
        !run.effects
            .iter()
            .any(|(_, e)| matches!(e, Effect::AccessRevoked(_)))
    );
}

#[test]
fn the_hub_ignores_a_devices_messages_for_a_document_its_user_may_not_see() {
    let mut net = Net::new(&[1], standard_acl());
    let id = record_id("other-team");
    let doc = deal(&net.nodes[HUB], 3, 5, 1);
    let mut copy = doc.fork();
    net.nodes[HUB].put(id.clone(), doc);
    // The device holds a copy it should not have (for example restored from an old backup)
    // and edits it.
    copy.set_actor(automerge::ActorId::from(b"dev-1".as_slice()));
    net.nodes[1].put(id.clone(), copy);
    set_field(&mut net.nodes[1], &id, "f0", 5);
    let hub_heads = net.nodes[HUB].heads(&id);
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", run.effects);
    assert!(run.effects.iter().any(|(i, e)| *i == HUB
        && *e
            == Effect::Ignored {
                doc: id.clone(),
                reason: IgnoreReason::PeerMayNotSee
            }));
    assert_eq!(net.nodes[HUB].heads(&id), hub_heads);
}

#[test]
fn a_hub_revoking_mid_session_sends_access_revoked() {
    let mut net = synced_pair(1);
    let (mut s, _) = hub_after_handshake(&mut net);
    let fx = s.revoke(vec![record_id("deal-0")]);
    assert_eq!(
        Frame::decode(&fx.send[0], 1 << 20).unwrap(),
        Frame::AccessRevoked(vec![record_id("deal-0")])
    );
}

#[test]
fn a_device_cannot_push_a_new_document_its_user_may_not_see() {
    let mut net = Net::new(&[1], standard_acl());
    // Device of user 1 creates a deal owned by user 3 (other team), bypassing any UI check.
    let d = deal(&net.nodes[1], 3, 5, 1);
    net.nodes[1].put(record_id("sneaky"), d);
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", run.effects);
    assert!(net.nodes[HUB].doc(&record_id("sneaky")).is_none());
    assert!(run.effects.iter().any(|(i, e)| *i == HUB
        && *e
            == Effect::Ignored {
                doc: record_id("sneaky"),
                reason: IgnoreReason::Denied
            }));
    // The device is told, so that it keeps the document under a permission conflict instead
    // of believing it synced.
    assert!(
        run.effects
            .iter()
            .any(|(i, e)| *i == 1 && *e == Effect::AccessRevoked(vec![record_id("sneaky")])),
        "{:?}",
        run.effects
    );
    assert!(net.nodes[1].doc(&record_id("sneaky")).is_some());
}

#[test]
fn a_welcome_from_an_unexpected_node_is_refused() {
    let mut dev = MemReplica::new(node_id(1), Some(UserId(1)), standard_acl());
    let mut s = Session::dial(DialConfig {
        node: node_id(1),
        role: Role::Device,
        token: b"t".to_vec(),
        peer: Some(node_id(HUB)),
        verify_peer_token: false,
        mutual: false,
        nonce: Vec::new(),
        key: Vec::new(),
        limits: Limits::default(),
    });
    let fx = s.handle(&mut dev, Event::Opened);
    assert_eq!(fx.send.len(), 1);
    let welcome = Frame::Welcome(sellsync_sync::frame::Welcome {
        node: "impostor".parse().unwrap(),
        role: Role::Hub,
        user: Some(UserId(1)),
        token: vec![],
        checkpoint: 0,
        nonce: vec![],
        proof: vec![],
        grant: vec![],
    })
    .encode(1 << 20)
    .unwrap();
    let fx = s.handle(&mut dev, Event::Received(&welcome));
    assert!(
        matches!(&fx.effects[..], [Effect::Close(CloseReason::WrongPeer(_))]),
        "{fx:?}"
    );
}

#[test]
fn a_cut_connection_records_no_checkpoint_and_the_next_session_completes() {
    let mut net = Net::new(&[1], standard_acl());
    for i in 0..20u64 {
        let d = deal(&net.nodes[HUB], 1, 5, i);
        net.nodes[HUB].put(record_id(&format!("deal-{i}")), d);
    }
    let run = net.sync(1, HUB, Some(3));
    assert!(!run.finished);
    assert!(
        !run.effects
            .iter()
            .any(|(_, e)| matches!(e, Effect::CheckpointAdvanced { .. }))
    );
    let run = net.sync(1, HUB, None);
    assert!(run.finished);
    check_converged(&net);
    let _: Vec<RecordId> = net.nodes[1].doc_ids().cloned().collect();
}

/// A device replaced under the same name (a wiped or new phone) comes with a fresh feed, shorter
/// than the checkpoint the hub kept for the old store: it announces its whole feed and both
/// sides sync from scratch.
#[test]
fn a_device_with_a_new_store_under_the_same_name_syncs_from_scratch() {
    let mut net = synced_pair(5);
    assert!(net.nodes[1].feed_head() >= 5);
    // The same principal and tokens, nothing held.
    net.nodes[1] = Net::new(&[1], standard_acl()).nodes.remove(1);
    let d = deal(&net.nodes[1], 1, 3, 99);
    net.nodes[1].put(record_id("made-on-the-new-phone"), d);
    assert!(net.nodes[1].feed_head() < 5);

    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", closes(&run));
    assert!(
        net.nodes[HUB]
            .doc(&record_id("made-on-the-new-phone"))
            .is_some()
    );
    assert_eq!(net.nodes[1].doc_ids().count(), 6);
    check_converged(&net);
    // The next session is a plain reconnect.
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "{:?}", closes(&run));
    assert_eq!(run.changed, 0);
}
