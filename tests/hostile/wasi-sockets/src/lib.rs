//! Built for a WASI target (`make hostile`), it imports WASI sockets: the host
//! must refuse to load it, naming the import.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn connect(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        let socket = std::net::TcpStream::connect("127.0.0.1:9092")?;
        return Ok(json!({ "num": 3, "peer": socket.peer_addr()?.to_string() }));
    }
    Ok(doc)
}
