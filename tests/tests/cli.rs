//! Clear errors at start: the binary exits non-zero with one line that says what
//! and where, and never prints a secret. Logs as JSON lines when asked.

use std::process::Command;

use sluice_tests::{TestEnv, hostile, plugin, sluice_bin};

/// Run `sluice run --config <text>`; returns (exit code, stderr).
fn run_with(env: &TestEnv, text: &str) -> (i32, String) {
    let path = env.dir.path().join("cli.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(sluice_bin()).args(["run", "--config"]).arg(&path).env("NO_COLOR", "1").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn error_line(stderr: &str) -> &str {
    stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

fn with_plugin(env: &TestEnv, path: &std::path::Path, params: &str) -> String {
    format!("{}[[plugins]]\nname = \"p\"\npath = \"{}\"\nparams = {{ {params} }}\n", env.config_text(&[], ""), path.display())
}

#[test]
fn unknown_key_names_the_key_and_the_file() {
    let env = TestEnv::new("cli-unknown");
    let (code, err) = run_with(&env, &env.config_text(&[], "[pipeline]\nbatch_sise = 3\n"));
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("batch_sise") && line.contains("cli.toml"), "{line}");
}

#[test]
fn a_missing_plugin_file_is_named() {
    let env = TestEnv::new("cli-missing");
    let (code, err) = run_with(&env, &with_plugin(&env, std::path::Path::new("/nowhere/p.wasm"), ""));
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("plugin `p`") && line.contains("/nowhere/p.wasm") && line.contains("cannot read"), "{line}");
}

#[test]
fn a_file_that_is_not_wasm_is_rejected() {
    let env = TestEnv::new("cli-notwasm");
    let path = env.dir.path().join("p.wasm");
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    let (code, err) = run_with(&env, &with_plugin(&env, &path, ""));
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("is not a WebAssembly module or component"), "{err}");
}

#[test]
fn a_module_built_against_another_contract_is_rejected() {
    let env = TestEnv::new("cli-contract");
    // A valid core module with no contract in it (what a plain cdylib without the SDK gives).
    let path = env.dir.path().join("p.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let (code, err) = run_with(&env, &with_plugin(&env, &path, ""));
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("plugin `p`") && (line.contains("component") || line.contains("contract")), "{line}");
}

#[test]
fn a_component_of_another_contract_version_is_rejected() {
    let env = TestEnv::new("cli-oldcontract");
    let (code, err) = run_with(&env, &with_plugin(&env, &hostile("oldcontract"), ""));
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("does not match the contract sluice:plugin@0.3.0 (nor sluice:plugin@0.2.0)") && line.contains("0.1.9"), "{line}");
}

#[test]
fn a_failing_init_is_reported_with_its_message() {
    let env = TestEnv::new("cli-init");
    let (code, err) = run_with(&env, &with_plugin(&env, &plugin("enrich"), "square_field = \"a.b\""));
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("init failed") && line.contains("square_field"), "{line}");
}

#[test]
fn unreachable_mongodb_says_what_was_tried_and_hides_the_password() {
    let env = TestEnv::new("cli-mongo");
    let text = env
        .config_text(&[], "")
        .replace(&sluice_tests::mongo_uri(), "mongodb://app:hunter2@127.0.0.1:1/?connectTimeoutMS=500")
        .replace("collection = ", "connect_timeout = \"2s\"\ncollection = ");
    let (code, err) = run_with(&env, &text);
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("cannot connect to MongoDB at mongodb://app:***@127.0.0.1:1"), "{line}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn unreachable_kafka_says_what_was_tried() {
    let env = TestEnv::new("cli-kafka");
    let text = env
        .config_text(&[], "")
        .replace(&sluice_tests::brokers(), "127.0.0.1:1")
        .replace("group_id = ", "connect_timeout = \"2s\"\ngroup_id = ");
    let (code, err) = run_with(&env, &text);
    assert_eq!(code, 1);
    let line = error_line(&err);
    assert!(line.contains("Kafka brokers 127.0.0.1:1 did not answer within 2s"), "{line}");
}

