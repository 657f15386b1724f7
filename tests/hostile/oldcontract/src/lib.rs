//! A plugin built against another version of the contract (`sluice:plugin@0.1.9`):
//! the host must refuse to load it, naming the contract it implements.
#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({ path: "wit/plugin.wit", world: "plugin" });
    use exports::sluice::plugin::transform::Guest;
    use sluice::plugin::types::{Outcome, Record};

    struct Old;
    impl Guest for Old {
        fn init(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }
        fn process(batch: Vec<Record>) -> Vec<Outcome> {
            batch.into_iter().map(|_| Outcome::Drop).collect()
        }
    }
    export!(Old);
}
