//! The seed plugin: every record's JSON value becomes a document as it is
//! (`{"num": 7}` → `{"num": 7}`). A value that is not JSON is a per-record error.

use sluice_plugin::{Result, Value, map};

#[map]
pub fn passthrough(doc: Value) -> Result<Value> {
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::json;

    #[test]
    fn document_is_unchanged() {
        assert_eq!(passthrough(json!({"num": 7})).unwrap(), json!({"num": 7}));
    }
}
