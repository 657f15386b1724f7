//! Hostile Python and JavaScript plugins on the real services (issue #16): one
//! component per language (`tests/hostile/hostile-py`, `tests/hostile/hostile-js`,
//! built by `make lang-plugins`) misbehaves in the way its `mode` param says on
//! the record whose `num` is its `trigger` param, and passes every other record
//! through unchanged.
//!
//! One host run per language, of a chain of seven instances of that component,
//! one per mode, each with its own trigger: each trigger record is dead-lettered
//! once, by the instance that misbehaved, with the kind and reason of what it
//! did; every other record lands exactly once; offsets reach the end; the host
//! keeps going and finishes.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice::RunOptions;
use sluice_tests::{PluginToml, TestEnv, lang_plugin, num_report};

const N: u64 = 40;

/// Each instance's call time limit: short, so the endless loop costs little (a
/// failing call, then one per halving of its batch), yet far above a normal
/// call (about a millisecond for a batch of 16).
const CALL_TIMEOUT: &str = "500ms";

/// Each instance's memory cap: a Python instance starts at about 12.75 MiB
/// (it does not instantiate under 13 MiB), a JavaScript one at about 9 MiB.
const MEMORY_BYTES: i64 = 24 << 20;

/// What an instance of the hostile component does on its trigger record, and
/// what the dead letter says: the failure kind and text its reason contains.
struct Mode {
    mode: &'static str,
    trigger: i64,
    kind: &'static str,
    reason: &'static str,
}

const fn mode(mode: &'static str, trigger: i64, kind: &'static str, reason: &'static str) -> Mode {
    Mode { mode, trigger, kind, reason }
}

/// The same for both languages: the host's limits end the call.
const LOOP: Mode = mode("loop", 3, "timeout", "call exceeded limits.call_timeout (500ms): wasm trap: interrupt");
const SLEEP: Mode =
    mode("sleep", 8, "timeout", "call exceeded limits.call_timeout (500ms): the plugin waited 3600s on a clock in one call");
const PRINT: Mode = mode("print", 33, "trap", "the plugin printed more than 1048576 bytes to stdout/stderr in one call");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_python_is_contained_mode_by_mode() {
    run_chain(
        "py",
        [
            LOOP,
            // time.sleep(3600): one clock wait of an hour, ended at once.
            SLEEP,
            // A refused memory.grow is a failed malloc, which CPython raises as
            // MemoryError; the host saw the refusal: the call fails as `memory`.
            mode("bomb", 13, "memory", "limits.memory_bytes"),
            // No preopened directory: no path resolves.
            mode("passwd", 18, "plugin-error", "FileNotFoundError: [Errno 44] No such file or directory: '/etc/passwd'"),
            // socket.connect(("127.0.0.1", 9092)): every address is denied.
            mode("socket", 23, "plugin-error", "PermissionError: [Errno 2] Permission denied"),
            // os.environ is empty.
            mode("env", 28, "plugin-error", "env: environment seen: {}"),
            PRINT,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_javascript_is_contained_mode_by_mode() {
    run_chain(
        "js",
        [
            LOOP,
            // setTimeout of an hour: StarlingMonkey's event loop waits for it on a
            // WASI clock once the export returns (JavaScript has no synchronous sleep).
            SLEEP,
            // SpiderMonkey throws "out of memory"; the host saw the refusal: `memory`.
            mode("bomb", 13, "memory", "limits.memory_bytes"),
            // No file or socket API; fetch (of a file: or an http: URL) is built
            // without componentize-js's `http` feature and traps at once.
            mode("passwd", 18, "trap", "wasm trap: wasm `unreachable` instruction executed"),
            mode("socket", 23, "trap", "wasm trap: wasm `unreachable` instruction executed"),
            // No process.env: nothing of the environment to see.
            mode("env", 28, "plugin-error", "env: environment seen: {} (process: undefined)"),
            PRINT,
        ],
    )
    .await;
}

/// One host run of `hostile-<lang>` × 7 (one instance per mode) on `N` records
/// over 2 partitions; the checks of the module's doc.
async fn run_chain(lang: &str, modes: [Mode; 7]) {
    let wasm = lang_plugin(&format!("hostile-{lang}"));
    let env = TestEnv::new(&format!("hostile-{lang}"));
    env.create_topic(2).await.unwrap();
    env.produce_nums(N).await.unwrap();
    let chain = modes.iter().map(|m| {
        PluginToml::new(&format!("{lang}-{}", m.mode), &wasm)
            .param("mode", m.mode)
            .param("trigger", &m.trigger.to_string())
            .limit("call_timeout", CALL_TIMEOUT)
            .limit("memory_bytes", MEMORY_BYTES)
    });
    let config = env.config_from(&env.builder().chain(chain).set("pipeline", "batch_max_records", 16)).unwrap();

    let started = std::time::Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(240),
        sluice::run(config, RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .expect("finished in time")
    .expect("the host stays up and finishes");
    println!("{lang}: the run took {:.1?}: {summary}", started.elapsed());
    assert_eq!(summary.consumed, N, "{lang}: {summary}");
    assert_eq!(summary.dead_lettered, modes.len() as u64, "{lang}: {summary}");

    let docs = env.documents().await.unwrap();
    let report = num_report(&docs, (0..N as i64).filter(|n| modes.iter().all(|m| m.trigger != *n)));
    assert!(report.is_exact(), "{lang}: {report:?}");
    env.assert_committed_at_end();

    let dead = env.dead_letters(modes.len()).unwrap();
    assert_eq!(dead.len(), modes.len(), "{lang}: {dead:?}");
    let mut by_value: BTreeMap<String, _> = BTreeMap::new();
    for d in &dead {
        let value = String::from_utf8_lossy(d.value.as_deref().expect("the original value is kept")).into_owned();
        assert!(by_value.insert(value.clone(), d).is_none(), "{lang}: {value} dead-lettered twice");
    }
    let version = dead[0].header("sluice.plugin.version");
    assert_eq!(version.len(), 12);
    // The whole chain generation that processed them: seven instances of one component.
    let chain: Vec<String> = modes.iter().map(|m| format!("{lang}-{}@{version}", m.mode)).collect();
    for m in &modes {
        let value = format!("{{\"num\":{}}}", m.trigger);
        let d = by_value.get(&value).unwrap_or_else(|| panic!("{lang}-{}: {value} not dead-lettered: {dead:?}", m.mode));
        let (kind, reason) = (d.header("sluice.error.kind"), d.header("sluice.error.reason"));
        println!("{lang}-{}: num {}: kind={kind} reason={reason}", m.mode, m.trigger);
        assert_eq!(d.header("sluice.plugin"), format!("{lang}-{}", m.mode), "{reason}");
        assert_eq!(d.header("sluice.plugin.version"), version);
        assert_eq!(kind, m.kind, "{lang}-{}: {reason}", m.mode);
        assert!(reason.contains(m.reason), "{lang}-{}: reason {reason:?} lacks {:?}", m.mode, m.reason);
        assert!(!reason.contains("isolation time ran out"), "{lang}-{}: {reason}", m.mode);
        assert_eq!(d.header("sluice.chain"), chain.join(","));
        assert_eq!(d.header("sluice.source.topic"), env.topic);
        assert!(d.header("sluice.source.offset").parse::<i64>().is_ok());
    }
}
