//! What the `debezium-mongodb` and `change-stream` plugins share: a MongoDB
//! change event's parts read whether they come as documents (a change stream
//! as JSON) or as extended-JSON text (Debezium, and the MongoDB source
//! connector's schema output, carry documents as strings), and an update
//! event's `updateDescription` turned into update operators.
//!
//! A library, not a plugin: it exports no entry point.

use std::sync::OnceLock;

use sluice_plugin::{Output, Params, Result, Value, anyhow, bail, json, serde_json};

static UPSERT_UPDATES: OnceLock<bool> = OnceLock::new();

/// Both plugins' init: parameter `upsert_updates` (`"true"`: an update by
/// description of a document the collection does not hold inserts the changed
/// fields; default `"false"`: it changes nothing).
pub fn setup(params: &Params) -> Result<()> {
    let upsert = params.parse_or("upsert_updates", false)?;
    let _ = UPSERT_UPDATES.set(upsert);
    Ok(())
}

/// [`update_writes`], as upserts when `upsert_updates` is set.
pub fn description_writes(id: &Value, description: &Value) -> Result<Vec<Output>> {
    let writes = update_writes(id, description)?;
    Ok(if UPSERT_UPDATES.get().copied().unwrap_or(false) { writes.into_iter().map(Output::or_insert).collect() } else { writes })
}

/// A document-valued part of an event: `None` when absent or null, the
/// document when it is one, parsed when it is extended-JSON text.
pub fn document(event: &Value, field: &str) -> Result<Option<Value>> {
    match event.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("`{field}` is text but not extended JSON: {e}"))?;
            Ok((!v.is_null()).then_some(v))
        }
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => bail!("`{field}` is neither a document nor extended-JSON text: {}", kind(other)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a document",
    }
}

/// The writes of an update event's `updateDescription`, applied to the
/// document whose `_id` is `id`: `updatedFields` as `$set`, `removedFields` as
/// `$unset` (both by dotted path, as the event names them) and each of
/// `truncatedArrays` as `$push` with an empty `$each` and `$slice` to its new
/// size. The truncations go first, as a write of their own: a path inside a
/// truncated array may also be set, and one update cannot name both. Empty
/// when the event changed nothing.
pub fn update_writes(id: &Value, description: &Value) -> Result<Vec<Output>> {
    if !description.is_object() {
        bail!("`updateDescription` is not a document");
    }
    let filter = || json!({ "_id": id });
    let mut writes = Vec::new();
    let mut update = serde_json::Map::new();

    match document(description, "updatedFields")? {
        Some(Value::Object(set)) if set.is_empty() => {}
        Some(Value::Object(set)) => {
            update.insert("$set".into(), Value::Object(set));
        }
        Some(other) => bail!("`updatedFields` is {}, not a document", kind(&other)),
        None => {}
    }
    let removed = strings(description, "removedFields")?;
    if !removed.is_empty() {
        update.insert("$unset".into(), Value::Object(removed.into_iter().map(|f| (f, json!(""))).collect()));
    }
    let truncated = truncations(description)?;
    if !truncated.is_empty() {
        let push = truncated.into_iter().map(|(f, n)| (f, json!({ "$each": [], "$slice": n }))).collect();
        writes.push(Output::update(filter(), json!({ "$push": Value::Object(push) })));
    }
    if !update.is_empty() {
        writes.push(Output::update(filter(), Value::Object(update)));
    }
    Ok(writes)
}

/// A list of field paths (`removedFields`): absent or null is empty.
fn strings(parent: &Value, field: &str) -> Result<Vec<String>> {
    match parent.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() && !s.starts_with('$') => Ok(s.clone()),
                other => bail!("`{field}` holds {other} where a field path belongs"),
            })
            .collect(),
        Some(other) => bail!("`{field}` is {}, not a list of field paths", kind(other)),
    }
}

/// `truncatedArrays`: `{field, newSize}` in a change stream, `{field, size}`
/// from Debezium.
fn truncations(description: &Value) -> Result<Vec<(String, u64)>> {
    let items = match description.get("truncatedArrays") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => bail!("`truncatedArrays` is {}", kind(other)),
    };
    items
        .iter()
        .map(|t| {
            let field = t.get("field").and_then(Value::as_str).filter(|f| !f.is_empty() && !f.starts_with('$'));
            let size = t.get("newSize").or_else(|| t.get("size")).and_then(Value::as_u64);
            match (field, size) {
                (Some(f), Some(n)) => Ok((f.to_owned(), n)),
                _ => bail!("`truncatedArrays` holds {t}: expected a field path and a size"),
            }
        })
        .collect()
}

