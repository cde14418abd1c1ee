//! A deterministic in-memory network of one hub and N devices, all [`MemReplica`]s, joined by
//! links that carry whole flights and can be cut after any number of frames.
//!
//! Shared by the integration tests and the benchmarks (`#[path]`-included), so not every
//! item is used by every includer.
#![allow(dead_code, unreachable_pub)]

use automerge::{Automerge, ObjType, ROOT, ReadDoc, ScalarValue, transaction::Transactable};
use sellsync_model::{DeviceId, RecordId, UserId};
use sellsync_sync::memory::{Acl, MemReplica};
use sellsync_sync::{
    AcceptConfig, DialConfig, Effect, Event, Frame, Limits, Principal, Role, Session,
};

/// Index of the hub in [`Net::nodes`].
pub const HUB: usize = 0;

/// What one session did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// Flights: maximal runs of frames in one direction (the hello is the first).
    pub legs: u32,
    /// Frames delivered.
    pub frames: u32,
    /// Bytes delivered, both directions.
    pub bytes: u64,
    /// Both sides finished the exchange.
    pub finished: bool,
    /// Documents changed on either side.
    pub changed: u32,
    /// Every effect of both sides, dialer's and acceptor's interleaved in delivery order.
    pub effects: Vec<(usize, Effect)>,
}

impl Run {
    /// Round trips, counting the handshake: two legs make one.
    pub fn round_trips(&self) -> u32 {
        self.legs.div_ceil(2)
    }
}

/// The hub and the devices.
#[derive(Debug)]
pub struct Net {
    pub nodes: Vec<MemReplica>,
    pub tokens: Vec<Vec<u8>>,
    pub limits: Limits,
}

pub fn node_id(i: usize) -> DeviceId {
    if i == HUB {
        "hub".parse().unwrap()
    } else {
        format!("dev-{i}").parse().unwrap()
    }
}

pub fn record_id(s: &str) -> RecordId {
    s.parse().unwrap()
}

impl Net {
    /// A hub plus one device per entry of `users`, all sharing `acl` and every token.
    pub fn new(users: &[u64], acl: Acl) -> Self {
        let mut principals = vec![Principal {
            node: node_id(HUB),
            role: Role::Hub,
            user: None,
        }];
        for (i, u) in users.iter().enumerate() {
            principals.push(Principal {
                node: node_id(i + 1),
                role: Role::Device,
                user: Some(UserId(*u)),
            });
        }
        let tokens: Vec<Vec<u8>> = (0..principals.len())
            .map(|i| format!("token-{i}").into_bytes())
            .collect();
        let mut nodes = Vec::new();
        for p in &principals {
            let mut r = MemReplica::new(p.node.clone(), p.user, acl.clone());
            for (t, q) in tokens.iter().zip(&principals) {
                r.add_token(t.clone(), q.clone());
            }
            nodes.push(r);
        }
        Net {
            nodes,
            tokens,
            limits: Limits::default(),
        }
    }

