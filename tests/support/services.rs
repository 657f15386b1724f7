//! Stopping and starting the shared services (fault tests), with a guard that
//! starts them again when a test fails half-way.

use crate::*;

/// Run `scripts/services <args>` (stop/start a service for fault tests).
pub fn services(args: &[&str]) {
    let status = std::process::Command::new(repo().join("scripts/services")).args(args).status().expect("scripts/services");
    assert!(status.success(), "scripts/services {args:?} failed: {status}");
}

/// MongoDB stopped by a fault test ([`stop_mongo`]); started again when
/// dropped, also when the test fails half-way, so the rest of the suite has it.
pub struct MongoStopped {
    started: bool,
}

/// Stop FerretDB until [`MongoStopped::start`] (or the guard's drop): killed
/// (SIGKILL, at once: a crash) or stopped gracefully (SIGTERM, ~1 s).
pub fn stop_mongo(kill: bool) -> MongoStopped {
    services(&[if kill { "kill-mongo" } else { "stop-mongo" }]);
    MongoStopped { started: false }
}

impl MongoStopped {
    pub fn start(mut self) {
        self.started = true;
        services(&["start-mongo"]);
    }
}

impl Drop for MongoStopped {
    fn drop(&mut self) {
        if !self.started {
            let _ = std::process::Command::new(repo().join("scripts/services")).arg("start-mongo").status();
        }
    }
}

/// A node of the three-broker test cluster (`scripts/services up --brokers 3`)
/// taken down by a test; started again when dropped, also when the test fails.
pub struct BrokerDown {
    node: i32,
    started: bool,
}

/// Take node `node` (1–3) down: killed (SIGKILL: a crash) or stopped (SIGTERM,
/// as a rolling restart does).
pub fn broker_down(node: i32, kill: bool) -> BrokerDown {
    services(&[if kill { "broker-kill" } else { "broker-stop" }, &node.to_string()]);
    BrokerDown { node, started: false }
}

impl BrokerDown {
    /// Start it again and wait until it serves.
    pub fn start(mut self) {
        self.started = true;
        services(&["broker-start", &self.node.to_string()]);
    }
}

impl Drop for BrokerDown {
    fn drop(&mut self) {
        if !self.started {
            let _ = std::process::Command::new(repo().join("scripts/services")).args(["broker-start", &self.node.to_string()]).status();
        }
    }
}

/// The node that leads `topic`'s `partition` now (as the cluster's metadata says).
pub fn leader_of(topic: &str, partition: i32) -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("a metadata client");
    let md = c.fetch_metadata(Some(topic), std::time::Duration::from_secs(10)).expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == topic).expect("the topic in the metadata");
    t.partitions().iter().find(|p| p.id() == partition).expect("the partition").leader()
}

/// The node that leads the KRaft quorum (the active controller), as Kafka's
/// own `kafka-metadata-quorum describe --status` says.
pub fn quorum_leader() -> i32 {
    let out = std::process::Command::new(repo().join("scripts/services"))
        .args(["kafka-run", "org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", &brokers(), "describe", "--status"])
        .output()
        .expect("scripts/services kafka-run");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("LeaderId:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no LeaderId in kafka-metadata-quorum's answer: {text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Wait until `check` (polled every 200 ms) is true; panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
