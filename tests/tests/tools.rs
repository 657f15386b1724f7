//! The operator and plugin-author commands, through the binary: `check`,
//! `produce` (files, stdin, keys, headers, a config's connection), `plugin new`
//! → build → `plugin test` (with `--expect`, or a config's chain), `dlq replay`
//! (with a fixed file that keeps its plugin's params), `count` (`--expect-nums`,
//! `--by-version`), `reset`, environment overrides and `--help`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_tests::{Host, TestEnv, hostile, plugin, repo, sluice_bin};

fn sluice(args: &[&str]) -> Command {
    let mut c = Command::new(sluice_bin());
    c.args(args).env("NO_COLOR", "1");
    c
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn help_is_everywhere() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["produce", "--help"],
        &["plugin", "new", "--help"],
        &["plugin", "test", "--help"],
        &["dlq", "replay", "--help"],
        &["count", "--help"],
        &["reset", "--help"],
    ] {
        let out = ok(sluice(args).output().unwrap());
        assert!(out.contains("Usage: sluice"), "{args:?}: {out}");
    }
    assert!(ok(sluice(&["--help"]).output().unwrap()).contains("SLUICE_<SECTION>_<KEY>"));
}

#[test]
fn check_validates_without_connecting_and_takes_environment_overrides() {
    let env = TestEnv::new("tools-check");
    // Nothing listens on port 1: a check that connected would fail.
    let config = env
        .config_text(&["even", "enrich"], "[[plugins.self_test]]\ninput = '{\"num\": 3}'\nexpect = '[{\"num\": 3, \"square\": 9, \"source\": {\"topic\": \"self-test\", \"partition\": 0, \"offset\": 0}}]'\n")
        .replace(&sluice_tests::brokers(), "127.0.0.1:1")
        .replace(&sluice_tests::mongo_uri(), "mongodb://app:hunter2@127.0.0.1:1");
    let path = env.dir.path().join("check.toml");
    std::fs::write(&path, &config).unwrap();
    let out = ok(sluice(&["check", "--config"]).arg(&path).output().unwrap());
    assert!(out.contains("is valid (nothing was contacted)"), "{out}");
    assert!(
        out.contains("plugin even: version ") && out.contains("plugin enrich: version ") && out.contains("1 self-tests passed"),
        "{out}"
    );
    assert!(out.contains("mongodb://app:***@127.0.0.1:1") && !out.contains("hunter2"), "{out}");

    let out = ok(sluice(&["check", "--config"]).arg(&path).env("SLUICE_KAFKA_BROKERS", "kafka-a:9092").output().unwrap());
    assert!(out.contains("kafka: kafka-a:9092"), "{out}");

    let out = sluice(&["check", "--config"]).arg(&path).env("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("batch_max_records must be at least 1"), "{}", text(&out.stderr));

    // A self-test that the plugin does not pass.
    std::fs::write(&path, config.replace("\"square\": 9", "\"square\": 10")).unwrap();
    let out = sluice(&["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("plugin `enrich` failed self_test 1: expected"), "{err}");
}

#[test]
fn plugin_test_prints_the_write_plan_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"value\": {\"num\": 4}, \"key\": \"k4\", \"headers\": {\"h\": \"v\"}}\n",
            "{\"value\": {\"num\": 5}}\n",
            "{\"value\": {\"n\": 6}}\n",
            "{\"value_raw\": \"not json\"}\n",
            "{\"value\": null}\n",
        ),
    )
    .unwrap();
    let (even, enrich) = (plugin("even"), plugin("enrich"));
    let run = |extra: &[&str]| {
        sluice(&["plugin", "test"])
            .arg(&even)
            .arg(&enrich)
            .arg("--input")
            .arg(&input)
            .args(["--envelope", "--topic", "orders", "--versions-field", "_v"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let plan = lines(&ok(out));
    assert_eq!(plan.len(), 5);
    let op = &plan[0]["ops"][0];
    assert_eq!(op["op"], "insert");
    assert_eq!(op["_id"], "orders:0:0:0");
    assert_eq!(op["document"]["square"], 16);
    assert_eq!(op["document"]["source"]["topic"], "orders");
    let versions: Vec<&str> = op["document"]["_v"]["plugins"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(versions[0].starts_with("even@") && versions[1].starts_with("enrich@"), "{versions:?}");
    assert_eq!(plan[1], serde_json::json!({"offset": 1, "dropped": true}));
    assert_eq!(plan[2]["error"]["kind"], "plugin-error");
    assert_eq!(plan[2]["error"]["plugin"], "even");
    assert_eq!(plan[3]["error"]["kind"], "invalid-input");
    assert!(plan[3]["error"]["message"].as_str().unwrap().starts_with("value is not JSON"), "{}", plan[3]);
    assert_eq!(plan[4]["error"]["kind"], "invalid-input", "a tombstone reaches the plugin, which refuses it: {}", plan[4]);
    assert_eq!(plan[4]["error"]["message"], "record has no value (tombstone)");

    // --expect: the same plan passes, a changed one fails and says where.
    let expected = dir.path().join("expected.jsonl");
    std::fs::write(&expected, plan.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = run(&["--expect", expected.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the plan matches"));
    std::fs::write(&expected, text(&std::fs::read(&expected).unwrap()).replace("\"square\":16", "\"square\":17")).unwrap();
    let out = run(&["--expect", expected.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("record 0 differs"), "{}", text(&out.stderr));

    // A trap is contained and reported for its record only.
    let nums = dir.path().join("nums.jsonl");
    std::fs::write(&nums, (3..8).map(|n| format!("{{\"num\": {n}}}\n")).collect::<String>()).unwrap();
    let out = sluice(&["plugin", "test"]).arg(hostile("panic")).arg("--input").arg(&nums).output().unwrap();
    let plan = lines(&ok(out));
    assert_eq!(plan.iter().filter(|l| l.get("ops").is_some()).count(), 4);
    assert_eq!(plan[2]["error"]["kind"], "trap");
    assert!(plan[2]["error"]["message"].as_str().unwrap().contains("boom on 5"));
    // Parameters reach init.
    let out = sluice(&["plugin", "test"]).arg(&enrich).arg("--input").arg(&nums).args(["--params", "square_field=sq"]).output().unwrap();
    assert_eq!(lines(&ok(out))[0]["ops"][0]["document"]["sq"], 9);
    // The dry run plans what the run does: what MongoDB would refuse is a failure here too.
    let ops = dir.path().join("ops.jsonl");
    std::fs::write(
        &ops,
        concat!(
            r#"{"ops": [{"op": "upsert", "doc": {"v": 1}}]}"#,
            "\n",
            r#"{"ops": [{"op": "delete", "doc": {"_id": {"$gt": ""}}}]}"#,
            "\n",
            r#"{"ops": [{"op": "upsert", "doc": {"_id": 1, "v": 1}}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let plan = lines(&ok(sluice(&["plugin", "test"]).arg(hostile("writer")).arg("--input").arg(&ops).output().unwrap()));
    assert_eq!(
        (&plan[0]["error"]["kind"], &plan[0]["error"]["plugin"]),
        (&serde_json::json!("sink-rejected"), &serde_json::json!("hostile_writer")),
        "{plan:?}"
    );
    assert!(plan[0]["error"]["message"].as_str().unwrap().contains("needs an `_id`"), "{plan:?}");
    assert!(plan[1]["error"]["message"].as_str().unwrap().contains("operator"), "{plan:?}");
    assert_eq!(plan[2]["ops"][0]["op"], "upsert", "{plan:?}");
}

/// What a newcomer does: scaffold, build for wasm, run it with `plugin test`, and its unit test natively.
#[test]
fn a_new_plugin_builds_as_it_is_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("greeter");
    let out = ok(sluice(&["plugin", "new", "greeter", "--dir"]).arg(&crate_dir).output().unwrap());
    assert!(out.contains("created plugin greeter"), "{out}");
    // Deps compiled once and kept between runs.
    let target = repo().join("target/scaffold-test");
    let cargo = |args: &[&str]| {
        let out = Command::new("cargo").args(args).current_dir(&crate_dir).env("CARGO_TARGET_DIR", &target).output().unwrap();
        assert!(out.status.success(), "cargo {args:?}:\n{}", text(&out.stderr));
    };
    cargo(&["build", "--release"]);
    let host_triple = text(&Command::new("rustc").arg("-vV").output().unwrap().stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap();
    cargo(&["test", "--target", &host_triple]);
    let wasm = target.join("wasm32-unknown-unknown/release/greeter.wasm");
    let out = ok(sluice(&["plugin", "test"]).arg(&wasm).arg("--input").arg(crate_dir.join("records.jsonl")).output().unwrap());
    let plan = lines(&out);
    assert_eq!(plan[0]["ops"][0]["document"]["doubled"], 2);
    assert_eq!(plan[2]["error"]["kind"], "plugin-error");
    // A second `new` into the same place is refused.
    let again = sluice(&["plugin", "new", "greeter", "--dir"]).arg(&crate_dir).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists already"));
}

/// A message read back: key, value, headers.
type ReadBack = (Option<String>, String, Vec<(String, String)>);

/// Read every message of a topic.
fn read_back(env: &TestEnv, n: usize) -> Vec<ReadBack> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", sluice_tests::brokers())
        .set("group.id", sluice_tests::unique("read"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&env.topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers =
                m.headers().map(|h| h.iter().map(|h| (h.key.to_owned(), text(h.value.unwrap_or_default()))).collect()).unwrap_or_default();
            out.push((m.key().map(text), text(m.payload().unwrap_or_default()), headers));
        }
    }
    out
}

#[test]
fn produce_sends_lines_from_a_file_or_stdin_with_keys_and_headers() {
    let env = TestEnv::new("tools-produce");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.jsonl");
    std::fs::write(&file, "{\"id\": \"a1\", \"n\": 1}\n\n{\"id\": 7, \"n\": 2}\n").unwrap();
    let out =
        ok(sluice(&["produce", "--topic", &env.topic, "--brokers", &sluice_tests::brokers(), "--key-field", "id", "--header", "src=test"])
            .arg("--input")
            .arg(&file)
            .output()
            .unwrap());
    assert!(out.contains("sent 2 messages"), "{out}");
    let mut child = sluice(&["produce", "--topic", &env.topic, "--brokers", &sluice_tests::brokers(), "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"n\": 3}\nraw text\n").unwrap();
    assert!(ok(child.wait_with_output().unwrap()).contains("sent 2 messages"));
    let got = read_back(&env, 4);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], (Some("a1".into()), "{\"id\": \"a1\", \"n\": 1}".into(), vec![("src".into(), "test".into())]));
    assert_eq!(got[1].0.as_deref(), Some("7"), "a non-string key field as JSON");
    assert_eq!((got[2].0.clone(), got[2].1.as_str()), (None, "{\"n\": 3}"));
    assert_eq!(got[3].1, "raw text", "lines are sent as they are");
    // A key field that a line lacks is an error naming the line.
    std::fs::write(&file, "{\"n\": 1}\n").unwrap();
    let out = sluice(&["produce", "--topic", &env.topic, "--brokers", &sluice_tests::brokers(), "--key-field", "id", "--input"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("message 1: no field `id`"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_writes_fixed_records_once_and_reports_failures() {
    let env = TestEnv::new("tools-replay");
    env.create_topic(1).await.unwrap();
    env.produce_nums(10).await.unwrap();
    // enrich fails records without an integer `num`: two dead letters.
    env.produce_raw(&[(Some(b"k1"), Some(br#"{"num": "eleven"}"#)), (None, Some(br#"{"n": 12}"#))]).await.unwrap();
    let config = env.config_file(&["enrich"], "");
    let mut host = Host::spawn(&env, "host", &config, true);
    assert!(host.wait(Duration::from_secs(120)).await.success(), "{}", host.log_tail(20));
    assert_eq!(env.count().await, 10);
    assert_eq!(env.dead_letters(2).unwrap().len(), 2);

    let replay = |plugins: &[&Path]| {
        let mut c = sluice(&["dlq", "replay", "--config"]);
        c.arg(&config);
        for p in plugins {
            c.arg("--plugin").arg(p);
        }
        c.output().unwrap()
    };
    // Through the same chain: they fail again, reported, nothing written.
    let out = replay(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("replayed 2 dead letters") && stdout.contains("2 failed again"), "{stdout}");
    assert!(stdout.contains(&format!("failed again: {}:0@10 (plugin-error, plugin enrich)", env.topic)), "{stdout}");
    // Through a fixed chain (passthrough): they land, under their original coordinates.
    let pass = plugin("passthrough");
    let out = ok(replay(&[&pass]));
    assert!(out.contains("replayed 2 dead letters") && out.contains("2 documents written, 0 already there"), "{out}");
    let docs = env.documents().await.unwrap();
    let ids: Vec<&str> =
        docs.iter().filter_map(|d| d.get_str("_id").ok()).filter(|id| id.ends_with(":10:0") || id.ends_with(":11:0")).collect();
    assert_eq!(ids.len(), 2, "{docs:?}");
    // Again: idempotent.
    let out = ok(replay(&[&pass]));
    assert!(out.contains("0 documents written, 2 already there"), "{out}");
    assert_eq!(env.count().await, 12);
}

#[test]
fn plugin_test_takes_the_chain_from_a_config() {
    let env = TestEnv::new("tools-test-config");
    let enrich = format!(
        "[[plugins]]\nname = \"enrich\"\npath = \"{}\"\nparams = {{ square_field = \"sq\" }}\n\
         [[plugins.self_test]]\ninput = '{{\"num\": 2}}'\n\n[pipeline]\nversions_field = \"_v\"\n",
        plugin("enrich").display()
    );
    let config = env.config_file(&["even"], &enrich);
    let input = env.dir.path().join("nums.jsonl");
    std::fs::write(&input, "{\"num\": 1}\n{\"num\": 2}\n").unwrap();
    let plan = lines(&ok(sluice(&["plugin", "test", "--config"]).arg(&config).arg("--input").arg(&input).output().unwrap()));
    assert_eq!(plan[0], serde_json::json!({"offset": 0, "dropped": true}), "even, then enrich");
    let doc = &plan[1]["ops"][0]["document"];
    assert_eq!(doc["sq"], 4, "the config's params: {doc}");
    let versions = doc["_v"]["plugins"].as_array().unwrap();
    assert!(versions[0].as_str().unwrap().starts_with("even@") && versions[1].as_str().unwrap().starts_with("enrich@"), "{doc}");
    // Files and a config: one or the other.
    let out = sluice(&["plugin", "test", "--config"]).arg(&config).arg(plugin("even")).arg("--input").arg(&input).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot be used with"), "{}", text(&out.stderr));
}

#[test]
fn produce_takes_the_connection_and_topic_from_a_config() {
    let env = TestEnv::new("tools-produce-config");
    let config = env.config_file(&[], "");
    let out = ok(sluice(&["produce", "--count", "3", "--config"]).arg(&config).output().unwrap());
    assert!(out.contains(&format!("sent 3 messages to {}", env.topic)), "{out}");
    // SLUICE_KAFKA_BROKERS, as for every command, over the config's brokers.
    let unreachable = env.config_text(&[], "").replace(&sluice_tests::brokers(), "127.0.0.1:1");
    std::fs::write(&config, &unreachable).unwrap();
    let out = sluice(&["produce", "--count", "2", "--start", "3", "--config"])
        .arg(&config)
        .env("SLUICE_KAFKA_BROKERS", sluice_tests::brokers())
        .output()
        .unwrap();
    assert!(ok(out).contains("sent 2 messages"));
    assert_eq!(read_back(&env, 5).len(), 5);
    // The config's [kafka.options] reach the client.
    let bad = unreachable.replace("[mongo]", "[kafka.options]\n\"security.protocol\" = \"carrier-pigeon\"\n\n[mongo]");
    std::fs::write(&config, bad).unwrap();
    let out = sluice(&["produce", "--count", "1", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("carrier-pigeon"), "{}", text(&out.stderr));
}

/// A record that made the plugin panic is dead-lettered; its replay with a fixed
/// file for that plugin runs with the plugin's params; `count` shows both versions;
/// `reset` empties it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_a_fixed_file_keeps_the_params_and_count_and_reset_see_it() {
    let env = TestEnv::new("tools-replay-fixed");
    env.create_topic(1).await.unwrap();
    env.produce_nums(10).await.unwrap();
    let chain = format!(
        "[[plugins]]\nname = \"transform\"\npath = \"{}\"\nparams = {{ square_field = \"sq\" }}\n\n[pipeline]\nversions_field = \"_v\"\n",
        hostile("panic").display()
    );
    let config = env.config_file(&[], &chain);
    let mut host = Host::spawn(&env, "host", &config, true);
    assert!(host.wait(Duration::from_secs(120)).await.success(), "{}", host.log_tail(20));
    // The panic message is in the failure summary only (the plugin's own panic line is at debug).
    let panics = host.log_lines("panic: ");
    assert!(panics.len() == 1 && panics[0].contains("failed records: 1 dead-lettered (trap)"), "{panics:?}");
    let count = |args: &[&str]| sluice(&["count", "--config"]).arg(&config).args(args).output().unwrap();
    let out = count(&["--expect-nums", "10"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("produced=10 stored=9 missing=1 duplicates=0"), "{}", text(&out.stdout));

    let dlq = format!("{}.dlq", env.topic);
    let replay = |file: &str| sluice(&["dlq", "replay", "--from", &dlq, "--plugin", file, "--config"]).arg(&config).output().unwrap();
    let out = replay("other=x.wasm");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the config's chain has no plugin `other` (it has `transform`)"), "{}", text(&out.stderr));
    let out = ok(replay(plugin("enrich").to_str().unwrap()));
    assert!(out.contains(&format!("replayed 1 dead letters from {dlq}: 1 documents written")), "{out}");
    let docs = env.documents().await.unwrap();
    let fixed = docs.iter().find(|d| sluice_tests::int(d, "num") == 5).unwrap();
    assert_eq!((sluice_tests::int(fixed, "sq"), fixed.contains_key("square")), (25, false), "transform's params: {fixed}");

    let out = ok(count(&["--expect-nums", "10", "--by-version"]));
    assert!(out.contains(&format!("10 documents in {}.{}", sluice_tests::DATABASE, env.collection)), "{out}");
    assert!(out.contains("produced=10 stored=10 missing=0 duplicates=0"), "{out}");
    let by_version: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("transform@")).collect();
    assert_eq!(by_version.len(), 2, "{out}");
    assert!(by_version[0].ends_with(&format!(": 9 documents; {}:0 offsets 0..=9", env.topic)), "{out}");
    assert!(by_version[1].ends_with(&format!(": 1 documents; {}:0 offsets 5..=5", env.topic)), "{out}");

    let out = ok(sluice(&["reset", "--config"]).arg(&config).output().unwrap());
    assert!(out.contains(&format!("deleted topics [\"{}\", \"{dlq}\"] and group {}", env.topic, env.group)), "{out}");
    assert_eq!(env.count().await, 0);
    assert!(env.progress().await.is_empty(), "the group's progress is deleted too");
    let probe: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", sluice_tests::brokers()).create().unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(10)).unwrap();
    assert!(!md.topics().iter().any(|t| t.name() == dlq || t.name() == env.topic), "topics deleted, the dead-letter topic too");
    assert!(ok(count(&[])).starts_with("0 documents"));
}

/// `produce --partitions 4` without keys spreads the numbers over all four
/// partitions (librdkafka's sticky default would put nearly all in one).
#[test]
fn produce_spreads_keyless_numbers_over_the_partitions() {
    let env = TestEnv::new("tools-spread");
    let out = ok(sluice(&["produce", "--topic", &env.topic, "--brokers", &sluice_tests::brokers(), "--partitions", "4", "--count", "400"])
        .output()
        .unwrap());
    assert!(out.contains("sent 400 messages"), "{out}");
    let (_, ends) = env.offsets().unwrap();
    assert_eq!(ends.len(), 4, "{ends:?}");
    assert!(ends.values().all(|n| (50..=150).contains(n)), "about 100 each: {ends:?}");
}
