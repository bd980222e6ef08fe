//! JSON merge patch (RFC 7386) and a small model of server-side apply.
//!
//! Server-side apply is modelled with field sets: each field manager owns the leaf paths
//! (object keys; lists are atomic) of the configuration it last applied. Applying merges
//! the new configuration into the object, removes the fields the manager applied before
//! and no longer applies (unless another manager owns them too), and reports a conflict
//! when another manager owns a field whose value would change, unless forced.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A path of object keys from the object's root.
pub type FieldPath = Vec<String>;
/// The fields one manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The leaf paths of an applied configuration, minus the identifying fields.
pub fn field_set(applied: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    collect(applied, &mut Vec::new(), &mut set);
    let identity: [&[&str]; 4] = [
        &["apiVersion"],
        &["kind"],
        &["metadata", "name"],
        &["metadata", "namespace"],
    ];
    set.retain(|p| {
        !identity
            .iter()
            .any(|id| p.iter().map(String::as_str).eq(id.iter().copied()))
    });
    set
}

fn collect(value: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, out);
                path.pop();
            }
        }
        Value::Null => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Removes `null` members recursively (an applied `null` means "not set").
pub fn strip_nulls(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn get<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Removes the value at `path`, then any object it leaves empty on the way up (not the root).
fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = &mut *value;
    for key in parents {
        match cursor.get_mut(key) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Value::Object(map) = cursor {
        map.remove(last);
    }
    if !parents.is_empty() && get(value, parents).is_some_and(|v| v.as_object().is_some_and(Map::is_empty)) {
        remove(value, parents);
    }
}

/// Deep merge: objects merge key by key, everything else replaces.
fn merge_into(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (key, value) in a {
                match t.get_mut(key) {
                    Some(existing) => merge_into(existing, value),
                    None => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Field managers of one object: `(manager, subresource)` to owned fields.
pub type Managers = BTreeMap<(String, String), FieldSet>;

/// A server-side apply conflict: another manager owns a field whose value would change.
#[derive(Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// Applies `applied` as `manager` (for `subresource`, `""` for the main resource) onto
/// `object`, updating `managers`.
pub fn apply(
    object: &mut Value,
    managers: &mut Managers,
    applied: &Value,
    manager: &str,
    subresource: &str,
    force: bool,
) -> Result<(), Vec<Conflict>> {
    let new_fields = field_set(applied);
    let key = (manager.to_owned(), subresource.to_owned());

    let mut conflicts = Vec::new();
    for ((other, _), owned) in managers.iter().filter(|(k, _)| **k != key) {
        for path in &new_fields {
            let contested = owned.iter().filter(|o| overlaps(o, path));
            for o in contested {
                if get(object, o) != get(applied, o) || get(object, path) != get(applied, path) {
                    conflicts.push(Conflict {
                        manager: other.clone(),
                        field: format!(".{}", path.join(".")),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.dedup();
        return Err(conflicts);
    }
    if force {
        for (k, owned) in managers.iter_mut() {
            if *k != key {
                owned.retain(|o| !new_fields.iter().any(|p| overlaps(o, p)));
            }
        }
    }

    let previous = managers.remove(&key).unwrap_or_default();
    for gone in previous.difference(&new_fields) {
        let shared = managers.values().any(|owned| owned.iter().any(|o| overlaps(o, gone)))
            || new_fields.iter().any(|p| overlaps(p, gone));
        if !shared {
            remove(object, gone);
        }
    }
    merge_into(object, applied);
    managers.retain(|_, owned| !owned.is_empty());
    if !new_fields.is_empty() {
        managers.insert(key, new_fields);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut doc, &json!({"c": [1, 2]}));
        assert_eq!(doc, json!({"a": "z", "c": [1, 2]}));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let mut obj = json!({"metadata": {"name": "x", "labels": {"mine": "1", "theirs": "2"}}, "data": {"a": "1"}});
        let mut managers = Managers::new();
        apply(
            &mut obj,
            &mut managers,
            &json!({"metadata": {"name": "x", "labels": {"mine": "1"}}, "data": {"a": "1", "b": "2"}}),
            "op",
            "",
            false,
        )
        .unwrap();
        apply(
            &mut obj,
            &mut managers,
            &json!({"metadata": {"name": "x"}, "data": {"b": "3"}}),
            "op",
            "",
            false,
        )
        .unwrap();
        assert_eq!(
            obj,
            json!({"metadata": {"name": "x", "labels": {"theirs": "2"}}, "data": {"b": "3"}})
        );
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let mut obj = json!({"metadata": {"name": "x"}});
        let mut managers = Managers::new();
        apply(&mut obj, &mut managers, &json!({"data": {"a": "1"}}), "one", "", false).unwrap();
        let err = apply(&mut obj, &mut managers, &json!({"data": {"a": "2"}}), "two", "", false).unwrap_err();
        assert_eq!(err[0].manager, "one");
        assert_eq!(err[0].field, ".data.a");
        // Same value: shared ownership, no conflict.
        apply(
            &mut obj,
            &mut managers,
            &json!({"data": {"a": "1"}}),
            "three",
            "",
            false,
        )
        .unwrap();
        apply(&mut obj, &mut managers, &json!({"data": {"a": "2"}}), "two", "", true).unwrap();
        assert_eq!(obj["data"]["a"], "2");
        // "one" lost the field: applying without it removes nothing it no longer owns.
        apply(&mut obj, &mut managers, &json!({"data": {"z": "9"}}), "one", "", false).unwrap();
        assert_eq!(obj["data"], json!({"a": "2", "z": "9"}));
    }
}
