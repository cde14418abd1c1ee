//! The catalog: pipelines and stages, users, loss reasons, deal sources and custom field
//! definitions. Edits are validated against it offline; it travels as a document of its own.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::schema::RecordKind;
use crate::{DeviceId, LoadError};

/// A sales pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Deals cannot be added to a disabled pipeline.
    #[serde(default)]
    pub disabled: bool,
}

/// A stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// The pipeline it belongs to.
    pub pipeline_id: u64,
    /// `incoming`, `in_progress`, `won`, `lost` or `unqualified`.
    pub category: String,
    /// Order within the pipeline.
    #[serde(default)]
    pub position: i64,
}

/// A CRM user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// `admin` or `user`.
    #[serde(default)]
    pub role: String,
}

/// A named catalog entry: a loss reason or a deal source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
}

/// The value type of a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomFieldType {
    /// Free text (also the CRM's string, email, phone, url and address types).
    Text,
    /// A decimal number.
    Number,
    /// A boolean.
    Bool,
    /// A date.
    Date,
    /// A date and time.
    DateTime,
    /// One choice of `choices`.
    List,
    /// Several choices of `choices`.
    MultiSelectList,
}

/// The definition of a custom field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldDef {
    /// The field's name, as the record's `custom_fields` object keys it.
    pub name: String,
    /// Its value type.
    #[serde(rename = "type")]
    pub ty: CustomFieldType,
    /// The allowed choices of a list field.
    #[serde(default)]
    pub choices: Vec<String>,
    /// A record without a value for it cannot be saved in the CRM.
    #[serde(default)]
    pub required: bool,
}

/// Everything edits are validated against.
///
/// A catalog that was never loaded (`loaded == false`) validates types and ranges only: a device
/// that has not synced yet can still edit, and the projection re-checks once the catalog arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Whether the catalog was ever filled from the CRM.
    pub loaded: bool,
    /// Pipelines by id.
    pub pipelines: BTreeMap<u64, Pipeline>,
    /// Stages by id.
    pub stages: BTreeMap<u64, Stage>,
    /// Users by id.
    pub users: BTreeMap<u64, User>,
    /// Loss reasons by id.
    pub loss_reasons: BTreeMap<u64, Named>,
    /// Deal sources by id.
    pub sources: BTreeMap<u64, Named>,
    /// Custom field definitions per record kind, by name.
    pub custom_fields: BTreeMap<RecordKind, BTreeMap<String, CustomFieldDef>>,
}

impl Catalog {
    /// The definition of a custom field, if the catalog has it.
    pub fn custom_field(&self, kind: RecordKind, name: &str) -> Option<&CustomFieldDef> {
        self.custom_fields.get(&kind)?.get(name)
    }

    /// A small catalog for examples and tests: one pipeline with Sell's default stages, three
    /// users, two loss reasons, two sources, and three deal custom fields.
    pub fn example() -> Catalog {
        let mut c = Catalog {
            loaded: true,
            ..Catalog::default()
        };
        c.pipelines.insert(
            1,
            Pipeline {
                id: 1,
                name: "Sales".into(),
                disabled: false,
            },
        );
        for (id, name, category, position) in [
            (11, "Prospecting", "incoming", 1),
            (12, "Qualified", "in_progress", 2),
            (13, "Quote", "in_progress", 3),
            (14, "Closure", "in_progress", 7),
            (15, "Won", "won", 8),
            (16, "Lost", "lost", 9),
            (17, "Unqualified", "unqualified", 10),
        ] {
            let stage = Stage {
                id,
                name: name.into(),
                pipeline_id: 1,
                category: category.into(),
                position,
            };
            c.stages.insert(id, stage);
        }
        for (id, name, role) in [
            (1, "Ada Admin", "admin"),
            (2, "Rita Rep", "user"),
            (3, "Carl Colleague", "user"),
        ] {
            c.users.insert(
                id,
                User {
                    id,
                    name: name.into(),
                    role: role.into(),
                },
            );
        }
        for (id, name) in [(1, "Price"), (2, "Timing")] {
            c.loss_reasons.insert(
                id,
                Named {
                    id,
                    name: name.into(),
                },
            );
        }
        for (id, name) in [(1, "Trade fair"), (2, "Website")] {
            c.sources.insert(
                id,
                Named {
                    id,
                    name: name.into(),
                },
            );
        }
        let defs = [
            CustomFieldDef {
                name: "Region".into(),
                ty: CustomFieldType::List,
                choices: vec!["EMEA".into(), "APAC".into(), "Americas".into()],
                required: false,
            },
            CustomFieldDef {
                name: "Referral".into(),
                ty: CustomFieldType::Text,
                choices: vec![],
                required: false,
            },
            CustomFieldDef {
                name: "Seats".into(),
                ty: CustomFieldType::Number,
                choices: vec![],
                required: false,
            },
        ];
        c.custom_fields.insert(
            RecordKind::Deal,
            defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
        );
        c
    }
}

