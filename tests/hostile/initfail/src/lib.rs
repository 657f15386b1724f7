//! Refuses to start: its init always fails (a version that must never be swapped in).
use sluice_plugin::{Params, Result, Value, bail, map};

fn refuse(_params: &Params) -> Result<()> {
    bail!("this version refuses to start")
}

#[map(init = refuse)]
fn never(doc: Value) -> Result<Value> {
    Ok(doc)
}
