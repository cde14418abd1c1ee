//! Who may see whose records: a file mirroring Zendesk Sell visibility.
//!
//! Format (TOML):
//!
//! ```toml
//! # Users who see every record.
//! admins = [1]
//!
//! # Members of one team see each other's records.
//! [[teams]]
//! id = 10
//! members = [2, 3]
//! ```
//!
//! Rule: a user sees a record when they are an admin, when they own it (the projection's
//! `owner_id`), or when its owner is in one of their teams. A record whose owner is in open
//! conflict is seen by whoever may see any of the candidate owners. A record with no owner is
//! seen by admins only. Without a file, nobody is an admin and every user sees only their own
//! records.

use std::collections::{BTreeMap, BTreeSet};

use sellsync_model::UserId;
use serde::Deserialize;

/// An access file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The text is not valid TOML of the expected shape.
    #[error("invalid access file: {0}")]
    Parse(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    admins: Vec<u64>,
    #[serde(default)]
    teams: Vec<TeamFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamFile {
    id: u64,
    #[serde(default)]
    members: Vec<u64>,
}

/// The access rules of an organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    admins: BTreeSet<UserId>,
    /// The teams of each user. Invariant: symmetric with the file's `teams` lists.
    teams: BTreeMap<UserId, BTreeSet<u64>>,
}

impl Acl {
    /// Parses the TOML format described in the module documentation.
    pub fn from_toml(text: &str) -> Result<Acl, AclError> {
        let file: AclFile = toml::from_str(text).map_err(|e| AclError::Parse(e.to_string()))?;
        let mut acl = Acl {
            admins: file.admins.into_iter().map(UserId).collect(),
            teams: BTreeMap::new(),
        };
        for t in file.teams {
            for m in t.members {
                acl.teams.entry(UserId(m)).or_default().insert(t.id);
            }
        }
        Ok(acl)
    }

    /// Makes `user` an admin.
    pub fn add_admin(&mut self, user: UserId) {
        self.admins.insert(user);
    }

    /// Puts `user` in team `team`.
    pub fn add_member(&mut self, team: u64, user: UserId) {
        self.teams.entry(user).or_default().insert(team);
    }

    /// Whether `user` is an admin.
    pub fn is_admin(&self, user: UserId) -> bool {
        self.admins.contains(&user)
    }

    /// Whether `user` may see a record owned by `owner`.
    pub fn may_see(&self, user: UserId, owner: UserId) -> bool {
        user == owner
            || self.is_admin(user)
            || match (self.teams.get(&user), self.teams.get(&owner)) {
                (Some(a), Some(b)) => !a.is_disjoint(b),
                _ => false,
            }
    }

    /// Whether `user` may see a record whose candidate owners are `owners` (empty: no owner).
    pub fn may_see_any(&self, user: UserId, owners: &[UserId]) -> bool {
        self.is_admin(user) || owners.iter().any(|o| self.may_see(user, *o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_teams_and_owners() {
        let acl = Acl::from_toml(
            "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n[[teams]]\nid = 11\nmembers = [4]\n",
        )
        .unwrap();
        assert!(acl.may_see(UserId(1), UserId(4)));
        assert!(acl.may_see(UserId(2), UserId(3)));
        assert!(!acl.may_see(UserId(2), UserId(4)));
        assert!(acl.may_see(UserId(5), UserId(5)));
        assert!(!acl.may_see_any(UserId(2), &[]));
        assert!(acl.may_see_any(UserId(1), &[]));
        assert!(acl.may_see_any(UserId(2), &[UserId(4), UserId(3)]));
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(Acl::from_toml("admins = [\"x\"]").is_err());
        assert!(Acl::from_toml("admin = [1]").is_err());
        assert!(Acl::from_toml("[[teams]]\nmembers = [1]").is_err());
    }
}