/// When the hub's bridge last reached the CRM, and since when it has not, as the hub writes it
/// into the catalog document for every device. The hub refreshes `last_reached_ms` at most
/// about once a minute while the CRM answers, and at once when an outage begins or ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmReach {
    /// When the CRM last answered the hub (ms since the epoch).
    pub last_reached_ms: Option<i64>,
    /// Since when it has not answered; `None` while it does.
    pub unreachable_since_ms: Option<i64>,
}

const CATALOG_SCHEMA: u64 = 1;
const SECTIONS: [&str; 6] = [
    "pipelines",
    "stages",
    "users",
    "loss_reasons",
    "sources",
    "custom_fields",
];

/// The organisation's field policy as the hub distributes it: the policy file's text and its
/// version (1 for the first file, one more each time the text changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyText {
    /// The version, counted by the hub.
    pub version: u64,
    /// The policy file (TOML, see [`crate::Policy::from_toml`]).
    pub toml: String,
}

/// The catalog as an Automerge document. Only the hub writes it (from the CRM, and its policy
/// file); devices read it.
///
/// Layout: `ROOT { schema: 1, kind: "catalog", loaded: bool, <section>: { <key>: json },
/// policy_version?: u64, policy_toml?: str, crm_reach?: json }`, one JSON string per entry so
/// that a change to one stage is one small operation. The policy keys are absent until the hub
/// is given a policy file; catalog writes never touch them. `crm_reach` ([`CrmReach`]) is what
/// the hub knows of the CRM's reachability; readers that do not know it ignore it.
#[derive(Debug)]
pub struct CatalogDoc {
    doc: Automerge,
}

