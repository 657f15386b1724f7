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