#[test]
fn logs_are_json_lines_with_the_flag_or_the_environment() {
    let env = TestEnv::new("cli-json");
    let path = env.dir.path().join("cli.toml");
    std::fs::write(&path, env.config_text(&[], "")).unwrap();
    // `check` contacts nothing; an environment override makes it log a line.
    let log_line = |log_json: Option<&str>, flag: bool| {
        let mut c = Command::new(sluice_bin());
        c.args(["check", "--config"]).arg(&path).env("SLUICE_KAFKA_GROUP_ID", "g-json").env("NO_COLOR", "1").env_remove("SLUICE_LOG");
        match log_json {
            Some(v) => c.env("SLUICE_LOG_JSON", v),
            None => c.env_remove("SLUICE_LOG_JSON"),
        };
        if flag {
            c.arg("--log-json");
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log_json:?} {flag}: {err}");
        err.lines()
            .find(|l| l.contains("configuration keys set from the environment"))
            .unwrap_or_else(|| panic!("no line in {err}"))
            .to_owned()
    };
    for (log_json, flag) in [(Some("1"), false), (Some("yes"), false), (Some("true"), false), (None, true)] {
        let line = log_line(log_json, flag);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{log_json:?} {flag}: not JSON ({e}): {line}"));
        assert_eq!(v["fields"]["message"], "configuration keys set from the environment");
    }
    for off in [Some("0"), Some("false"), None] {
        assert!(!log_line(off, false).starts_with('{'), "{off:?}: text, not JSON");
    }
}

/// Logs written to a file or a pipe carry no colour codes (without NO_COLOR too).
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let env = TestEnv::new("cli-plain");
    let path = env.dir.path().join("cli.toml");
    let text = env.config_text(&[], "").replace(&sluice_tests::mongo_uri(), "mongodb://127.0.0.1:1/?connectTimeoutMS=300");
    std::fs::write(&path, text.replace("collection = ", "connect_timeout = \"1s\"\ncollection = ")).unwrap();
    let out = Command::new(sluice_bin()).args(["run", "--config"]).arg(&path).env_remove("NO_COLOR").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "some log lines: {err}");
    assert!(!err.contains('\u{1b}'), "no escape codes: {err:?}");
}

/// A `SLUICE_` variable that names no config section is a likely typo: said, not ignored silently.
#[test]
fn an_environment_override_of_no_section_is_reported() {
    let env = TestEnv::new("cli-env-typo");
    let path = env.dir.path().join("cli.toml");
    std::fs::write(&path, env.config_text(&[], "")).unwrap();
    let out = Command::new(sluice_bin()).args(["check", "--config"]).arg(&path).env("SLUICE_MONGODB_URI", "mongodb://x").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("SLUICE_MONGODB_URI names no config section (kafka, mongo, pipeline, dlq, admin, hot_swap, schema_registry): ignored"),
        "{err}"
    );
}

/// A topic that does not exist (a typo) stops `run` with its name after
/// `kafka.connect_timeout`, instead of a host that waits forever; its
/// dead-letter topic is not created.
#[test]
fn a_misspelled_topic_is_an_error_not_a_wait() {
    let env = TestEnv::new("cli-no-topic");
    let text = env.config_text(&[], "").replace("auto_offset_reset", "connect_timeout = \"2s\"\nauto_offset_reset");
    let started = std::time::Instant::now();
    let (code, err) = run_with(&env, &text);
    assert_eq!(code, 1, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    let line = error_line(&err);
    assert!(line.contains(&format!("[\"{}\"] do not exist on", env.topic)), "{line}");
    let probe: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", sluice_tests::brokers()).create().unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(&probe, None, std::time::Duration::from_secs(10)).unwrap();
    assert!(!md.topics().iter().any(|t| t.name() == format!("{}.dlq", env.topic)), "no dead-letter topic made for it");
}

/// `auto_offset_reset = "error"` and a partition without an offset: `run`
/// stops with the reason and what to do, instead of logging it and waiting.
#[test]
fn auto_offset_reset_error_stops_the_run() {
    let env = TestEnv::new("cli-reset-error");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        env.create_topic(1).await.unwrap();
        env.produce_nums(3).await.unwrap();
    });
    let text = env.config_text(&[], "").replace("auto_offset_reset = \"earliest\"", "auto_offset_reset = \"error\"");
    let path = env.dir.path().join("cli.toml");
    std::fs::write(&path, text).unwrap();
    let log = env.dir.path().join("cli.log");
    let mut child = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Bounded: the failure this guards against is a host that waits forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running after 60 s:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (code, err) = (status.code().unwrap_or(-1), std::fs::read_to_string(&log).unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(error_line(&err).contains("kafka.auto_offset_reset = \"error\""), "{err}");
}

