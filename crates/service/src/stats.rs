//! The organisation's conflict figures, from the hub's records: per ISO week, how many syncs
//! met a conflict, how many conflicts resolved themselves (a policy tier decided) and how many
//! a person decided, and how long a person took; and who has conflicts waiting, since when.
//! Pure: [`compute`] reads audit trails, open conflicts and the hub's sync counts.

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Utc};
use sellsync_model::{AuditEntry, Conflict};
use serde::{Deserialize, Serialize};

/// Key-value prefix of the hub's sync counts by week (`<prefix><week>`: syncs, then syncs with
/// a conflict, each a little-endian u64).
pub const SYNCS_KEY: &str = "service/stats/syncs/";

/// Key-value prefix of each device's last finished sync with the hub (`<prefix><device>`: unix
/// ms, a little-endian i64).
pub const LAST_SYNC_KEY: &str = "service/stats/last-sync/";

/// Each device's last finished sync with the hub (ms), by device id.
pub fn last_syncs(
    r: &impl sellsync_store::StoreRead,
) -> Result<BTreeMap<String, i64>, sellsync_store::StoreError> {
    Ok(r.kv_prefix(LAST_SYNC_KEY)?
        .into_iter()
        .filter_map(|(k, v)| {
            let device = k.strip_prefix(LAST_SYNC_KEY)?.to_owned();
            let ms = i64::from_le_bytes(v.as_slice().try_into().ok()?);
            Some((device, ms))
        })
        .collect())
}

/// The ISO week a time falls in, as `2026-W49` (UTC).
pub fn week_of(ms: i64) -> String {
    let t = Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(|| Utc.timestamp_millis_opt(0).single().unwrap_or_default());
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

/// Syncs in one week: every session a device finished, and those in which a record it sent
/// changes for was in conflict at the session's end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    /// Sessions finished.
    pub syncs: u64,
    /// Of those, the ones that left a record they touched in conflict.
    pub with_conflicts: u64,
}

impl SyncCounts {
    /// As stored.
    pub fn encode(self) -> Vec<u8> {
        let mut v = self.syncs.to_le_bytes().to_vec();
        v.extend_from_slice(&self.with_conflicts.to_le_bytes());
        v
    }

    /// From storage; `None` for bytes of another length.
    pub fn decode(b: &[u8]) -> Option<SyncCounts> {
        let syncs = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let with_conflicts = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        (b.len() == 16).then_some(SyncCounts {
            syncs,
            with_conflicts,
        })
    }
}

/// One week's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Week {
    /// `2026-W49`.
    pub week: String,
    /// Syncs finished (counted since the hub counts them).
    pub syncs: u64,
    /// Syncs that left a record they touched in conflict.
    pub syncs_with_conflicts: u64,
    /// Their share of the syncs (`None`: no syncs).
    pub share_of_syncs_with_conflicts: Option<f64>,
    /// Concurrent writes a policy tier settled (latest wins, notify, keep the CRM's).
    pub resolved_automatically: u64,
    /// Conflicts a person decided.
    pub resolved_manually: u64,
    /// The automatic share of all resolutions (`None`: none).
    pub share_resolved_automatically: Option<f64>,
    /// The median time from a conflict's first candidate to a person's decision (ms).
    pub median_ms_to_manual_resolution: Option<i64>,
}

/// A user with conflicts waiting for a decision (they wrote one of the candidates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The user.
    pub user: u64,
    /// Their name, from the catalog (`None`: not listed).
    #[serde(default)]
    pub name: Option<String>,
    /// Open conflicts they are party to.
    pub open: u64,
    /// When the oldest of them began (ms).
    pub oldest_ms: i64,
}

