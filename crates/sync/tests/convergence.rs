//! The convergence property of the real protocol, in memory: a hub and N devices make random
//! edits and sync in random pairs (hub and LAN), with connections cut at random points; then
//! everyone syncs with the hub until quiet. Every replica must hold the same heads for every
//! document its user may see, and no device may ever hold a document outside its user's access.
//!
//! `PROPTEST_CASES` raises the number of cases (default 64 here).

mod support;

use proptest::prelude::*;
use sellsync_model::UserId;
use sellsync_sync::{CloseReason, Effect};
use support::{HUB, Net, check_converged, deal, record_id, set_field, standard_acl};

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u8>(), any::<u8>()).prop_map(|(dev, owner)| Op::Create { dev, owner }),
        4 => (any::<u8>(), any::<u16>(), 0u8..4, -50i64..50)
            .prop_map(|(node, doc, field, value)| Op::Edit { node, doc, field, value }),
        3 => (any::<u8>(), any::<u8>(), proptest::option::weighted(0.4, 0u8..16))
            .prop_map(|(a, b, cut)| Op::Sync { a, b, cut }),
    ]
}

const USERS: [u64; 5] = [1, 3, 2, 1, 9];

fn run_scenario(n_dev: usize, ops: &[Op]) {
    let acl = standard_acl();
    let mut net = Net::new(&USERS[..n_dev], acl.clone());
    let n = net.nodes.len();
    let mut created = 0u32;
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
                    for (_, e) in &run.effects {
                        if let Effect::Close(reason) = e {
                            assert_eq!(reason, &CloseReason::ConnectionLost, "{:?}", run.effects);
                        }
                    }
                    if cut.is_none() {
                        assert!(
                            run.finished,
                            "an uncut session must finish: {:?}",
                            run.effects
                        );
                    }
                }
            }
        }
        for dev in &net.nodes[1..] {
            let user = dev.user().expect("devices have users");
            for id in dev.doc_ids() {
                assert_eq!(
                    dev.may_see(user, id),
                    Some(true),
                    "{} holds {id}",
                    dev.node()
                );
            }
        }
    }
    net.settle();
    check_converged(&net);
    // Quiet means quiet: one more pass moves nothing.
    for dev in 1..n {
        assert_eq!(net.sync(dev, HUB, None).changed, 0);
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