/// `sluice check` refuses, offline, what `run` would refuse at once.
#[test]
fn check_refuses_what_run_would() {
    let env = TestEnv::new("cli-check");
    let base = env.config_text(&[], "");
    let cases = [
        (format!("{base}\n[kafka.options]\n\"no.such.option\" = \"1\"\n"), "No such configuration property"),
        (format!("{base}\n[dlq.options]\n\"linger.ms\" = \"soon\"\n"), "dlq.options"),
        (base.replace(&sluice_tests::mongo_uri(), "http://127.0.0.1:27017"), "is not a MongoDB connection string"),
        (base.replace(&format!("topics = [\"{}\"]", env.topic), "topics = [\"^t-.*\"]"), "is a pattern"),
    ];
    for (text, needle) in cases {
        let path = env.dir.path().join("check.toml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(sluice_bin()).args(["check", "--config"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
        assert!(error_line(&err).contains(needle), "{needle}: {err}");
    }
}

/// `plugin test --expect`: a plan saved as the expected one keeps passing when
/// the plugin is rebuilt (same behaviour, another content hash, so another
/// version in errors and under `--versions-field`), and still fails when what
/// the plugin does changes.
#[test]
fn plugin_test_expect_ignores_the_plugins_version() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"num\": 3}\n{\"n\": 4}\n").unwrap();
    // A "rebuild": the same code with a custom section appended (another SHA-256).
    let (built, rebuilt) = (dir.path().join("a/enrich.wasm"), dir.path().join("b/enrich.wasm"));
    for p in [&built, &rebuilt] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    std::fs::copy(plugin("enrich"), &built).unwrap();
    let mut bytes = std::fs::read(&built).unwrap();
    bytes.extend_from_slice(&[0, 8, 7]); // custom section, 8 bytes: name of 7 bytes, no payload
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&rebuilt, bytes).unwrap();
    let plan_of = |wasm: &std::path::Path, expect: Option<&std::path::Path>| {
        let mut c = Command::new(sluice_bin());
        c.args(["plugin", "test"]).arg(wasm).arg("--input").arg(&input).args(["--versions-field", "_v"]);
        if let Some(e) = expect {
            c.arg("--expect").arg(e);
        }
        c.output().unwrap()
    };
    let out = plan_of(&built, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = String::from_utf8(out.stdout).unwrap();
    let versions = |plan: &str| -> Vec<String> {
        plan.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|l| match l.get("error") {
                Some(e) => e["version"].as_str().unwrap().to_owned(),
                None => l["ops"][0]["document"]["_v"]["plugins"][0].as_str().unwrap().to_owned(),
            })
            .collect()
    };
    let expected = dir.path().join("expected.jsonl");
    std::fs::write(&expected, &plan).unwrap();

    let out = plan_of(&rebuilt, Some(&expected));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a rebuild fails the expected plan: {err}");
    assert!(err.contains("the plan matches"), "{err}");
    let (before, after) = (versions(&plan), versions(&String::from_utf8(out.stdout).unwrap()));
    assert!(before.iter().zip(&after).all(|(b, a)| b != a), "the rebuild has another version: {before:?} {after:?}");
    assert!(before[0].starts_with("enrich@") && !before[1].contains('@'), "{before:?}");

    // Without versions in the expected plan at all: the same.
    let bare = plan.replace(&before[0], "enrich").replace(&format!(",\"version\":\"{}\"", before[1]), "");
    assert_ne!(bare, plan);
    std::fs::write(&expected, &bare).unwrap();
    let out = plan_of(&rebuilt, Some(&expected));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // What the plugin does is still compared: the plugin's name, a document, an error.
    for (from, to) in [("enrich@", "other@"), ("\"square\":9", "\"square\":10"), ("\"kind\":\"plugin-error\"", "\"kind\":\"trap\"")] {
        std::fs::write(&expected, plan.replace(from, to)).unwrap();
        let out = plan_of(&rebuilt, Some(&expected));
        assert_eq!(out.status.code(), Some(1), "{from} -> {to}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("differs"), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `count --expect-nums` says what is not exact: numbers produced twice (the
/// README's Quick start run after `make demo` without its reset) are reported
/// as duplicates, missing numbers as missing; not as "0 documents without a num".
#[test]
fn count_expect_nums_says_what_is_not_exact() {
    let env = TestEnv::new("cli-count");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        env.create_topic(1).await.unwrap();
        env.produce_nums(3).await.unwrap();
        env.produce_nums(3).await.unwrap();
    });
    let path = env.dir.path().join("cli.toml");
    std::fs::write(&path, env.config_text(&[], "")).unwrap();
    let sluice = |args: &[&str]| Command::new(sluice_bin()).args(args).arg("--config").arg(&path).env("NO_COLOR", "1").output().unwrap();
    let out = sluice(&["run", "--until-caught-up"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = sluice(&["count", "--expect-nums", "3"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("produced=3 stored=6 missing=0 duplicates=3"), "{stdout}");
    let line = error_line(&stderr);
    assert!(line.starts_with("error: not exact: 3 extra documents for numbers stored more than once"), "{line}");
    assert!(line.contains("sluice reset") && !line.contains("without a num") && !line.contains("missing"), "{line}");

    let out = sluice(&["count", "--expect-nums", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("2 of the numbers 0..5 missing") && line.contains("3 extra documents"), "{line}");

    let out = sluice(&["count", "--expect-nums", "2"]);
    let line = error_line(&String::from_utf8_lossy(&out.stderr)).to_owned();
    assert!(line.contains("2 documents without a num in 0..2"), "{line}");
}
