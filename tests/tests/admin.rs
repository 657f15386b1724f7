//! The admin API's access rules and health endpoints, through the binary.

use std::time::Duration;

use sluice_tests::{Host, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_health() {
    let env = TestEnv::new("admin-token");
    env.create_topic(2).await.unwrap();
    let builder =
        env.builder().example_plugins(&["passthrough"]).set("admin", "token", "s3cret-t0ken").set("admin", "max_upload_bytes", 1048576);
    let config = env.config_file_from(&builder);
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
    let path = env.builder().set("admin", "address", "0.0.0.0:0").write(env.dir.path().join("open.toml"));
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
    let path = env.builder().set("admin", "address", format!("127.0.0.1:{port}")).write(env.dir.path().join("busy.toml"));
    let out = std::process::Command::new(sluice_tests::sluice_bin()).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on admin.address 127.0.0.1:{port}")), "{err}");
}

/// Issue #14: at `SLUICE_LOG=debug,librdkafka=debug`, with secrets in every
/// place a config holds them, through a working run and forced failures, no
/// secret shows in `check`'s or `run`'s output, an admin API answer or a dead
/// letter. The working run logs the config and librdkafka's debug (its `conf`
/// dump names the secret settings), so the search has something to search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show_at_debug_level_even_in_failures() {
    use std::os::unix::fs::PermissionsExt;
    const LOG: &str = "debug,librdkafka=debug";
    const TOKEN: &str = "S3cr3t-admin-10";
    // (what, value): every value starts with S3cr3t, and any piece of one is searched for too.
    const SECRETS: [(&str, &str); 10] = [
        ("the mongo.uri password", "S3cr3t-mongo-pw1"),
        ("kafka sasl.password", "S3cr3t-sasl-pw2"),
        ("kafka sasl.oauthbearer.client.secret", "S3cr3t-oauth-cs3"),
        ("kafka sasl.oauthbearer.config", "S3cr3t-oauth-cfg4"),
        ("kafka ssl.key.password", "S3cr3t-tls-pw5"),
        ("kafka ssl.key.pem", "S3cr3tTlsKeyPem6"),
        ("dlq sasl.password", "S3cr3t-dlq-sasl7"),
        ("dlq ssl.key.password", "S3cr3t-dlq-tls8"),
        ("dlq ssl.key.pem", "S3cr3tDlqKeyPem9"),
        ("admin.token", TOKEN),
    ];
    let env = TestEnv::new("admin-secrets");
    // Host::spawn sets SLUICE_LOG; this wrapper sets the debug level over it.
    let bin = env.dir.path().join("sluice-debug");
    std::fs::write(&bin, format!("#!/bin/sh\nSLUICE_LOG='{LOG}' exec '{}' \"$@\"\n", sluice_tests::sluice_bin().display())).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.create_topic(1).await.unwrap();
    env.produce_nums(10).await.unwrap();
    // Dead-lettered: `even` fails a record without `num`; a value that is not JSON is invalid input.
    env.produce_raw(&[(None, Some(&br#"{"n": 1}"#[..])), (None, Some(&b"not json"[..]))]).await.unwrap();

    // FerretDB v1 without authentication takes PLAIN credentials (and refuses SCRAM: below).
    let mongo = sluice_tests::mongo_uri();
    let (scheme, rest) = mongo.split_once("://").unwrap();
    assert!(!rest.contains('@'), "SLUICE_TEST_MONGO has credentials: {mongo}");
    let scram = format!("{scheme}://sluice:{}@{rest}", SECRETS[0].1);
    let sep = if rest.contains('?') {
        "&"
    } else if rest.contains('/') {
        "?"
    } else {
        "/?"
    };
    let plain = format!("{scram}{sep}authMechanism=PLAIN&authSource=%24external");
    let pem =
        |body: &str| format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\\n{body}AAAAAAAAAAAAAAAA\\n-----END ENCRYPTED PRIVATE KEY-----\\n");
    let kafka_options = format!(
        "[kafka.options]\n\"debug\" = \"all\"\n\"security.protocol\" = \"plaintext\"\n\"sasl.mechanism\" = \"OAUTHBEARER\"\n\
         \"enable.sasl.oauthbearer.unsecure.jwt\" = \"true\"\n\"sasl.oauthbearer.config\" = \"principal=sluice scope={}\"\n\
         \"sasl.username\" = \"sluice\"\n\"sasl.password\" = \"{}\"\n\"ssl.key.password\" = \"{}\"\n\"ssl.key.pem\" = \"{}\"\n\n",
        SECRETS[3].1,
        SECRETS[1].1,
        SECRETS[4].1,
        pem(SECRETS[5].1)
    );
    let dlq_options = format!(
        "[dlq.options]\n\"debug\" = \"all\"\n\"sasl.password\" = \"{}\"\n\"ssl.key.password\" = \"{}\"\n\"ssl.key.pem\" = \"{}\"\n",
        SECRETS[6].1,
        SECRETS[7].1,
        pem(SECRETS[8].1)
    );
    let good = env
        .config_text(&["even"], &dlq_options)
        .replace(&format!("uri = \"{mongo}\""), &format!("uri = \"{plain}\""))
        .replace("\n[mongo]\n", &format!("\n{kafka_options}[mongo]\n"))
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    assert!(SECRETS.iter().all(|(_, s)| good.contains(s) || *s == SECRETS[2].1), "{good}");
    let write = |name: &str, text: &str| {
        let path = env.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = write("host.toml", &good);
    // Forced failures, each in a file holding every secret.
    let oauth = write(
        "oauth.toml",
        &good.replace("\"sasl.username\"", &format!("\"sasl.oauthbearer.client.secret\" = \"{}\"\n\"sasl.username\"", SECRETS[2].1)),
    );
    let tls = write("tls.toml", &good.replace("\"plaintext\"", "\"SASL_SSL\""));
    let scram = write("scram.toml", &good.replace(&plain, &scram).replace("[admin]\n", "[admin]\nenabled = false\n"));
    let bad_token = write("bad-token.toml", &good.replace(&format!("token = \"{TOKEN}\""), &format!("token = {TOKEN}")));
    let bad_uri_text = good.replace("uri = \"mongodb", "uri = \"mongo");
    let bad_uri = write("bad-uri.toml", &bad_uri_text);

    // Where each text came from, and the text.
    let mut seen: Vec<(String, String)> = Vec::new();
    let cli = |args: &[&str], config: &std::path::Path, seen: &mut Vec<(String, String)>| -> (Option<i32>, String) {
        let name = config.file_name().unwrap().to_string_lossy().into_owned();
        let (out, err) = (env.dir.path().join(format!("{name}.{}.out", args[0])), env.dir.path().join(format!("{name}.{}.err", args[0])));
        let mut child = std::process::Command::new(sluice_tests::sluice_bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .env("SLUICE_LOG", LOG)
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice {args:?} --config {name} still running after 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stderr = std::fs::read_to_string(&err).unwrap();
        let command = format!("sluice {} --config {name}", args.join(" "));
        seen.push((format!("stdout of {command}"), std::fs::read_to_string(&out).unwrap()));
        seen.push((format!("stderr of {command}"), stderr.clone()));
        (status.code(), stderr)
    };
    let error_line = |stderr: &str| stderr.lines().rfind(|l| l.starts_with("error: ")).unwrap_or_default().to_owned();
    let (code, _) = cli(&["check"], &config, &mut seen);
    assert_eq!(code, Some(0), "{}", seen.last().unwrap().1);
    assert!(seen[seen.len() - 2].1.contains("sluice:***@"), "{}", seen[seen.len() - 2].1);
    // This build has no OIDC (no libcurl): the client secret is refused by name. A build with it runs.
    cli(&["check"], &oauth, &mut seen);
    cli(&["run", "--until-caught-up"], &oauth, &mut seen);
    let (code, err) = cli(&["run", "--until-caught-up"], &tls, &mut seen);
    assert_eq!((code, error_line(&err).contains("ssl.key.pem")), (Some(1), true), "{}", error_line(&err));
    let (code, err) = cli(&["run", "--until-caught-up"], &scram, &mut seen);
    assert_eq!((code, error_line(&err).contains("cannot connect to MongoDB")), (Some(1), true), "{}", error_line(&err));
    for bad in [&bad_token, &bad_uri] {
        for args in [&["check"][..], &["run"]] {
            let (code, err) = cli(args, bad, &mut seen);
            assert_eq!((code, error_line(&err).contains("invalid config file")), (Some(1), true), "{}", error_line(&err));
        }
    }

    let mut host = Host::spawn_bin(&bin, &env, "host", &config, false);
    let anonymous = host.admin(None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = anonymous.get("/readyz").await;
        seen.push(("GET /readyz".into(), body.clone()));
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_for_count(5, Duration::from_secs(60)).await.unwrap();
    let wrong = host.admin(Some("not-the-token")).await;
    for (who, client) in [("no token", &anonymous), ("a wrong token", &wrong)] {
        for path in ["/plugins", "/metrics"] {
            let (status, body) = client.get(path).await;
            assert_eq!(status, 401, "{path}: {body}");
            seen.push((format!("GET {path} with {who}"), body));
        }
    }
    let admin = host.admin(Some(TOKEN)).await;
    for path in ["/plugins", "/metrics", "/healthz"] {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.push((format!("GET {path}"), body));
    }
    let (status, body) = admin.put_raw("/plugins/even", b"not wasm".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    seen.push(("PUT /plugins/even (not wasm)".into(), body));
    // A reload of a file that does not load: refused, saying why.
    std::fs::write(&config, &bad_uri_text).unwrap();
    let (status, body) = admin.post("/reload").await;
    assert!(status == 422 && body.to_string().contains("is not a MongoDB connection string"), "{status} {body}");
    seen.push(("POST /reload (bad config)".into(), body.to_string()));
    let (_, body) = admin.get("/plugins").await;
    seen.push(("GET /plugins after the refused reload".into(), body));
    std::fs::write(&config, &good).unwrap();
    let (status, body) = admin.post("/reload").await;
    assert_eq!(status, 200, "{body}");
    seen.push(("POST /reload".into(), body.to_string()));
    let dead = env.dead_letters(2).unwrap();
    assert!(dead.len() >= 2, "{dead:?}");
    for (i, d) in dead.iter().enumerate() {
        let value = String::from_utf8_lossy(d.value.as_deref().unwrap_or_default()).into_owned();
        seen.push((format!("dead letter {i}"), format!("{:?}\n{value}", d.headers)));
    }
    host.terminate(Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&host.stderr).unwrap();
    seen.push(("stderr of the run".into(), log.clone()));
    seen.push(("stdout of the run".into(), std::fs::read_to_string(&host.stdout).unwrap()));

    let mut leaks = Vec::new();
    for (place, text) in &seen {
        for line in text.lines() {
            if let Some(at) = line.find("S3cr3t") {
                let what: Vec<&str> = SECRETS.iter().filter(|(_, s)| line.contains(s)).map(|(w, _)| *w).collect();
                let what = if what.is_empty() { "a piece of a secret".to_owned() } else { what.join(", ") };
                let (mut from, mut to) = (at.saturating_sub(150), (at + 150).min(line.len()));
                while !line.is_char_boundary(from) {
                    from -= 1;
                }
                while !line.is_char_boundary(to) {
                    to += 1;
                }
                leaks.push(format!("{what} in {place}: …{}…", &line[from..to]));
            }
        }
    }
    assert!(leaks.is_empty(), "{} secret(s) shown:\n{}", leaks.len(), leaks.join("\n"));

    // Not vacuous: the run logged the configuration and librdkafka's debug, both naming the secret settings.
    for needle in
        ["DEBUG sluice: configuration", "\"sasl.password\": ", "uri: \"mongodb://sluice:", "DEBUG librdkafka", "sasl.password = [redacted]"]
    {
        assert!(log.contains(needle), "the run's log has no {needle:?}");
    }
}
