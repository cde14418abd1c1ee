//! The convergence property of the real protocol, in memory: a hub and N devices make random
//! edits, move deals between owners (so that access is revoked and granted again), and sync in
//! random pairs (hub and LAN), alone or several sessions at once with their steps interleaved on
//! the shared replicas, with connections cut at random points; then everyone syncs with the hub
//! until quiet. Every replica must hold the same heads for every document its user may see; a
//! device never receives a document outside its user's access; a document whose access the hub
//! revoked stays on the device (its offline edits are not dropped) and nothing more of it moves.
//!
//! `PROPTEST_CASES` raises the number of cases (default 64 here).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ROOT, ScalarValue, transaction::Transactable};
use proptest::prelude::*;
use sellsync_model::{RecordId, UserId};
use sellsync_sync::{CloseReason, Effect};
use support::{HUB, Net, Run, deal, record_id, set_field, standard_acl};

#[derive(Debug, Clone)]
enum Op {
    Create {
        dev: u8,
        owner: u8,
    },
    Edit {
        node: u8,
        doc: u16,
        field: u8,
        value: i64,
    },
    Sync {
        a: u8,
        b: u8,
        cut: Option<u8>,
    },
    /// Moves a deal to another owner: on the hub any owner (an admin in the CRM), on a device
    /// only an owner its user may see (the device's edit API refuses others).
    Reassign {
        node: u8,
        doc: u16,
        owner: u8,
    },
    /// Several sessions at once, their frames interleaved by `schedule`.
    Together {
        pairs: Vec<(u8, u8, Option<u8>)>,
        schedule: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u8>(), any::<u8>()).prop_map(|(dev, owner)| Op::Create { dev, owner }),
        4 => (any::<u8>(), any::<u16>(), 0u8..4, -50i64..50)
            .prop_map(|(node, doc, field, value)| Op::Edit { node, doc, field, value }),
        3 => (any::<u8>(), any::<u8>(), proptest::option::weighted(0.4, 0u8..16))
            .prop_map(|(a, b, cut)| Op::Sync { a, b, cut }),
        1 => (any::<u8>(), any::<u16>(), any::<u8>())
            .prop_map(|(node, doc, owner)| Op::Reassign { node, doc, owner }),
        2 => (
            proptest::collection::vec(
                (any::<u8>(), any::<u8>(), proptest::option::weighted(0.2, 0u8..24)),
                2..5,
            ),
            proptest::collection::vec(any::<u8>(), 1..32),
        )
            .prop_map(|(pairs, schedule)| Op::Together { pairs, schedule }),
    ]
}

/// The owners a deal can have.
const OWNERS: [u64; 4] = [1, 2, 3, 9];

/// Writes a new owner into a held deal.
fn reassign(net: &mut Net, node: usize, id: &RecordId, owner: u64) {
    net.nodes[node].edit(id, |doc| {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "owner", ScalarValue::Uint(owner))?;
            Ok(())
        })
        .expect("editing a document in memory cannot fail");
    });
}

/// What the test keeps beside the replicas: the documents the hub revoked from each device.
#[derive(Debug, Default)]
struct Revocations(BTreeMap<usize, BTreeSet<RecordId>>);

impl Revocations {
    fn absorb(&mut self, run: &Run) {
        for (node, e) in &run.effects {
            if let Effect::AccessRevoked(docs) = e {
                assert_ne!(*node, HUB, "only devices are told of revocations");
                self.0
                    .entry(*node)
                    .or_default()
                    .extend(docs.iter().cloned());
            }
        }
    }

    fn of(&self, dev: usize) -> BTreeSet<RecordId> {
        self.0.get(&dev).cloned().unwrap_or_default()
    }
}

/// Converged within access: every device holds the hub's heads of each document its user may
/// see now; a document it holds that its user may no longer see is one the hub revoked from it;
/// and it lacks nothing its user may see.
fn check_converged(net: &Net, revoked: &Revocations) {
    let hub = &net.nodes[HUB];
    for (i, dev) in net.nodes.iter().enumerate().skip(1) {
        let user = dev.user().expect("devices have users");
        for id in dev.doc_ids() {
            if hub.may_see(user, id) == Some(true) {
                assert_eq!(
                    dev.heads(id),
                    hub.heads(id),
                    "{} differs from the hub on {id}",
                    dev.node()
                );
            } else {
                assert!(
                    revoked.of(i).contains(id),
                    "{} holds {id}, which its user {user} may not see, and the hub never revoked it",
                    dev.node()
                );
            }
        }
        for id in hub.doc_ids() {
            if hub.may_see(user, id) == Some(true) {
                assert!(dev.doc(id).is_some(), "{} lacks {id}", dev.node());
            }
        }
    }
}

const USERS: [u64; 5] = [1, 3, 2, 1, 9];

