//! The admin API's access rules and health endpoints, through the binary.

use std::time::Duration;

use sluice_tests::{Host, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_health() {
    let env = TestEnv::new("admin-token");
    env.create_topic(2).await.unwrap();
    let text =
        env.config_text(&["passthrough"], "").replace("[admin]\n", "[admin]\ntoken = \"s3cret-t0ken\"\nmax_upload_bytes = 1048576\n");
    let config = env.dir.path().join("host.toml");
    std::fs::write(&config, text).unwrap();
    let mut host = Host::spawn(&env, "host", &config, false);

    let anonymous = host.admin(None).await;
    let (status, body) = anonymous.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Ready once the group has assigned the partitions.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = anonymous.get("/readyz").await;
        if status == 200 {
            assert!(body.contains("\"ready\":true"), "{body}");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"ready\":false") && body.contains("reason"), "{body}");
        assert!(std::time::Instant::now() < deadline, "never ready:\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/plugins", "/metrics"] {
        let (status, body) = anonymous.get(path).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, body) = anonymous.put("/plugins/passthrough", vec![1, 2, 3]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = anonymous.post("/reload").await;
    assert_eq!(status, 401);
    let (status, _) = host.admin(Some("wrong")).await.get("/plugins").await;
    assert_eq!(status, 401);
    let (status, _) = anonymous.get_with("/plugins", &[("authorization", "bearer s3cret-t0ken")]).await;
    assert_eq!(status, 200, "the scheme is case-insensitive");

    let admin = host.admin(Some("s3cret-t0ken")).await;
    let listed = admin.plugins().await;
    assert_eq!(listed["plugins"][0]["name"], "passthrough", "{listed}");
    let (status, metrics) = admin.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE sluice_records_consumed_total counter") && metrics.contains("sluice_ready 1"), "{metrics}");
    // A body over admin.max_upload_bytes (here 1 MiB) is refused before it is read whole.
    let (status, _) = admin.put_raw("/plugins/passthrough", vec![0u8; 2 << 20]).await;
    assert_eq!(status, 413);
    host.terminate(Duration::from_secs(30)).await;
    assert!(!std::fs::read_to_string(&host.stderr).unwrap().contains("s3cret-t0ken"), "the token is never logged");
}

/// Without a token, only requests that name this address and come from no other
/// site get through: a web page in a local browser cannot use the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_other_sites_and_host_names_are_refused() {
    let env = TestEnv::new("admin-csrf");
    env.create_topic(1).await.unwrap();
    let config = env.config_file(&["passthrough"], "");
    let host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    let port = admin.base.rsplit(':').next().unwrap().to_owned();
    assert_eq!(admin.get("/plugins").await.0, 200);
    for (name, value) in [("host", format!("localhost:{port}")), ("origin", format!("http://127.0.0.1:{port}"))] {
        assert_eq!(admin.get_with("/plugins", &[(name, &value)]).await.0, 200, "{name}: {value}");
    }
    for (name, value) in [("host", format!("evil.example:{port}")), ("origin", "http://evil.example".to_owned())] {
        let (status, body) = admin.get_with("/plugins", &[(name, &value)]).await;
        assert_eq!(status, 403, "{name}: {value}: {body}");
        assert!(body.contains("another site"), "{body}");
    }
    assert_eq!(admin.get_with("/healthz", &[("origin", "http://evil.example")]).await.0, 200, "health stays open");
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused_at_start() {
    let env = TestEnv::new("admin-open");
    let text = env.config_text(&[], "").replace("address = \"127.0.0.1:0\"", "address = \"0.0.0.0:0\"");
    let path = env.dir.path().join("open.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(sluice_tests::sluice_bin()).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.address 0.0.0.0:0 is reachable from other machines: set admin.token"), "{err}");
}

#[test]
fn a_busy_admin_port_is_a_clear_error() {
    let env = TestEnv::new("admin-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = env.config_text(&[], "").replace("address = \"127.0.0.1:0\"", &format!("address = \"127.0.0.1:{port}\""));
    let path = env.dir.path().join("busy.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(sluice_tests::sluice_bin()).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on admin.address 127.0.0.1:{port}")), "{err}");
}