    /// Runs one session, `dialer` to `acceptor`, delivering whole flights alternately. When
    /// `cut_after` is `Some(n)`, the link drops after `n` delivered frames and both sides see
    /// the connection close.
    pub fn sync(&mut self, dialer: usize, acceptor: usize, cut_after: Option<u32>) -> Run {
        let (dial_cfg, accept_cfg) = self.dial_config(dialer, acceptor);
        let mut d = Session::dial(dial_cfg);
        let mut a = Session::accept(accept_cfg);
        let mut run = Run::default();
        let fx = d.handle(&mut self.nodes[dialer], Event::Opened);
        let mut outbox = self.absorb(dialer, acceptor, fx, &mut run);
        let mut towards_acceptor = true;
        // Bounded: every exchange in these tests ends well within this many legs.
        for _ in 0..200 {
            if outbox.is_empty() {
                break;
            }
            run.legs += 1;
            let (to, from) = if towards_acceptor {
                (acceptor, dialer)
            } else {
                (dialer, acceptor)
            };
            let mut replies = Vec::new();
            for frame in outbox.drain(..) {
                if cut_after.is_some_and(|n| run.frames >= n) {
                    let fx = d.handle(&mut self.nodes[dialer], Event::Closed);
                    self.absorb(dialer, acceptor, fx, &mut run);
                    let fx = a.handle(&mut self.nodes[acceptor], Event::Closed);
                    self.absorb(acceptor, dialer, fx, &mut run);
                    return run;
                }
                run.frames += 1;
                run.bytes += frame.len() as u64;
                self.check_wire_access(from, to, &frame);
                if std::env::var("SYNC_TRACE").is_ok() {
                    let f = Frame::decode(&frame, 1 << 30).unwrap();
                    let desc = match &f {
                        Frame::SyncBatch(b) => b
                            .entries
                            .iter()
                            .map(|e| {
                                let (d, m) = (&e.doc, &e.message);
                                let m2 = automerge::sync::Message::decode(m).unwrap();
                                format!(
                                    "{d}:{}B/h{}/n{}/hv{}/c{}",
                                    m.len(),
                                    m2.heads.len(),
                                    m2.need.len(),
                                    m2.have.len(),
                                    m2.changes.len()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                        other => format!("{other:?}").chars().take(150).collect(),
                    };
                    eprintln!("leg {} {from}->{to} {} {}", run.legs, f.name(), desc);
                }
                let session = if towards_acceptor { &mut a } else { &mut d };
                let fx = session.handle(&mut self.nodes[to], Event::Received(&frame));
                replies.extend(self.absorb(to, from, fx, &mut run));
            }
            outbox = replies;
            towards_acceptor = !towards_acceptor;
        }
        run.finished = d.is_ended()
            && a.is_ended()
            && !run
                .effects
                .iter()
                .any(|(_, e)| matches!(e, Effect::Close(_)));
        run
    }

    /// Access on the wire: a frame towards a device never names a document that the sender
    /// holds and the device's user may not see.
    fn check_wire_access(&self, from: usize, to: usize, bytes: &[u8]) {
        let Some(user) = self.nodes[to].user() else {
            return;
        };
        let docs: Vec<RecordId> = match Frame::decode(bytes, self.limits.max_frame) {
            Ok(Frame::Announce(a)) => a.docs,
            Ok(Frame::SyncBatch(b)) => b.entries.into_iter().map(|e| e.doc).collect(),
            _ => return,
        };
        for d in docs {
            assert_ne!(
                self.nodes[from].may_see(user, &d),
                Some(false),
                "{} sent {d} to {}, whose user {user} may not see it",
                self.nodes[from].node(),
                self.nodes[to].node()
            );
        }
    }

    /// Carries out a side's effects the way a shell would; returns the frames to send.
    fn absorb(
        &mut self,
        me: usize,
        _peer: usize,
        fx: sellsync_sync::Effects,
        run: &mut Run,
    ) -> Vec<Vec<u8>> {
        for e in &fx.effects {
            match e {
                Effect::CheckpointAdvanced { peer, checkpoint } => {
                    self.nodes[me].set_checkpoint(peer, *checkpoint);
                }
                Effect::DocumentsChanged(docs) => run.changed += docs.len() as u32,
                _ => {}
            }
            run.effects.push((me, e.clone()));
        }
        fx.send
    }

    /// Syncs every device with the hub, in turn, until a whole pass moves nothing. Returns the
    /// number of passes.
    pub fn settle(&mut self) -> u32 {
        for pass in 1..=10 {
            let mut moved = 0;
            for dev in 1..self.nodes.len() {
                let run = self.sync(dev, HUB, None);
                assert!(
                    run.finished,
                    "session dev-{dev} -> hub did not finish: {:?}",
                    run.effects
                );
                moved += run.changed;
            }
            if moved == 0 {
                return pass;
            }
        }
        panic!("the network did not settle in 10 passes");
    }
}

pub fn role(i: usize) -> Role {
    if i == HUB { Role::Hub } else { Role::Device }
}

/// A deal-like document: `owner` at the root and `n_fields` scalar fields in `fields`.
pub fn deal(r: &MemReplica, owner: u64, n_fields: usize, salt: u64) -> Automerge {
    let mut doc = r.new_doc();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "owner", ScalarValue::Uint(owner))?;
        let f = tx.put_object(ROOT, "fields", ObjType::Map)?;
        for i in 0..n_fields {
            match i % 3 {
                0 => tx.put(&f, format!("f{i}"), format!("value {salt} {i}"))?,
                1 => tx.put(&f, format!("f{i}"), (salt as i64) * 100 + i as i64)?,
                _ => tx.put(&f, format!("f{i}"), i % 2 == 0)?,
            }
        }
        Ok(())
    })
    .expect("building a document in memory cannot fail");
    doc
}

