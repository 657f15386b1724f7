//! Returns bytes that are not JSON as the document for `num` 9. Written against
//! the raw contract bindings, since the SDK only emits valid JSON.
#[cfg(target_arch = "wasm32")]
mod glue {
    use sluice_plugin::__private::bindings::sluice::plugin::types as t;
    use sluice_plugin::__private::{self as p};

    struct BadJson;

    impl p::Guest for BadJson {
        fn init(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }
        fn process(batch: Vec<t::Record>) -> Vec<t::Outcome> {
            batch
                .into_iter()
                .map(|r| {
                    let value = r.value.unwrap_or_default();
                    let num = sluice_plugin::serde_json::from_slice::<sluice_plugin::Value>(&value).ok().and_then(|v| v["num"].as_i64());
                    let document = if num == Some(9) { b"{\"num\": 9, oops".to_vec() } else { value };
                    t::Outcome::Emit(vec![t::Output { operation: t::Operation::Insert, document, collection: None }])
                })
                .collect()
        }
    }

    p::export!(BadJson with_types_in p::bindings);
}
