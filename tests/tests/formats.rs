//! Avro, Protobuf and JSON Schema topics on the real services, written by
//! Confluent's own serializers (`confluent-kafka`) against the test registry:
//! decoded before the chain into the documents their extended JSON makes; what
//! does not decode is dead-lettered with its bytes and replays through the
//! registry; the registry away is a wait, never a loss.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use sluice_tests::*;

/// One test at a time: the outage test stops the shared registry.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NUM_AVSC: &str = r#"{"type": "record", "name": "Num", "namespace": "sluice.test", "fields": [
    {"name": "num", "type": "long"},
    {"name": "pad", "type": "string", "default": ""}
]}"#;

fn write(env: &TestEnv, name: &str, text: &str) -> String {
    let p = env.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// `{"key": n, "value": {"num": n, "pad": pad}}` for n in `range`.
fn num_lines(range: std::ops::Range<i64>, pad: &str) -> String {
    range.map(|n| format!("{{\"key\": \"{n}\", \"value\": {{\"num\": {n}, \"pad\": \"{pad}\"}}}}\n")).collect()
}

fn avro_builder(env: &TestEnv) -> ConfigBuilder {
    env.builder()
        .set("kafka", "value_format", "avro")
        .set("schema_registry", "url", registry_url())
        .set("schema_registry", "request_timeout", "2s")
        .set("pipeline", "retry_backoff", "100ms")
        .set("pipeline", "retry_max_backoff", "1s")
}

/// The documents of `env`'s topic read with `formats` (key, value) through the
/// `keyed` plugin (the key is the `_id`), sorted by `_id`.
async fn keyed_documents(env: &TestEnv, key_format: &str, value_format: &str) -> Vec<Document> {
    let builder = env
        .builder()
        .set("kafka", "key_format", key_format)
        .set("kafka", "value_format", value_format)
        // FerretDB v1 has no Decimal128 (its connection panics on one): decimals as text here;
        // the Decimal128 mapping itself is checked by host/src/formats' unit tests.
        .set("kafka", "decimals", "string")
        .set("schema_registry", "url", registry_url())
        .plugin(PluginToml::example("keyed"));
    let summary = run_until_caught_up(env.config_from(&builder).unwrap()).await;
    assert_eq!(summary.dead_lettered + summary.skipped, 0, "{summary}");
    let mut docs = env.documents().await.unwrap();
    docs.sort_by_key(|d| d.get("_id").map(|id| id.to_string()));
    docs
}

/// `lines` ({key, value} JSON) written by Confluent's serializer in `format`
/// (schemas from tests/data/formats) land as the documents that `expected`
/// (the same records as extended JSON, on a JSON topic) makes.
async fn same_documents_as_extended_json(name: &str, format: &str, args: &[&str], lines: &str, expected: &str) {
    let encoded = TestEnv::new(&format!("{name}-enc"));
    encoded.create_topic(2).await.unwrap();
    let sent = sr_produce(&encoded.topic, args, lines);
    assert_eq!(sent["produced"], lines.lines().count(), "{sent}");
    assert!(sent["value_schema_id"].as_u64().is_some() && sent["key_schema_id"].as_u64().is_some(), "{sent}");
    let json = TestEnv::new(&format!("{name}-json"));
    json.create_topic(2).await.unwrap();
    sr_produce(&json.topic, &["--value-format", "json", "--key-format", "json"], expected);
    let got = keyed_documents(&encoded, format, format).await;
    let want = keyed_documents(&json, "json", "json").await;
    assert_eq!(got.len(), lines.lines().count());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{format} record stored as\n  {g}\nbut its extended JSON as\n  {w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_land_as_their_extended_json() {
    let _serial = SERIAL.lock().await;
    let (value, key) = (format_data("order.avsc"), format_data("key.avsc"));
    let args = [
        "--value-format",
        "avro",
        "--value-schema",
        value.to_str().unwrap(),
        "--key-format",
        "avro",
        "--key-schema",
        key.to_str().unwrap(),
    ];
    let lines = std::fs::read_to_string(format_data("orders.jsonl")).unwrap();
    let expected = std::fs::read_to_string(format_data("orders.avro.expected.jsonl")).unwrap();
    same_documents_as_extended_json("avro", "avro", &args, &lines, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_land_as_their_extended_json() {
    let _serial = SERIAL.lock().await;
    let (value, key) = (format_data("order.proto"), format_data("key.proto"));
    let args = [
        ["--value-format", "protobuf", "--value-schema", value.to_str().unwrap(), "--value-message", "sluice.test.Order"],
        ["--key-format", "protobuf", "--key-schema", key.to_str().unwrap(), "--key-message", "sluice.test.OrderKey"],
    ]
    .concat();
    let lines = std::fs::read_to_string(format_data("orders.proto.jsonl")).unwrap();
    let expected = std::fs::read_to_string(format_data("orders.proto.expected.jsonl")).unwrap();
    same_documents_as_extended_json("proto", "protobuf", &args, &lines, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_records_land_as_their_json() {
    let _serial = SERIAL.lock().await;
    let (value, key) = (format_data("order.schema.json"), format_data("key.schema.json"));
    let args = [
        "--value-format",
        "json-schema",
        "--value-schema",
        value.to_str().unwrap(),
        "--key-format",
        "json-schema",
        "--key-schema",
        key.to_str().unwrap(),
    ];
    let lines = std::fs::read_to_string(format_data("orders.jsonl")).unwrap();
    same_documents_as_extended_json("jsonschema", "json-schema", &args, &lines, &lines).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_away_for_10s_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("sr-outage");
    env.create_topic(2).await.unwrap();
    let schema = write(&env, "num.avsc", NUM_AVSC);
    // Produced while the registry is up; Sluice has seen none of these ids when it goes down.
    let sent =
        sr_produce(&env.topic, &["--value-format", "avro", "--value-schema", &schema, "--key-format", "string"], &num_lines(0..300, ""));
    assert_eq!(sent["produced"], 300, "{sent}");
    let config = env.config_file_from(&avro_builder(&env));
    let stopped = stop_registry();
    let mut host = Host::spawn(&env, "outage", &config, true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(env.count().await, 0, "nothing can be decoded, so nothing is written: {}", host.log_tail(10));
    let admin = host.admin(None).await;
    let (status, body) = admin.get("/readyz").await;
    assert_eq!(status, 503, "not ready while the registry is away: {body}");
    assert!(body.contains("schema registry"), "{body}");
    stopped.start();
    let status = host.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "{status}\n{}", host.log_tail(30));
    assert!(!host.log_lines("fetching schemas from the registry failed").is_empty(), "it retried: {}", host.log_tail(30));
    assert_eq!(host.summary("dead_lettered"), Some(0), "{}", host.log_tail(10));
    env.assert_exact(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_does_not_decode_is_dead_lettered_with_its_bytes_and_replays_through_the_registry() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("sr-dlq");
    env.create_topic(1).await.unwrap();
    let schema = write(&env, "num.avsc", NUM_AVSC);
    let long_pad = "x".repeat(100);
    // 0..3 short, 3..6 too long for the first run's max_value_bytes once decoded.
    let sent = sr_produce(&env.topic, &["--value-format", "avro", "--value-schema", &schema], &num_lines(0..3, ""));
    sr_produce(&env.topic, &["--value-format", "avro", "--value-schema", &schema], &num_lines(3..6, &long_pad));
    let id = sent["value_schema_id"].as_u64().unwrap() as u32;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&id.to_be_bytes());
    let mut truncated = framed.clone();
    truncated.push(0xff); // a varint cut short
    let unknown_id = [0u8, 0x7f, 0xff, 0xff, 0xf0, 2];
    env.produce_raw(&[(None, Some(b"{\"num\": 99}")), (None, Some(&unknown_id)), (None, Some(&truncated))]).await.unwrap();

    let config = env.config_from(&avro_builder(&env).set("pipeline", "max_value_bytes", 64)).unwrap();
    let summary = run_until_caught_up(config).await;
    assert_eq!((summary.consumed, summary.dead_lettered), (9, 6), "{summary}");
    let nums: Vec<i64> = env.documents().await.unwrap().iter().map(|d| int(d, "num")).collect();
    assert_eq!(sorted(nums), vec![0, 1, 2]);
    let letters = env.dead_letters(6).unwrap();
    for l in &letters {
        assert_eq!(l.header("sluice.error.kind"), "invalid-input", "{:?}", l.header("sluice.error.reason"));
    }
    let messages: Vec<&str> = letters.iter().map(|l| l.header("sluice.error.reason")).collect();
    assert!(messages[3].contains("not in Confluent's wire format") && messages[3].contains("plain JSON"), "{messages:?}");
    assert!(messages[4].contains("schema id 2147483632") && messages[4].contains("not found"), "{messages:?}");
    assert!(messages[5].contains("does not match its Avro schema"), "{messages:?}");
    // Dead letters keep the bytes as consumed: the Avro ones, not their JSON.
    assert_eq!(letters[5].value.as_deref(), Some(&truncated[..]));
    assert_eq!(letters[0].value.as_deref().map(|v| v[0]), Some(0));

    // Replayed with room for the long ones: decoded through the registry again and written.
    let config = env.config_from(&avro_builder(&env)).unwrap();
    let report = sluice::cli::dlq_replay::replay(&config, &format!("{}.dlq", env.topic), &[]).await.unwrap();
    assert_eq!((report.read, report.written, report.failed.len()), (6, 3, 3), "{:?}", report.failed);
    let docs = env.documents().await.unwrap();
    assert_eq!(sorted(docs.iter().map(|d| int(d, "num")).collect()), vec![0, 1, 2, 3, 4, 5]);
    assert!(docs.iter().any(|d| d.get_str("pad") == Ok(long_pad.as_str())));
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort();
    v
}

/// `sluice produce --value-format avro` writes what Confluent's deserializer-side
/// (our decoder, checked against their serializer above) reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_produce_writes_avro_the_host_reads() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("sr-produce");
    env.create_topic(1).await.unwrap();
    let schema = write(&env, "num.avsc", NUM_AVSC);
    let input = write(&env, "in.jsonl", &(0..50).map(|n| format!("{{\"num\": {n}}}\n")).collect::<String>());
    let out = std::process::Command::new(sluice_bin())
        .args(["produce", "--brokers", &brokers(), "--topic", &env.topic, "--input", &input, "--no-progress"])
        .args(["--value-format", "avro", "--schema", &schema, "--registry", &registry_url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("registered under {}-value", env.topic)));
    let summary = run_until_caught_up(env.config_from(&avro_builder(&env)).unwrap()).await;
    assert_eq!(summary.dead_lettered, 0, "{summary}");
    env.assert_exact(50).await;
    let doc = env.collection().await.unwrap().find_one(doc! { "num": 7i64 }).await.unwrap().expect("num 7");
    assert_eq!(doc.get("pad"), Some(&Bson::String(String::new())), "the schema's default: {doc}");
    let _: Document = doc;
}

/// `sluice plugin test` decodes as the host does: Avro values (base64 lines)
/// through the registry, and the same outcome for bytes that do not decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_test_reads_avro_through_the_registry() {
    use base64::Engine as _;
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("sr-plugin-test");
    let registry = sluice::formats::Registry::new(&sluice::config::SchemaRegistryConfig::at(registry_url())).unwrap();
    let id = registry.register(&format!("{}-value", env.topic), NUM_AVSC, "AVRO").await.unwrap();
    let avro = sluice::formats::encode::AvroEncoder::new(NUM_AVSC, id).unwrap().encode(r#"{"num": 4, "pad": "p"}"#).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let input = write(&env, "in.b64", &format!("{}\n{}\n", b64(&avro), b64(br#"{"num": 5}"#)));
    let out = std::process::Command::new(sluice_bin())
        .args(["plugin", "test"])
        .arg(plugin("passthrough"))
        .args(["--input", &input, "--value-format", "avro", "--registry", &registry_url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["ops"][0]["document"]["num"], 4, "{stdout}");
    assert_eq!(lines[0]["ops"][0]["document"]["pad"], "p", "{stdout}");
    assert_eq!(lines[1]["error"]["kind"], "invalid-input", "{stdout}");
    assert!(lines[1]["error"]["message"].as_str().unwrap().contains("wire format"), "{stdout}");
}

/// A registry of this test's own, over TLS with basic auth and a bearer token:
/// Sluice trusts its CA from `ca_file`, authenticates both ways, and stops (naming
/// the registry, never the secret) when the credentials are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_over_tls_with_credentials() {
    let env = TestEnv::new("sr-auth");
    env.create_topic(1).await.unwrap();
    let dir = env.dir.path();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut registry = std::process::Command::new("python3")
        .arg(repo().join("scripts/registry/registry.py"))
        .args(["--port", "0", "--quiet", "--user", "sluice:s3cret-pw", "--token", "tok-s3cret"])
        .arg("--data")
        .arg(dir.join("registry.json"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        // The handshake Sluice fails without the CA is logged there: not this test's output.
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(registry.stdout.take().unwrap()).read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|_| panic!("registry's ready line: {line}"))
    };
    let url = format!("https://127.0.0.1:{}", ready["port"]);
    let basic = sluice::config::SchemaRegistryConfig {
        username: Some("sluice".into()),
        password: Some("s3cret-pw".into()),
        ca_file: Some(cert.clone()),
        ..sluice::config::SchemaRegistryConfig::at(url.clone())
    };
    let id = sluice::formats::Registry::new(&basic).unwrap().register(&format!("{}-value", env.topic), NUM_AVSC, "AVRO").await.unwrap();
    let enc = sluice::formats::encode::AvroEncoder::new(NUM_AVSC, id).unwrap();
    let values: Vec<Vec<u8>> = (0..20).map(|n| enc.encode(&format!("{{\"num\": {n}}}")).unwrap()).collect();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    env.produce_raw(&records).await.unwrap();

    let config = |registry: &str| {
        let text = env.builder().set("kafka", "value_format", "avro").to_toml() + registry;
        let path = dir.join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        sluice::config::Config::load(&path).unwrap()
    };
    let ca = cert.display();
    // Refused: the run stops, naming the registry and not the password.
    let wrong = config(&format!("[schema_registry]\nurl = \"{url}\"\nusername = \"sluice\"\npassword = \"nope-pw\"\nca_file = \"{ca}\"\n"));
    let run = sluice::run(wrong, sluice::RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending());
    let e = format!("{:#}", tokio::time::timeout(Duration::from_secs(60), run).await.expect("it stops").unwrap_err());
    assert!(e.contains("refused Sluice's credentials") && e.contains(&url) && !e.contains("nope-pw"), "{e}");
    assert_eq!(env.count().await, 0);
    // Without the CA, TLS fails: retried as unavailable, never a dead letter (so not run to the end here).
    let no_ca = sluice::config::SchemaRegistryConfig { ca_file: None, ..basic.clone() };
    let e = sluice::formats::Registry::new(&no_ca).unwrap().register("x-value", NUM_AVSC, "AVRO").await.unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    // Basic auth, then a bearer token: written.
    run_until_caught_up(config(&format!(
        "[schema_registry]\nurl = \"{url}\"\nusername = \"sluice\"\npassword = \"s3cret-pw\"\nca_file = \"{ca}\"\n"
    )))
    .await;
    env.assert_exact(20).await;
    // A bearer token works as well; a wrong one is refused.
    let bearer =
        sluice::config::SchemaRegistryConfig { username: None, password: None, bearer_token: Some("tok-s3cret".into()), ..basic.clone() };
    let client = sluice::formats::Registry::new(&bearer).unwrap();
    client.fetch(id).await.unwrap();
    assert!(matches!(client.get(id), Some(Ok(_))));
    let wrong = sluice::config::SchemaRegistryConfig { bearer_token: Some("tok-wrong".into()), ..bearer };
    let e = sluice::formats::Registry::new(&wrong).unwrap().fetch(id).await.unwrap_err().to_string();
    assert!(e.contains("refused") && !e.contains("tok-wrong"), "{e}");
    let _ = registry.kill();
    let _ = registry.wait();
}