/// Writes `value` into field `field` of a held deal.
pub fn set_field(r: &mut MemReplica, id: &RecordId, field: &str, value: i64) -> bool {
    r.edit(id, |doc| {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let f = match tx.get(ROOT, "fields")? {
                Some((_, id)) => id,
                None => tx.put_object(ROOT, "fields", ObjType::Map)?,
            };
            tx.put(&f, field, value)?;
            Ok(())
        })
        .expect("editing a document in memory cannot fail");
    })
}

/// Writes several fields of a held deal in one change (one user action).
pub fn set_fields(r: &mut MemReplica, id: &RecordId, fields: &[(&str, i64)]) -> bool {
    r.edit(id, |doc| {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let f = match tx.get(ROOT, "fields")? {
                Some((_, id)) => id,
                None => tx.put_object(ROOT, "fields", ObjType::Map)?,
            };
            for (field, value) in fields {
                tx.put(&f, *field, *value)?;
            }
            Ok(())
        })
        .expect("editing a document in memory cannot fail");
    })
}

/// Checks convergence and access: every device holds exactly the hub's documents its user may
/// see, with the hub's heads; the hub holds every document any device holds.
pub fn check_converged(net: &Net) {
    let hub = &net.nodes[HUB];
    for dev in &net.nodes[1..] {
        let user = dev.user().expect("devices have users");
        for id in dev.doc_ids() {
            assert_eq!(
                hub.may_see(user, id),
                Some(true),
                "{} holds {id}, which its user {user} may not see (or the hub lacks it)",
                dev.node()
            );
            assert_eq!(
                dev.heads(id),
                hub.heads(id),
                "{} differs from the hub on {id}",
                dev.node()
            );
        }
        for id in hub.doc_ids() {
            if hub.may_see(user, id) == Some(true) {
                assert!(dev.doc(id).is_some(), "{} lacks {id}", dev.node());
            }
        }
        // Nothing a replica holds is outside its own user's access either.
        for id in dev.doc_ids() {
            assert_eq!(dev.may_see(user, id), Some(true));
        }
    }
}

/// Teams: users 1 and 2 share team 1; user 3 is alone in team 2; user 9 is an admin.
pub fn standard_acl() -> Acl {
    let mut acl = Acl::default();
    acl.teams.insert(UserId(1), 1);
    acl.teams.insert(UserId(2), 1);
    acl.teams.insert(UserId(3), 2);
    acl.admins.insert(UserId(9));
    acl
}

/// One connection of [`Net::sync_many`]: two sessions and the frames in flight each way.
struct Link {
    dialer: usize,
    acceptor: usize,
    d: Session,
    a: Session,
    to_acceptor: std::collections::VecDeque<Vec<u8>>,
    to_dialer: std::collections::VecDeque<Vec<u8>>,
    cut_after: Option<u32>,
    frames: u32,
    closed: bool,
    run: Run,
}

