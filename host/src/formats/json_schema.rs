//! JSON Schema: the payload is JSON text, checked against the registry's schema
//! and handed on as it is.

pub struct JsonSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonSchema")
    }
}

impl JsonSchema {
    pub fn parse(text: &str, refs: &[(String, String)]) -> Result<JsonSchema, String> {
        if !refs.is_empty() {
            let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!("JSON Schema references ({}) are not supported", names.join(", ")));
        }
        let schema: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not a valid JSON Schema (not JSON: {e})"))?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        Ok(JsonSchema { validator })
    }

    /// The payload, checked; appended to `out` as it is.
    pub fn decode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| format!("is not JSON: {e}"))?;
        if let Some(e) = self.validator.iter_errors(&value).next() {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            return Err(format!("does not match its JSON Schema at {at}: {e}"));
        }
        out.extend_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_payloads_pass_unchanged_and_others_say_where() {
        let s = JsonSchema::parse(r#"{"type":"object","properties":{"num":{"type":"integer"}},"required":["num"]}"#, &[]).unwrap();
        let mut out = Vec::new();
        s.decode(br#"{"num": 5}"#, &mut out).unwrap();
        assert_eq!(out, br#"{"num": 5}"#);
        assert!(s.decode(br#"{"num": "x"}"#, &mut Vec::new()).unwrap_err().contains("at /num"));
        assert!(s.decode(br#"{}"#, &mut Vec::new()).unwrap_err().contains("does not match"));
        assert!(s.decode(b"{", &mut Vec::new()).unwrap_err().contains("is not JSON"));
        assert!(JsonSchema::parse(r#"{"type": 5}"#, &[]).unwrap_err().contains("not a valid JSON Schema"));
    }
}
