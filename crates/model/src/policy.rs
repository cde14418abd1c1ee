//! Policy tiers: how concurrent writes of one field become one value.
//!
//! The defaults are the design's; a TOML file can move any register field to another tier:
//!
//! ```toml
//! [deal]
//! hot = "notify"
//! "custom_fields.Region" = "manual"
//!
//! [contact]
//! email = "lww"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::schema::{self, ActivityKind, FieldKey, RecordKind};
use crate::{Catalog, Scope};

/// How concurrent writes of a field become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Merged by the CRDT: note text, tags, activities. Not available for register fields.
    Merge,
    /// The latest write wins (by hybrid clock, then user, then op id); losers are audited.
    Lww,
    /// The latest write wins, and the losers' authors are notified.
    Notify,
    /// The CRM's value wins over concurrent device writes; the device's value is audited and its
    /// author notified.
    KeepServer,
    /// Concurrent different values are an open conflict until a person decides.
    Manual,
}

impl Tier {
    /// The tier's name in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Merge => "merge",
            Tier::Lww => "lww",
            Tier::Notify => "notify",
            Tier::KeepServer => "keep-server",
            Tier::Manual => "manual",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "merge" => Tier::Merge,
            "lww" => Tier::Lww,
            "notify" => Tier::Notify,
            "keep-server" => Tier::KeepServer,
            "manual" => Tier::Manual,
            _ => {
                return Err(format!(
                    "unknown tier {s:?} (expected lww, notify, keep-server or manual)"
                ));
            }
        })
    }
}

/// A policy file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file is not valid TOML or not a table of tables of strings.
    #[error("policy file: {0}")]
    Syntax(String),
    /// A section that is not `deal`, `contact`, `task` or `call`.
    #[error("policy file: unknown section [{0}] (expected deal, contact, task or call)")]
    UnknownSection(String),
    /// A field the section's record kind does not have.
    #[error("policy file: [{section}] has no field {field:?}")]
    UnknownField {
        /// The section.
        section: String,
        /// The field as written.
        field: String,
    },
    /// A custom field the catalog does not define.
    #[error(
        "policy file: [{section}] names custom field {field:?}, which the catalog does not define"
    )]
    UnknownCustomField {
        /// The section.
        section: String,
        /// The custom field's name.
        field: String,
    },
    /// A tier name that does not exist, or `merge` on a register field.
    #[error("policy file: [{section}] {field}: {reason}")]
    BadTier {
        /// The section.
        section: String,
        /// The field.
        field: String,
        /// Why the tier is refused.
        reason: String,
    },
}

/// Where a field lives: a record kind, or an activity kind inside a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Section {
    Record(RecordKind),
    Activity(ActivityKind),
}

impl Section {
    fn parse(s: &str) -> Option<Section> {
        Some(match s {
            "deal" => Section::Record(RecordKind::Deal),
            "contact" => Section::Record(RecordKind::Contact),
            "task" => Section::Activity(ActivityKind::Task),
            "call" => Section::Activity(ActivityKind::Call),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Section::Record(k) => k.as_str(),
            Section::Activity(k) => k.as_str(),
        }
    }
}

/// The tier of every register field: the defaults plus the overrides of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    overrides: BTreeMap<(Section, FieldKey), Tier>,
}