/// The figures: by week (oldest first), and who has conflicts waiting (most first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// One row per week with any sync or resolution.
    pub weeks: Vec<Week>,
    /// Open conflicts on the hub, all users.
    pub open_conflicts: u64,
    /// Users party to open conflicts.
    pub waiting: Vec<Waiting>,
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// The figures from every record's audit trail, every open conflict, and the sync counts by
/// week. An audit entry with a person (`by`) is a manual decision; one without is automatic.
pub fn compute<'a>(
    audits: impl IntoIterator<Item = &'a AuditEntry>,
    open: impl IntoIterator<Item = &'a Conflict>,
    syncs: &BTreeMap<String, SyncCounts>,
) -> Stats {
    #[derive(Default)]
    struct Acc {
        auto: u64,
        manual: u64,
        waits: Vec<i64>,
    }
    let mut weeks: BTreeMap<String, Acc> = BTreeMap::new();
    for e in audits {
        let acc = weeks.entry(week_of(e.at)).or_default();
        if e.by.is_some() {
            acc.manual += 1;
            if let Some(first) = e.candidates.iter().map(|c| c.at).min() {
                acc.waits.push((e.at - first).max(0));
            }
        } else {
            acc.auto += 1;
        }
    }
    for week in syncs.keys() {
        weeks.entry(week.clone()).or_default();
    }
    let rows = weeks
        .into_iter()
        .map(|(week, a)| {
            let s = syncs.get(&week).copied().unwrap_or_default();
            Week {
                syncs: s.syncs,
                syncs_with_conflicts: s.with_conflicts,
                share_of_syncs_with_conflicts: share(s.with_conflicts, s.syncs),
                resolved_automatically: a.auto,
                resolved_manually: a.manual,
                share_resolved_automatically: share(a.auto, a.auto + a.manual),
                median_ms_to_manual_resolution: median(a.waits),
                week,
            }
        })
        .collect();
    let mut by_user: BTreeMap<u64, Waiting> = BTreeMap::new();
    let mut open_conflicts = 0;
    for c in open {
        open_conflicts += 1;
        let parties = match c {
            Conflict::Field { candidates, .. } => candidates.clone(),
            Conflict::Record {
                deleted_by,
                restored_by,
                ..
            } => deleted_by.iter().chain(restored_by).cloned().collect(),
            _ => Vec::new(),
        };
        let since = parties.iter().map(|p| p.at).min().unwrap_or(i64::MAX);
        let mut users: Vec<u64> = parties.iter().map(|p| p.by.0).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            let w = by_user.entry(user).or_insert(Waiting {
                user,
                name: None,
                open: 0,
                oldest_ms: i64::MAX,
            });
            w.open += 1;
            w.oldest_ms = w.oldest_ms.min(since);
        }
    }
    let mut waiting: Vec<Waiting> = by_user.into_values().collect();
    waiting.sort_by_key(|w| (std::cmp::Reverse(w.open), w.oldest_ms, w.user));
    Stats {
        weeks: rows,
        open_conflicts,
        waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sellsync_model::{Candidate, Chosen, FieldKey, Slot, Tier, UserId, Value};

    const MON: i64 = 1_796_601_600_000; // 2026-12-07T00:00:00Z, a Monday (week 50)
    const H: i64 = 3_600_000;

    fn cand(by: u64, at: i64) -> Candidate {
        Candidate {
            value: Value::Int(at),
            at,
            by: UserId(by),
            device: "d".parse().unwrap(),
            op: format!("{at}@d"),
        }
    }

    fn entry(by: Option<u64>, at: i64, first: i64) -> AuditEntry {
        AuditEntry {
            id: format!("{at}"),
            slot: Some(Slot::record(FieldKey::Std("value".into()))),
            policy: if by.is_some() { "manual" } else { "lww" }.into(),
            candidates: vec![cand(2, first), cand(3, first + 1)],
            chosen: Chosen::Value(Value::Int(0)),
            chosen_op: None,
            by: by.map(UserId),
            device: None,
            at,
        }
    }

    #[test]
    fn weeks_count_each_kind_and_the_median_wait() {
        assert_eq!(week_of(MON), "2026-W50");
        assert_eq!(week_of(MON - 1), "2026-W49");
        let audits = [
            entry(None, MON + H, MON),
            entry(None, MON + 2 * H, MON),
            entry(Some(2), MON + 3 * H, MON),         // 3 h
            entry(Some(3), MON + 5 * H, MON + H),     // 4 h
            entry(Some(3), MON + 9 * H, MON + 2 * H), // 7 h
            entry(Some(2), MON - H, MON - 2 * H),     // the week before: 1 h
        ];
        let syncs = BTreeMap::from([(
            "2026-W50".to_owned(),
            SyncCounts {
                syncs: 40,
                with_conflicts: 10,
            },
        )]);
        let s = compute(&audits, [], &syncs);
        assert_eq!(s.weeks.len(), 2);
        let (before, w) = (&s.weeks[0], &s.weeks[1]);
        assert_eq!(before.week, "2026-W49");
        assert_eq!(before.median_ms_to_manual_resolution, Some(H));
        assert_eq!(before.share_of_syncs_with_conflicts, None);
        assert_eq!((w.resolved_automatically, w.resolved_manually), (2, 3));
        assert_eq!(w.share_resolved_automatically, Some(0.4));
        assert_eq!(w.median_ms_to_manual_resolution, Some(4 * H));
        assert_eq!(w.share_of_syncs_with_conflicts, Some(0.25));
    }

    #[test]
    fn who_waits_counts_every_party_once_with_the_oldest_first() {
        let field = |cands: Vec<Candidate>| Conflict::Field {
            slot: Slot::record(FieldKey::Std("value".into())),
            tier: Tier::Manual,
            candidates: cands,
        };
        let open = [
            field(vec![cand(2, MON), cand(3, MON + H)]),
            field(vec![cand(2, MON + 2 * H), cand(2, MON + 3 * H)]),
        ];
        let s = compute([], &open, &BTreeMap::new());
        assert_eq!(s.open_conflicts, 2);
        assert_eq!(
            s.waiting,
            vec![
                Waiting {
                    user: 2,
                    name: None,
                    open: 2,
                    oldest_ms: MON
                },
                Waiting {
                    user: 3,
                    name: None,
                    open: 1,
                    oldest_ms: MON
                },
            ]
        );
    }

    #[test]
    fn counts_survive_storage_and_other_bytes_are_refused() {
        let c = SyncCounts {
            syncs: 7,
            with_conflicts: 3,
        };
        assert_eq!(SyncCounts::decode(&c.encode()), Some(c));
        assert_eq!(SyncCounts::decode(&[1, 2, 3]), None);
        assert_eq!(SyncCounts::decode(&[0; 17]), None);
    }
}