fn run_scenario(n_dev: usize, ops: &[Op]) {
    let acl = standard_acl();
    let mut net = Net::new(&USERS[..n_dev], acl.clone());
    let n = net.nodes.len();
    let mut created = 0u32;
    let mut revoked = Revocations::default();
    for op in ops {
        match *op {
            Op::Create { dev, owner } => {
                let dev = 1 + usize::from(dev) % n_dev;
                let user = net.nodes[dev].user().expect("devices have users");
                let owners: Vec<u64> = [1, 2, 3, 9]
                    .into_iter()
                    .filter(|o| acl.may_see(user, UserId(*o)))
                    .collect();
                let owner = owners[usize::from(owner) % owners.len()];
                created += 1;
                let doc = deal(&net.nodes[dev], owner, 4, u64::from(created));
                net.nodes[dev].put(record_id(&format!("d{created}")), doc);
            }
            Op::Edit {
                node,
                doc,
                field,
                value,
            } => {
                let node = usize::from(node) % n;
                let ids: Vec<_> = net.nodes[node].doc_ids().cloned().collect();
                if !ids.is_empty() {
                    let id = &ids[usize::from(doc) % ids.len()];
                    set_field(&mut net.nodes[node], id, &format!("f{field}"), value);
                }
            }
            Op::Sync { a, b, cut } => {
                let (a, b) = (usize::from(a) % n, usize::from(b) % n);
                if a != b {
                    let run = net.sync(a, b, cut.map(u32::from));
                    check_run(&run, cut.is_none());
                    revoked.absorb(&run);
                }
            }
            Op::Reassign { node, doc, owner } => {
                let node = usize::from(node) % n;
                let ids: Vec<_> = net.nodes[node].doc_ids().cloned().collect();
                if !ids.is_empty() {
                    let id = &ids[usize::from(doc) % ids.len()];
                    let owners: Vec<u64> = match net.nodes[node].user() {
                        None => OWNERS.to_vec(),
                        Some(user) => OWNERS
                            .into_iter()
                            .filter(|o| acl.may_see(user, UserId(*o)))
                            .collect(),
                    };
                    let owner = owners[usize::from(owner) % owners.len()];
                    reassign(&mut net, node, id, owner);
                }
            }
            Op::Together {
                ref pairs,
                ref schedule,
            } => {
                // One session per pair of nodes at a time, and a device in one session at a
                // time (a phone syncs with one peer at once); the hub takes many.
                let mut busy = BTreeSet::new();
                let mut chosen = Vec::new();
                for &(a, b, cut) in pairs {
                    let (a, b) = (usize::from(a) % n, usize::from(b) % n);
                    let a = if a == HUB { 1 + b % (n - 1) } else { a };
                    if a == b || busy.contains(&a) || (b != HUB && busy.contains(&b)) {
                        continue;
                    }
                    busy.insert(a);
                    if b != HUB {
                        busy.insert(b);
                    }
                    chosen.push((a, b, cut.map(u32::from)));
                }
                let runs = net.sync_many(&chosen, schedule);
                for (run, &(_, _, cut)) in runs.iter().zip(&chosen) {
                    check_run(run, cut.is_none());
                    revoked.absorb(run);
                }
            }
        }
        // A device only ever holds documents its user may see in its own copy, or that the hub
        // revoked from it (kept, with its offline edits).
        for (i, dev) in net.nodes.iter().enumerate().skip(1) {
            let user = dev.user().expect("devices have users");
            for id in dev.doc_ids() {
                assert!(
                    dev.may_see(user, id) == Some(true) || revoked.of(i).contains(id),
                    "{} holds {id}",
                    dev.node()
                );
            }
        }
    }
    for _ in 0..3 {
        for dev in 1..n {
            let run = net.sync(dev, HUB, None);
            check_run(&run, true);
            revoked.absorb(&run);
        }
    }
    net.settle();
    check_converged(&net, &revoked);
    // Quiet means quiet: one more pass moves nothing.
    for dev in 1..n {
        assert_eq!(net.sync(dev, HUB, None).changed, 0);
    }
}

/// A session ends cleanly, or by the cut: never by a protocol error.
fn check_run(run: &Run, uncut: bool) {
    for (_, e) in &run.effects {
        if let Effect::Close(reason) = e {
            assert_eq!(reason, &CloseReason::ConnectionLost, "{:?}", run.effects);
        }
    }
    if uncut {
        assert!(
            run.finished,
            "an uncut session must finish: {:?}",
            run.effects
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        // Relative to the crate directory, where `cargo test` runs.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/convergence.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_edits_syncs_and_cuts_converge_within_access(
        n_dev in 2usize..=5,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run_scenario(n_dev, &ops);
    }
}

#[test]
fn a_fixed_busy_scenario_converges() {
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.push(Op::Create {
            dev: i,
            owner: i / 3,
        });
        ops.push(Op::Edit {
            node: i.wrapping_mul(7),
            doc: u16::from(i) * 13,
            field: i % 4,
            value: i64::from(i),
        });
        ops.push(Op::Sync {
            a: i,
            b: i.wrapping_add(1 + i % 3),
            cut: (i % 4 == 0).then_some(i % 9),
        });
    }
    run_scenario(5, &ops);
}