impl Net {
    fn dial_config(&self, dialer: usize, acceptor: usize) -> (DialConfig, AcceptConfig) {
        let dial = DialConfig {
            node: node_id(dialer),
            role: role(dialer),
            token: self.tokens[dialer].clone(),
            peer: Some(node_id(acceptor)),
            verify_peer_token: acceptor != HUB,
            mutual: false,
            nonce: Vec::new(),
            key: Vec::new(),
            limits: self.limits,
        };
        let accept = AcceptConfig {
            node: node_id(acceptor),
            role: role(acceptor),
            token: if acceptor == HUB {
                Vec::new()
            } else {
                self.tokens[acceptor].clone()
            },
            mutual: false,
            nonce: Vec::new(),
            limits: self.limits,
        };
        (dial, accept)
    }

    /// Runs several sessions at once, delivering one frame at a time: `schedule` picks, step by
    /// step, which open connection moves next (cycled), so the sessions' steps interleave on
    /// shared replicas (typically the hub). Each connection may be cut after `n` of its frames.
    /// Returns, per connection, what it did (`finished` as in [`Net::sync`]).
    pub fn sync_many(
        &mut self,
        pairs: &[(usize, usize, Option<u32>)],
        schedule: &[u8],
    ) -> Vec<Run> {
        let mut links: Vec<Link> = pairs
            .iter()
            .map(|&(dialer, acceptor, cut_after)| {
                let (dc, ac) = self.dial_config(dialer, acceptor);
                Link {
                    dialer,
                    acceptor,
                    d: Session::dial(dc),
                    a: Session::accept(ac),
                    to_acceptor: Default::default(),
                    to_dialer: Default::default(),
                    cut_after,
                    frames: 0,
                    closed: false,
                    run: Run::default(),
                }
            })
            .collect();
        for l in &mut links {
            let fx = l.d.handle(&mut self.nodes[l.dialer], Event::Opened);
            let sent = self.absorb(l.dialer, l.acceptor, fx, &mut l.run);
            l.to_acceptor.extend(sent);
        }
        // Bounded: every exchange here ends well within this many frames per connection.
        let limit = 400 * links.len().max(1);
        for step in 0..limit {
            let open: Vec<usize> = (0..links.len())
                .filter(|&i| {
                    !links[i].closed
                        && (!links[i].to_acceptor.is_empty() || !links[i].to_dialer.is_empty())
                })
                .collect();
            if open.is_empty() {
                break;
            }
            let pick = schedule
                .get(step % schedule.len().max(1))
                .copied()
                .unwrap_or(0);
            let l = &mut links[open[usize::from(pick) % open.len()]];
            if l.cut_after.is_some_and(|n| l.frames >= n) {
                l.closed = true;
                let fx = l.d.handle(&mut self.nodes[l.dialer], Event::Closed);
                self.absorb(l.dialer, l.acceptor, fx, &mut l.run);
                let fx = l.a.handle(&mut self.nodes[l.acceptor], Event::Closed);
                self.absorb(l.acceptor, l.dialer, fx, &mut l.run);
                continue;
            }
            l.frames += 1;
            if let Some(frame) = l.to_acceptor.pop_front() {
                self.check_wire_access(l.dialer, l.acceptor, &frame);
                let fx =
                    l.a.handle(&mut self.nodes[l.acceptor], Event::Received(&frame));
                let sent = self.absorb(l.acceptor, l.dialer, fx, &mut l.run);
                l.to_dialer.extend(sent);
            } else if let Some(frame) = l.to_dialer.pop_front() {
                self.check_wire_access(l.acceptor, l.dialer, &frame);
                let fx =
                    l.d.handle(&mut self.nodes[l.dialer], Event::Received(&frame));
                let sent = self.absorb(l.dialer, l.acceptor, fx, &mut l.run);
                l.to_acceptor.extend(sent);
            }
        }
        links
            .into_iter()
            .map(|mut l| {
                l.run.frames = l.frames;
                l.run.finished = !l.closed
                    && l.d.is_ended()
                    && l.a.is_ended()
                    && !l
                        .run
                        .effects
                        .iter()
                        .any(|(_, e)| matches!(e, Effect::Close(_)));
                l.run
            })
            .collect()
    }
}
