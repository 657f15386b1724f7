//! Built for a WASI target (`make hostile`), it imports WASI sockets. As a WASI
//! 0.2 component it loads, and on num 3 the sandbox denies the connection to
//! 127.0.0.1:9092 (every socket is): the plugin fails that record. As a WASI
//! preview 1 module it is refused at load, naming its imports.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn connect(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        let socket = std::net::TcpStream::connect("127.0.0.1:9092")?;
        return Ok(json!({ "num": 3, "peer": socket.peer_addr()?.to_string() }));
    }
    Ok(doc)
}
