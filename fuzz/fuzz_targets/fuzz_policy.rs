//! The organisation's text files, whatever their content: the policy TOML
//! (`sellsync_model::Policy::from_toml`) and the access file (`sellsync_service::Acl::from_toml`)
//! never panic.
//!
//! Beyond not panicking, what a file that parses says is checked against an independent reading
//! of the same TOML:
//! - policy: every `[section] field = "tier"` entry is the tier `Policy::tier` answers for that
//!   field (so an override cannot be dropped, misfiled under another section, or mixed up with a
//!   default);
//! - access file: every listed admin is an admin, and every two members of one team see each
//!   other's records.
//!
//! The same text is given to both parsers: most inputs are errors for at least one of them, and
//! a valid input of one shape still explores the other's error paths.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sellsync_model::UserId;
use sellsync_model::{
    ActivityId, ActivityKind, Catalog, FieldKey, Policy, RecordKind, Scope, Tier,
};
use sellsync_service::Acl;
use serde::Deserialize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_policy(text);
    check_acl(text);
});

fn check_policy(text: &str) {
    let Ok(policy) = Policy::from_toml(text) else {
        return;
    };
    let _ = policy.check_against(&Catalog::example());
    // The independent reading: the shape `from_toml` documents, a table of tables of strings.
    let table: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        toml::from_str(text).expect("a policy that parses is a table of tables of strings");
    let activity: ActivityId = "fuzz-activity".parse().expect("a valid activity id");
    for (section, fields) in &table {
        for (field, tier) in fields {
            let key: FieldKey = field.parse().expect("a field the policy accepted parses");
            let tier: Tier = tier.parse().expect("a tier the policy accepted parses");
            let (kind, scope) = match section.as_str() {
                "deal" => (RecordKind::Deal, Scope::Record),
                "contact" => (RecordKind::Contact, Scope::Record),
                "task" => (
                    RecordKind::Deal,
                    Scope::Activity {
                        id: activity.clone(),
                        kind: ActivityKind::Task,
                    },
                ),
                "call" => (
                    RecordKind::Deal,
                    Scope::Activity {
                        id: activity.clone(),
                        kind: ActivityKind::Call,
                    },
                ),
                other => panic!("the policy accepted an unknown section {other:?}"),
            };
            assert_ne!(
                tier,
                Tier::Merge,
                "the policy accepted merge on {section}.{field}"
            );
            assert_eq!(
                policy.tier(kind, &scope, &key),
                tier,
                "[{section}] {field}: the parsed policy answers another tier than the file's"
            );
        }
    }
}

/// The independent reading of an access file: its documented shape, ids as u64 (beyond what
/// a TOML integer, an i64, can hold in a `toml::Table`).
#[derive(Deserialize)]
struct AccessFile {
    #[serde(default)]
    admins: Vec<u64>,
    #[serde(default)]
    teams: Vec<AccessTeam>,
}

#[derive(Deserialize)]
struct AccessTeam {
    #[serde(default)]
    members: Vec<u64>,
}

fn check_acl(text: &str) {
    let Ok(acl) = Acl::from_toml(text) else {
        return;
    };
    let file: AccessFile = toml::from_str(text).expect("an access file that parses reads");
    for admin in file.admins {
        assert!(
            acl.is_admin(UserId(admin)),
            "admin {admin} of the file is not an admin"
        );
    }
    for team in file.teams {
        for a in &team.members {
            for b in &team.members {
                assert!(
                    acl.may_see(UserId(*a), UserId(*b)),
                    "{a} and {b} share a team but {a} may not see {b}'s records"
                );
            }
        }
    }
}
