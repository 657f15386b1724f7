//! `[admin]`: the admin HTTP API's address, token and upload limit.

use std::fmt;

use serde::Deserialize;

use super::default_true;

/// The admin HTTP API: `/plugins` (list, upload, rollback), `/reload`,
/// `/healthz`, `/readyz`, `/metrics`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Listen address. Default `127.0.0.1:9464` (this machine only); port 0
    /// picks a free port (the address is logged). An address other than loopback
    /// needs `token`.
    #[serde(default = "default_admin_address")]
    pub address: std::net::SocketAddr,
    /// When set, every request but `/healthz` and `/readyz` needs
    /// `Authorization: Bearer <token>`. Hidden in logs.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest plugin upload. Default 64 MiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { enabled: true, address: default_admin_address(), token: None, max_upload_bytes: default_max_upload() }
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("max_upload_bytes", &self.max_upload_bytes)
            .finish()
    }
}

fn default_admin_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_max_upload() -> usize {
    64 << 20
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn an_admin_address_beyond_loopback_needs_a_token() {
        let err = parse(&format!("{MINIMAL}\n[admin]\naddress = \"0.0.0.0:9464\"\n")).unwrap_err().to_string();
        assert!(err.contains("admin.token"), "{err}");
        let c = parse(&format!("{MINIMAL}\n[admin]\naddress = \"0.0.0.0:9464\"\ntoken = \"t0ps3cret\"\n")).unwrap();
        assert!(!format!("{c:?}").contains("t0ps3cret"));
        assert!(parse(&format!("{MINIMAL}\n[admin]\naddress = \"[::1]:0\"\n")).is_ok());
        assert!(parse(&format!("{MINIMAL}\n[admin]\naddress = \"0.0.0.0:9464\"\nenabled = false\n")).is_ok());
    }
}