impl Policy {
    /// Parses a policy file. Unknown sections, fields and tiers are errors, never ignored.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let table: BTreeMap<String, BTreeMap<String, String>> =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut policy = Policy::default();
        for (section_name, fields) in table {
            let section = Section::parse(&section_name)
                .ok_or_else(|| PolicyError::UnknownSection(section_name.clone()))?;
            for (field, tier) in fields {
                let unknown = || PolicyError::UnknownField {
                    section: section_name.clone(),
                    field: field.clone(),
                };
                let key: FieldKey = field.parse().map_err(|_| unknown())?;
                let known = match (&key, section) {
                    (FieldKey::Std(name), Section::Record(kind)) => {
                        schema::find(schema::record_fields(kind), name).is_some()
                    }
                    (FieldKey::Std(name), Section::Activity(kind)) => {
                        schema::find(schema::activity_fields(kind), name).is_some()
                    }
                    (FieldKey::Custom(_), Section::Record(_)) => true,
                    (FieldKey::Custom(_), Section::Activity(_)) => false,
                };
                if !known {
                    return Err(unknown());
                }
                let bad = |reason: String| PolicyError::BadTier {
                    section: section_name.clone(),
                    field: field.clone(),
                    reason,
                };
                let tier: Tier = tier.parse().map_err(bad)?;
                if tier == Tier::Merge {
                    return Err(bad(
                        "only tags, note content and activities merge; a field holds one value"
                            .into(),
                    ));
                }
                policy.overrides.insert((section, key), tier);
            }
        }
        Ok(policy)
    }

    /// Checks that every custom field the policy names is defined in the catalog.
    pub fn check_against(&self, catalog: &Catalog) -> Result<(), PolicyError> {
        for (section, key) in self.overrides.keys() {
            if let (Section::Record(kind), FieldKey::Custom(name)) = (section, key)
                && catalog.custom_field(*kind, name).is_none()
            {
                return Err(PolicyError::UnknownCustomField {
                    section: section.name().to_owned(),
                    field: name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The tier of a register field.
    pub fn tier(&self, kind: RecordKind, scope: &Scope, key: &FieldKey) -> Tier {
        let section = match scope {
            Scope::Record => Section::Record(kind),
            Scope::Activity { kind, .. } => Section::Activity(*kind),
        };
        if let Some(tier) = self.overrides.get(&(section, key.clone())) {
            return *tier;
        }
        let spec = match (section, key) {
            (Section::Record(kind), FieldKey::Std(name)) => {
                schema::find(schema::record_fields(kind), name)
            }
            (Section::Activity(kind), FieldKey::Std(name)) => {
                schema::find(schema::activity_fields(kind), name)
            }
            (_, FieldKey::Custom(_)) => None,
        };
        spec.map_or(Tier::Lww, |s| s.tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let p = Policy::default();
        let deal = |f: &str| p.tier(RecordKind::Deal, &Scope::Record, &f.parse().unwrap());
        assert_eq!(deal("value"), Tier::Manual);
        assert_eq!(deal("name"), Tier::Lww);
        assert_eq!(deal("estimated_close_date"), Tier::Notify);
        assert_eq!(deal("source_id"), Tier::KeepServer);
        assert_eq!(deal("custom_fields.Anything"), Tier::Lww);
        let contact = |f: &str| p.tier(RecordKind::Contact, &Scope::Record, &f.parse().unwrap());
        assert_eq!(contact("email"), Tier::Notify);
        assert_eq!(contact("address.city"), Tier::Notify);
    }

    #[test]
    fn a_policy_file_overrides_standard_and_custom_fields() {
        let p = Policy::from_toml(
            "[deal]\nhot = \"manual\"\n\"custom_fields.Region\" = \"notify\"\n[task]\ncompleted = \"manual\"\n",
        )
        .unwrap();
        assert_eq!(
            p.tier(RecordKind::Deal, &Scope::Record, &"hot".parse().unwrap()),
            Tier::Manual
        );
        assert_eq!(
            p.tier(
                RecordKind::Deal,
                &Scope::Record,
                &"custom_fields.Region".parse().unwrap()
            ),
            Tier::Notify
        );
        let task = Scope::Activity {
            id: "t1".parse().unwrap(),
            kind: ActivityKind::Task,
        };
        assert_eq!(
            p.tier(RecordKind::Deal, &task, &"completed".parse().unwrap()),
            Tier::Manual
        );
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let err = Policy::from_toml("[deal]\nvalu = \"manual\"\n").unwrap_err();
        assert_eq!(err.to_string(), "policy file: [deal] has no field \"valu\"");
        assert!(matches!(
            Policy::from_toml("[lead]\nname = \"lww\"\n"),
            Err(PolicyError::UnknownSection(_))
        ));
        assert!(matches!(
            Policy::from_toml("[deal]\nname = \"sometimes\"\n"),
            Err(PolicyError::BadTier { .. })
        ));
        assert!(matches!(
            Policy::from_toml("[deal]\nname = \"merge\"\n"),
            Err(PolicyError::BadTier { .. })
        ));
        assert!(matches!(
            Policy::from_toml("[deal]\nname = 3\n"),
            Err(PolicyError::Syntax(_))
        ));
    }

    #[test]
    fn custom_fields_are_checked_against_the_catalog() {
        let p = Policy::from_toml("[deal]\n\"custom_fields.Nope\" = \"manual\"\n").unwrap();
        let err = p.check_against(&Catalog::default()).unwrap_err();
        assert!(matches!(err, PolicyError::UnknownCustomField { .. }));
    }
}
