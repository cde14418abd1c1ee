//! Which values a field accepts: its type, and the catalog's entries.
//!
//! The same checks serve the edit API (a bad value is refused before anything is written) and
//! the projection (a stored value the current catalog no longer accepts becomes a validation
//! conflict).

use crate::catalog::{Catalog, CustomFieldType};
use crate::doc::Scope;
use crate::schema::{self, FieldKey, FieldSpec, FieldType, RecordKind};
use crate::value::{Repr, Value};

/// What a field is, once looked up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldDef<'a> {
    Std(&'static FieldSpec),
    Custom(&'a crate::catalog::CustomFieldDef),
    /// A custom field while the catalog was never loaded: any plain value is accepted.
    UnknownCustom,
}

impl FieldDef<'_> {
    pub(crate) fn repr(&self) -> Repr {
        match self {
            FieldDef::Std(spec) => spec.ty.repr(),
            FieldDef::Custom(def) => match def.ty {
                CustomFieldType::Text | CustomFieldType::List => Repr::Text,
                CustomFieldType::Number => Repr::Number,
                CustomFieldType::Bool => Repr::Bool,
                CustomFieldType::Date => Repr::Date,
                CustomFieldType::DateTime => Repr::DateTime,
                CustomFieldType::MultiSelectList => Repr::List,
            },
            FieldDef::UnknownCustom => Repr::Any,
        }
    }
}

/// Looks a field up. `None`: the record or activity has no such field.
pub(crate) fn field_def<'a>(
    catalog: &'a Catalog,
    kind: RecordKind,
    scope: &Scope,
    key: &FieldKey,
) -> Option<FieldDef<'a>> {
    match (scope, key) {
        (Scope::Record, FieldKey::Std(name)) => {
            schema::find(schema::record_fields(kind), name).map(FieldDef::Std)
        }
        (Scope::Activity { kind, .. }, FieldKey::Std(name)) => {
            schema::find(schema::activity_fields(*kind), name).map(FieldDef::Std)
        }
        (Scope::Record, FieldKey::Custom(name)) => match catalog.custom_field(kind, name) {
            Some(def) => Some(FieldDef::Custom(def)),
            None if !catalog.loaded => Some(FieldDef::UnknownCustom),
            None => None,
        },
        (Scope::Activity { .. }, FieldKey::Custom(_)) => None,
    }
}