/// The `_id` an extended-JSON text names (Debezium's MongoDB key `id`, e.g.
/// `{"$oid": "…"}`, `1004`, `"\"abc\""`).
pub fn id_from_text(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| anyhow!("the key's id {text:?} is not extended JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::Operation;

    #[test]
    fn parts_come_as_documents_or_as_text() {
        let event = json!({"a": {"x": 1}, "b": "{\"x\": {\"$numberLong\": \"1\"}}", "c": null, "d": 5, "e": "{oops"});
        assert_eq!(document(&event, "a").unwrap(), Some(json!({"x": 1})));
        assert_eq!(document(&event, "b").unwrap(), Some(json!({"x": {"$numberLong": "1"}})));
        assert_eq!(document(&event, "c").unwrap(), None);
        assert_eq!(document(&event, "zz").unwrap(), None);
        assert!(document(&event, "d").unwrap_err().to_string().contains("a number"));
        assert!(document(&event, "e").unwrap_err().to_string().contains("not extended JSON"));
    }

    #[test]
    fn an_update_description_becomes_set_and_unset() {
        let d = json!({"updatedFields": "{\"name\": \"Bo\", \"address.city\": \"Oslo\"}", "removedFields": ["tmp", "a.b"], "truncatedArrays": []});
        let writes = update_writes(&json!({"$oid": "65a000000000000000000001"}), &d).unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].operation, Operation::Update);
        assert_eq!(writes[0].filter, Some(json!({"_id": {"$oid": "65a000000000000000000001"}})));
        assert_eq!(writes[0].document, json!({"$set": {"name": "Bo", "address.city": "Oslo"}, "$unset": {"tmp": "", "a.b": ""}}));
        assert!(!writes[0].upsert);
    }

    #[test]
    fn truncations_go_first_as_their_own_update() {
        let d = json!({"updatedFields": {"tags.1": "x"}, "removedFields": null, "truncatedArrays": [{"field": "tags", "newSize": 2}]});
        let writes = update_writes(&json!(7), &d).unwrap();
        assert_eq!(
            writes.iter().map(|w| w.document.clone()).collect::<Vec<_>>(),
            vec![json!({"$push": {"tags": {"$each": [], "$slice": 2}}}), json!({"$set": {"tags.1": "x"}})]
        );
        // Debezium names the size `size`.
        let d = json!({"truncatedArrays": [{"field": "t", "size": 0}]});
        assert_eq!(update_writes(&json!(7), &d).unwrap()[0].document, json!({"$push": {"t": {"$each": [], "$slice": 0}}}));
    }

    #[test]
    fn no_change_is_no_write_and_bad_descriptions_say_why() {
        assert!(update_writes(&json!(1), &json!({"updatedFields": {}, "removedFields": []})).unwrap().is_empty());
        assert!(update_writes(&json!(1), &json!("x")).unwrap_err().to_string().contains("not a document"));
        assert!(update_writes(&json!(1), &json!({"removedFields": ["$where"]})).unwrap_err().to_string().contains("field path"));
        assert!(update_writes(&json!(1), &json!({"removedFields": "a"})).unwrap_err().to_string().contains("a string"));
        assert!(update_writes(&json!(1), &json!({"updatedFields": 3})).unwrap_err().to_string().contains("a number"));
        assert!(update_writes(&json!(1), &json!({"truncatedArrays": [{"field": "t"}]})).unwrap_err().to_string().contains("a size"));
    }

    #[test]
    fn upsert_updates_is_a_boolean() {
        assert!(setup(&Params::from_pairs([("upsert_updates", "maybe")])).is_err());
    }

    #[test]
    fn ids_are_read_from_extended_json_text() {
        assert_eq!(id_from_text(r#"{"$oid": "65a000000000000000000001"}"#).unwrap(), json!({"$oid": "65a000000000000000000001"}));
        assert_eq!(id_from_text("1004").unwrap(), json!(1004));
        assert_eq!(id_from_text(r#""abc""#).unwrap(), json!("abc"));
        assert!(id_from_text("abc").is_err());
    }
}