impl CatalogDoc {
    /// An empty catalog document, born on `device`.
    pub fn new(device: &DeviceId, now_secs: i64) -> CatalogDoc {
        let mut doc = Automerge::new().with_actor(ActorId::from(device.as_str().as_bytes()));
        let birth = doc.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| {
                CommitOptions::default()
                    .with_message("catalog: created")
                    .with_time(now_secs)
            },
            |tx| {
                tx.put(ROOT, "schema", CATALOG_SCHEMA)?;
                tx.put(ROOT, "kind", "catalog")?;
                tx.put(ROOT, "loaded", false)?;
                for section in SECTIONS {
                    tx.put_object(ROOT, section, ObjType::Map)?;
                }
                Ok(())
            },
        );
        // Writing fresh keys into a new document cannot fail.
        debug_assert!(birth.is_ok());
        CatalogDoc { doc }
    }

    /// Loads a saved catalog document; `device` becomes the actor of later writes.
    pub fn load(bytes: &[u8], device: &DeviceId) -> Result<CatalogDoc, LoadError> {
        let doc = crate::guarded(|| Automerge::load(bytes))??
            .with_actor(ActorId::from(device.as_str().as_bytes()));
        match doc.get(ROOT, "kind")? {
            Some((v, _)) if v.as_str() == Some("catalog") => {}
            _ => return Err(LoadError::NotARecord("not a catalog document".into())),
        }
        match doc.get(ROOT, "schema")? {
            Some((v, _)) if v.as_u64() == Some(CATALOG_SCHEMA) => {}
            other => {
                return Err(LoadError::Schema {
                    found: other.and_then(|(v, _)| v.as_u64()).unwrap_or(0),
                    supported: CATALOG_SCHEMA,
                });
            }
        }
        Ok(CatalogDoc { doc })
    }

    /// The underlying document (for sync and saving).
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The underlying document, mutably (for receiving sync messages).
    pub fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// Writes the entries of `catalog` that differ from the document, and removes the ones it no
    /// longer has, in one change. Returns whether anything changed.
    pub fn write(
        &mut self,
        catalog: &Catalog,
        now_secs: i64,
    ) -> Result<bool, automerge::AutomergeError> {
        let wanted = sections_of(catalog);
        let current = self.read_sections();
        if wanted == current && self.read().is_ok_and(|c| c.loaded == catalog.loaded) {
            return Ok(false);
        }
        self.doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| {
                    CommitOptions::default()
                        .with_message("catalog: updated")
                        .with_time(now_secs)
                },
                |tx| {
                    tx.put(ROOT, "loaded", catalog.loaded)?;
                    for (section, entries) in &wanted {
                        let obj = match tx.get(ROOT, *section)? {
                            Some((automerge::Value::Object(ObjType::Map), id)) => id,
                            _ => tx.put_object(ROOT, *section, ObjType::Map)?,
                        };
                        let old = current.get(section);
                        for (key, json) in entries {
                            if old.and_then(|o| o.get(key)) != Some(json) {
                                tx.put(&obj, key, json.as_str())?;
                            }
                        }
                        for key in old.into_iter().flat_map(|o| o.keys()) {
                            if !entries.contains_key(key) {
                                tx.delete(&obj, key.as_str())?;
                            }
                        }
                    }
                    Ok(())
                },
            )
            .map_err(|f| f.error)?;
        Ok(true)
    }

    /// The policy the hub distributed, if any.
    pub fn policy(&self) -> Result<Option<PolicyText>, LoadError> {
        let version = match self.doc.get(ROOT, "policy_version")? {
            Some((v, _)) => v.as_u64(),
            None => None,
        };
        let toml = match self.doc.get(ROOT, "policy_toml")? {
            Some((v, _)) => v.as_str().map(str::to_owned),
            None => None,
        };
        match (version, toml) {
            (Some(version), Some(toml)) => Ok(Some(PolicyText { version, toml })),
            (None, None) => Ok(None),
            _ => Err(LoadError::NotARecord(
                "catalog document: policy_version and policy_toml go together".into(),
            )),
        }
    }

    /// Writes the policy file's text (the hub, after checking it), in one change. Unchanged
    /// text writes nothing; changed text gets the next version. Returns the version now in force.
    pub fn write_policy(
        &mut self,
        toml: &str,
        now_secs: i64,
    ) -> Result<u64, automerge::AutomergeError> {
        let current = self.policy().ok().flatten();
        if let Some(p) = &current
            && p.toml == toml
        {
            return Ok(p.version);
        }
        let version = current.map_or(1, |p| p.version + 1);
        self.doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| {
                    CommitOptions::default()
                        .with_message(format!("policy: version {version}"))
                        .with_time(now_secs)
                },
                |tx| {
                    tx.put(ROOT, "policy_toml", toml)?;
                    tx.put(ROOT, "policy_version", version)?;
                    Ok(())
                },
            )
            .map_err(|f| f.error)?;
        Ok(version)
    }

    /// Writes what the hub last knew of the CRM's reachability (`ROOT.crm_reach`, one JSON
    /// string), in its own change. Returns whether anything changed.
    pub fn write_crm_reach(
        &mut self,
        reach: &CrmReach,
        now_secs: i64,
    ) -> Result<bool, automerge::AutomergeError> {
        if self.crm_reach() == Some(*reach) {
            return Ok(false);
        }
        // Serialising plain data cannot fail.
        let json = serde_json::to_string(reach).unwrap_or_default();
        self.doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| {
                    CommitOptions::default()
                        .with_message("catalog: CRM reachability")
                        .with_time(now_secs)
                },
                |tx| tx.put(ROOT, "crm_reach", json.as_str()),
            )
            .map_err(|f| f.error)?;
        Ok(true)
    }

    /// What the hub last wrote of the CRM's reachability; `None` when it never did (or wrote
    /// something this version does not read).
    pub fn crm_reach(&self) -> Option<CrmReach> {
        let (v, _) = self.doc.get(ROOT, "crm_reach").ok()??;
        serde_json::from_str(v.as_str()?).ok()
    }

    fn read_sections(&self) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for section in SECTIONS {
            let mut entries = BTreeMap::new();
            if let Ok(Some((automerge::Value::Object(ObjType::Map), obj))) =
                self.doc.get(ROOT, section)
            {
                for item in self.doc.map_range(&obj, ..) {
                    if let Some(s) = crate::doc::str_of(&item.value) {
                        entries.insert(item.key.into_owned(), s.to_owned());
                    }
                }
            }
            out.insert(section, entries);
        }
        out
    }

    /// The catalog the document holds. An entry that does not parse is an error naming it.
    pub fn read(&self) -> Result<Catalog, LoadError> {
        let loaded =
            matches!(self.doc.get(ROOT, "loaded")?, Some((v, _)) if v.as_bool() == Some(true));
        let mut c = Catalog {
            loaded,
            ..Catalog::default()
        };
        let sections = self.read_sections();
        let bad = |section: &str, key: &str, e: serde_json::Error| {
            LoadError::NotARecord(format!("catalog entry {section}/{key}: {e}"))
        };
        for (section, entries) in sections {
            for (key, json) in entries {
                match section {
                    "pipelines" => {
                        let p: Pipeline =
                            serde_json::from_str(&json).map_err(|e| bad(section, &key, e))?;
                        c.pipelines.insert(p.id, p);
                    }
                    "stages" => {
                        let s: Stage =
                            serde_json::from_str(&json).map_err(|e| bad(section, &key, e))?;
                        c.stages.insert(s.id, s);
                    }
                    "users" => {
                        let u: User =
                            serde_json::from_str(&json).map_err(|e| bad(section, &key, e))?;
                        c.users.insert(u.id, u);
                    }
                    "loss_reasons" => {
                        let n: Named =
                            serde_json::from_str(&json).map_err(|e| bad(section, &key, e))?;
                        c.loss_reasons.insert(n.id, n);
                    }
                    "sources" => {
                        let n: Named =
                            serde_json::from_str(&json).map_err(|e| bad(section, &key, e))?;
                        c.sources.insert(n.id, n);
                    }
                    _ => {
                        let (kind, _) = key.split_once('/').unwrap_or((&key, ""));
                        let kind: RecordKind = kind.parse().map_err(|e: String| {
                            LoadError::NotARecord(format!("catalog entry {key}: {e}"))
                        })?;
                        let d: CustomFieldDef =
                            serde_json::from_str(&json).map_err(|e| bad(section, &key, e))?;
                        c.custom_fields
                            .entry(kind)
                            .or_default()
                            .insert(d.name.clone(), d);
                    }
                }
            }
        }
        Ok(c)
    }
}

