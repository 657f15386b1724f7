//! A plugin built against the previous contract, `sluice:plugin@0.2.0`
//! (`guest-sdk/wit/legacy/plugin-0.2.0.wit`, kept as released), with its own
//! column writer: 5 numbers per output and no `options`, as the 0.2.0 SDK wrote
//! them. The host must keep running it unchanged.
//!
//! Each record's value is written as it is: inserted, or, with a header
//! `op: upsert` / `op: delete`, upserted / deleted by the `_id` it carries. A
//! value `"fail"` is a plugin error. Logs one line per batch through the 0.2.0
//! `host.log`.
#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({ path: "../../../guest-sdk/wit/legacy/plugin-0.2.0.wit", world: "plugin" });
    use exports::sluice::plugin::transform::Guest;
    use sluice::plugin::host::log;
    use sluice::plugin::types::{Batch, BatchResult, Level};

    const ABSENT: u32 = u32::MAX;

    struct V020;
    impl Guest for V020 {
        fn init(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }
        fn process(b: Batch) -> BatchResult {
            log(Level::Debug, &format!("v0.2.0 plugin: {} records", b.offsets.len()));
            let (mut outcomes, mut outputs, mut data) = (Vec::new(), Vec::new(), Vec::new());
            let span = |s: u32, l: u32| (l != ABSENT).then(|| &b.data[s as usize..(s + l) as usize]);
            for i in 0..b.offsets.len() {
                let w = &b.spans[6 * i..6 * i + 6];
                let mut op = 0u32;
                for h in w[4]..w[4] + w[5] {
                    let hs = &b.header_spans[4 * h as usize..4 * h as usize + 4];
                    if span(hs[0], hs[1]) == Some(b"op") {
                        op = match span(hs[2], hs[3]) {
                            Some(b"upsert") => 1,
                            Some(b"delete") => 2,
                            _ => 0,
                        };
                    }
                }
                match span(w[2], w[3]) {
                    Some(b"fail") | None => {
                        let m = b"v0.2.0 plugin: this record fails";
                        outcomes.extend_from_slice(&[2, data.len() as u32, m.len() as u32]);
                        data.extend_from_slice(m);
                    }
                    Some(v) => {
                        outcomes.extend_from_slice(&[1, (outputs.len() / 5) as u32, 1]);
                        outputs.extend_from_slice(&[op, data.len() as u32, v.len() as u32, 0, ABSENT]);
                        data.extend_from_slice(v);
                    }
                }
            }
            BatchResult { outcomes, outputs, data }
        }
    }
    export!(V020);
}
