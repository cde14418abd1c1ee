//! Names for what records hold as catalog ids (users, stages, sources, loss reasons), for
//! every front end that shows a record to a person. Pure: reads a catalog.

use sellsync_model::{Catalog, FieldKey, UserId, Value};

/// The user a value Zendesk reported without naming one of its users is attributed to (the
/// bridge's `CRM_USER`).
pub const CRM_USER: UserId = UserId(0);

/// What a catalog id held by a field refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogList {
    /// A user (`owner_id`, a call's `user_id`).
    User,
    /// A pipeline stage (`stage_id`).
    Stage,
    /// A deal source (`source_id`).
    Source,
    /// A loss reason (`loss_reason_id`).
    LossReason,
}

impl CatalogList {
    /// The list a field's id points into, by the field's name (as in the record schema).
    pub fn of(key: &FieldKey) -> Option<CatalogList> {
        match key {
            FieldKey::Std(name) => match name.as_str() {
                "owner_id" | "user_id" | "creator_id" => Some(CatalogList::User),
                "stage_id" => Some(CatalogList::Stage),
                "source_id" => Some(CatalogList::Source),
                "loss_reason_id" => Some(CatalogList::LossReason),
                _ => None,
            },
            _ => None,
        }
    }

    /// What an entry of this list is called (`stage`, `user`).
    pub fn what(self) -> &'static str {
        match self {
            CatalogList::User => "user",
            CatalogList::Stage => "stage",
            CatalogList::Source => "source",
            CatalogList::LossReason => "loss reason",
        }
    }

    /// The entries of this list: id and name, in id order.
    pub fn entries(self, catalog: &Catalog) -> Vec<(u64, &str)> {
        match self {
            CatalogList::User => catalog
                .users
                .values()
                .map(|u| (u.id, u.name.as_str()))
                .collect(),
            CatalogList::Stage => catalog
                .stages
                .values()
                .map(|s| (s.id, s.name.as_str()))
                .collect(),
            CatalogList::Source => catalog
                .sources
                .values()
                .map(|s| (s.id, s.name.as_str()))
                .collect(),
            CatalogList::LossReason => catalog
                .loss_reasons
                .values()
                .map(|s| (s.id, s.name.as_str()))
                .collect(),
        }
    }
}

/// Names for what records refer to, from the catalog the hub shared.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The catalog the hub shared.
    pub catalog: &'a Catalog,
}

impl Names<'_> {
    /// A user's name, or `user N` for one the catalog does not list.
    pub fn user(&self, user: UserId) -> String {
        // User 0 is the CRM itself: a value Zendesk reported without naming one of its users.
        if user == CRM_USER {
            return "Zendesk".to_owned();
        }
        self.catalog
            .users
            .get(&user.0)
            .map_or_else(|| format!("user {}", user.0), |u| u.name.clone())
    }

    /// A field's value as a person reads it: a catalog id as its entry's name.
    pub fn value(&self, key: &FieldKey, value: &Value) -> String {
        if let (Value::Ref(id), Some(list)) = (value, CatalogList::of(key)) {
            if let Some((_, name)) = list.entries(self.catalog).iter().find(|(i, _)| i == id) {
                return (*name).to_owned();
            }
            return format!("{} {id}", list.what());
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_names_and_unknown_ones_say_what_they_are() {
        let catalog = Catalog::example();
        let names = Names { catalog: &catalog };
        let stage = FieldKey::Std("stage_id".into());
        let (id, name) = CatalogList::Stage.entries(&catalog)[0];
        assert_eq!(names.value(&stage, &Value::Ref(id)), name);
        assert_eq!(names.value(&stage, &Value::Ref(999_999)), "stage 999999");
        assert_eq!(names.user(CRM_USER), "Zendesk");
        assert_eq!(names.user(UserId(424_242)), "user 424242");
    }
}