fn sections_of(c: &Catalog) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    fn entries<T: Serialize>(m: &BTreeMap<u64, T>) -> BTreeMap<String, String> {
        m.iter()
            .map(|(id, v)| (id.to_string(), serde_json::to_string(v).unwrap_or_default()))
            .collect()
    }
    let mut out = BTreeMap::new();
    out.insert("pipelines", entries(&c.pipelines));
    out.insert("stages", entries(&c.stages));
    out.insert("users", entries(&c.users));
    out.insert("loss_reasons", entries(&c.loss_reasons));
    out.insert("sources", entries(&c.sources));
    let custom = c
        .custom_fields
        .iter()
        .flat_map(|(kind, defs)| {
            defs.values().map(move |d| {
                (
                    format!("{kind}/{}", d.name),
                    serde_json::to_string(d).unwrap_or_default(),
                )
            })
        })
        .collect();
    out.insert("custom_fields", custom);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_round_trips_through_its_document_and_sync() {
        let hub: DeviceId = "hub".parse().unwrap();
        let mut doc = CatalogDoc::new(&hub, 0);
        assert!(doc.write(&Catalog::example(), 1).unwrap());
        assert!(
            !doc.write(&Catalog::example(), 2).unwrap(),
            "an unchanged catalog writes nothing"
        );
        let bytes = doc.automerge().save();
        let phone = CatalogDoc::load(&bytes, &"phone".parse().unwrap()).unwrap();
        assert_eq!(phone.read().unwrap(), Catalog::example());

        assert_eq!(phone.crm_reach(), None);
        let reach = CrmReach {
            last_reached_ms: Some(5_000),
            unreachable_since_ms: Some(9_000),
        };
        assert!(doc.write_crm_reach(&reach, 2).unwrap());
        assert!(!doc.write_crm_reach(&reach, 2).unwrap());
        let phone = CatalogDoc::load(&doc.automerge().save(), &"phone".parse().unwrap()).unwrap();
        assert_eq!(phone.crm_reach(), Some(reach));
        assert_eq!(phone.read().unwrap(), Catalog::example());

        let mut smaller = Catalog::example();
        smaller.stages.remove(&13);
        assert!(doc.write(&smaller, 3).unwrap());
        assert_eq!(doc.read().unwrap(), smaller);
    }

    #[test]
    fn the_policy_travels_in_the_catalog_document_with_a_version() {
        let hub: DeviceId = "hub".parse().unwrap();
        let mut doc = CatalogDoc::new(&hub, 0);
        assert_eq!(doc.policy().unwrap(), None);
        assert_eq!(
            doc.write_policy("[deal]\nname = \"manual\"\n", 1).unwrap(),
            1
        );
        assert_eq!(
            doc.write_policy("[deal]\nname = \"manual\"\n", 2).unwrap(),
            1,
            "unchanged text keeps its version"
        );
        assert_eq!(doc.write_policy("", 3).unwrap(), 2);
        // A catalog write leaves the policy alone, and both reach a device.
        assert!(doc.write(&Catalog::example(), 4).unwrap());
        let phone = CatalogDoc::load(&doc.automerge().save(), &"phone".parse().unwrap()).unwrap();
        assert_eq!(
            phone.policy().unwrap(),
            Some(PolicyText {
                version: 2,
                toml: String::new()
            })
        );
        assert_eq!(phone.read().unwrap(), Catalog::example());
    }

    #[test]
    fn loading_something_else_is_an_error() {
        let mut other = Automerge::new();
        other
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "kind", "deal"))
            .unwrap();
        assert!(CatalogDoc::load(&other.save(), &"x".parse().unwrap()).is_err());
        assert!(CatalogDoc::load(b"garbage", &"x".parse().unwrap()).is_err());
    }
}