/// Why a value is not accepted, in words a person can act on.
pub(crate) fn check(catalog: &Catalog, def: FieldDef<'_>, value: &Value) -> Result<(), String> {
    if *value == Value::Null {
        return Ok(());
    }
    let repr_ok = match (def.repr(), value) {
        (Repr::Any, v) => matches!(v, Value::Text(_) | Value::Int(_) | Value::Bool(_)),
        (Repr::Text, Value::Text(_))
        | (Repr::Bool, Value::Bool(_))
        | (Repr::Int, Value::Int(_))
        | (Repr::Number, Value::Number(_))
        | (Repr::Money, Value::Money(_))
        | (Repr::Date, Value::Date(_))
        | (Repr::DateTime, Value::DateTime(_))
        | (Repr::Ref, Value::Ref(_))
        | (Repr::Record, Value::Record(_))
        | (Repr::List, Value::List(_)) => true,
        _ => false,
    };
    if !repr_ok {
        return Err(format!("expected {}, got {value}", def.repr().describe()));
    }
    match def {
        FieldDef::Std(spec) => check_std(catalog, spec.ty, value),
        FieldDef::Custom(d) => match (d.ty, value) {
            (CustomFieldType::List, Value::Text(choice)) if !d.choices.contains(choice) => {
                Err(format!(
                    "{choice:?} is not one of the choices: {}",
                    d.choices.join(", ")
                ))
            }
            (CustomFieldType::MultiSelectList, Value::List(items)) => {
                match items.iter().find(|i| !d.choices.contains(i)) {
                    Some(bad) => Err(format!(
                        "{bad:?} is not one of the choices: {}",
                        d.choices.join(", ")
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        },
        FieldDef::UnknownCustom => Ok(()),
    }
}

fn check_std(catalog: &Catalog, ty: FieldType, value: &Value) -> Result<(), String> {
    let known = catalog.loaded;
    match (ty, value) {
        (FieldType::Enum(allowed), Value::Text(s)) if !allowed.contains(&s.as_str()) => {
            Err(format!("{s:?} is not one of {}", allowed.join(", ")))
        }
        (FieldType::Currency, Value::Text(s))
            if schema::CURRENCIES.binary_search(&s.as_str()).is_err() =>
        {
            Err(format!("{s:?} is not an ISO 4217 currency code"))
        }
        (FieldType::Int { min, max }, Value::Int(i)) if *i < min || *i > max => {
            Err(format!("{i} is outside {min}..={max}"))
        }
        (FieldType::Money, Value::Money(m)) if m.cents() < 0 => {
            Err(format!("{m} is negative: an amount cannot be below zero"))
        }
        (FieldType::User, Value::Ref(id)) if known && !catalog.users.contains_key(id) => {
            Err(format!("there is no user #{id}"))
        }
        (FieldType::Stage, Value::Ref(id)) if known => match catalog.stages.get(id) {
            None => Err(format!("there is no stage #{id}")),
            Some(stage) => match catalog.pipelines.get(&stage.pipeline_id) {
                None => Err(format!(
                    "stage #{id} is in pipeline #{}, which does not exist",
                    stage.pipeline_id
                )),
                Some(p) if p.disabled => Err(format!(
                    "stage #{id} is in pipeline {:?}, which is disabled",
                    p.name
                )),
                Some(_) => Ok(()),
            },
        },
        (FieldType::Source, Value::Ref(id)) if known && !catalog.sources.contains_key(id) => {
            Err(format!("there is no deal source #{id}"))
        }
        (FieldType::LossReason, Value::Ref(id))
            if known && !catalog.loss_reasons.contains_key(id) =>
        {
            Err(format!("there is no loss reason #{id}"))
        }
        _ => Ok(()),
    }
}

impl Repr {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Repr::Any => "text, a number or a boolean",
            Repr::Text => "text",
            Repr::Bool => "true or false",
            Repr::Int => "an integer",
            Repr::Number => "a decimal number",
            Repr::Money => "an amount with at most two decimals",
            Repr::Date => "a date YYYY-MM-DD",
            Repr::DateTime => "a date-time like 2026-01-31T09:00:00Z",
            Repr::Ref => "an id",
            Repr::Record => "a record id",
            Repr::List => "a comma-separated list of choices",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Money;

    fn deal<'a>(catalog: &'a Catalog, field: &str) -> FieldDef<'a> {
        field_def(
            catalog,
            RecordKind::Deal,
            &Scope::Record,
            &field.parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn catalog_references_are_checked() {
        let c = Catalog::example();
        assert!(check(&c, deal(&c, "stage_id"), &Value::Ref(12)).is_ok());
        assert_eq!(
            check(&c, deal(&c, "stage_id"), &Value::Ref(99)),
            Err("there is no stage #99".into())
        );
        assert!(check(&c, deal(&c, "owner_id"), &Value::Ref(77)).is_err());
        assert!(check(&c, deal(&c, "loss_reason_id"), &Value::Ref(5)).is_err());
        assert!(check(&c, deal(&c, "source_id"), &Value::Ref(5)).is_err());
        let mut disabled = c.clone();
        disabled.pipelines.get_mut(&1).unwrap().disabled = true;
        assert!(
            check(&disabled, deal(&disabled, "stage_id"), &Value::Ref(12))
                .unwrap_err()
                .contains("disabled")
        );
    }

    #[test]
    fn values_out_of_range_are_refused() {
        let c = Catalog::example();
        assert!(check(&c, deal(&c, "value"), &Value::Money(Money::from_cents(-1))).is_err());
        assert!(check(&c, deal(&c, "currency"), &Value::Text("XYZ".into())).is_err());
        assert!(check(&c, deal(&c, "currency"), &Value::Text("EUR".into())).is_ok());
        assert!(check(&c, deal(&c, "customized_win_likelihood"), &Value::Int(101)).is_err());
        assert!(
            check(&c, deal(&c, "value"), &Value::Text("1000".into()))
                .unwrap_err()
                .contains("expected an amount")
        );
        assert!(
            check(
                &c,
                deal(&c, "custom_fields.Region"),
                &Value::Text("Mars".into())
            )
            .is_err()
        );
        assert!(
            check(
                &c,
                deal(&c, "custom_fields.Region"),
                &Value::Text("EMEA".into())
            )
            .is_ok()
        );
    }

    #[test]
    fn unknown_fields_are_not_found() {
        let c = Catalog::example();
        assert!(
            field_def(
                &c,
                RecordKind::Deal,
                &Scope::Record,
                &"valu".parse().unwrap()
            )
            .is_none()
        );
        assert!(
            field_def(
                &c,
                RecordKind::Deal,
                &Scope::Record,
                &"custom_fields.Nope".parse().unwrap()
            )
            .is_none()
        );
        let empty = Catalog::default();
        assert!(matches!(
            field_def(
                &empty,
                RecordKind::Deal,
                &Scope::Record,
                &"custom_fields.Nope".parse().unwrap()
            ),
            Some(FieldDef::UnknownCustom)
        ));
    }
}
