//! Returns bytes that are not JSON as the document for `num` 9. Written against
//! the SDK's raw writer, since its macros only emit valid JSON.
#[cfg(target_arch = "wasm32")]
mod glue {
    use sluice_plugin::__private::{self as p};
    use sluice_plugin::{Operation, Value};

    struct BadJson;

    impl p::Guest for BadJson {
        fn init(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }
        fn process(batch: p::WitBatch) -> p::WitBatchResult {
            p::process(batch, |r, w| {
                let value = r.value.unwrap_or_default();
                let num = sluice_plugin::serde_json::from_slice::<Value>(value).ok().and_then(|v| v["num"].as_i64());
                let document: &[u8] = if num == Some(9) { b"{\"num\": 9, oops" } else { value };
                w.emit_raw(Operation::Insert, document, None);
                Ok(())
            })
        }
    }

    p::export!(BadJson with_types_in p::bindings);
}
