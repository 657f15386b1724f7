//! On `num` 3, tries to read /etc/passwd, open a socket and read `HOME`, and
//! reports what happened as a per-record error. Built for wasm32-unknown-unknown
//! (like every plugin), these `std` calls are stubs that fail inside the plugin
//! without ever reaching the host, so this shows only that such a plugin gets
//! errors. That the host refuses plugins which really import system interfaces
//! is shown by the `wasi-*` plugins (built for WASI targets) and their tests.
use sluice_plugin::{Result, Value, bail, json, map};

#[map]
fn escape(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        let read = std::fs::read_to_string("/etc/passwd");
        let connect = std::net::TcpStream::connect("127.0.0.1:9092");
        let env = std::env::var("HOME");
        if read.is_ok() || connect.is_ok() || env.is_ok() {
            return Ok(json!({ "num": 3, "escaped": true, "passwd": read.ok(), "socket": connect.is_ok(), "home": env.ok() }));
        }
        bail!(
            "sandbox held: read /etc/passwd: {}; connect 127.0.0.1:9092: {}; env HOME: {}",
            read.unwrap_err(),
            connect.unwrap_err(),
            env.unwrap_err()
        );
    }
    Ok(doc)
}
