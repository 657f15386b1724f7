//! Validation with self-test records, through the real runtime and the built
//! example plugins (no services needed): what a hot swap checks before it swaps.

use sluice::config::{PluginConfig, SelfTest};
use sluice::runtime::Runtime;
use sluice_tests::plugin;

fn with_tests(name: &str, tests: Vec<SelfTest>) -> PluginConfig {
    PluginConfig { self_test: tests, ..PluginConfig::new(name, plugin(name)) }
}

fn test(input: &str, expect: Option<&str>, expect_error: bool) -> SelfTest {
    SelfTest { input: input.into(), key: None, topic: "self-test".into(), expect: expect.map(Into::into), expect_error }
}

#[test]
fn expected_outputs_pass_and_others_fail_with_both_shown() {
    let rt = Runtime::new().unwrap();
    let ok =
        test(r#"{"num": 3}"#, Some(r#"[{"num": 3, "square": 9, "source": {"topic": "self-test", "partition": 0, "offset": 0}}]"#), false);
    rt.load(&with_tests("enrich", vec![ok.clone()])).expect("matching expectation");

    let wrong = test(r#"{"num": 3}"#, Some(r#"[{"num": 3, "square": 10}]"#), false);
    let err = rt.load(&with_tests("enrich", vec![ok, wrong])).unwrap_err().to_string();
    assert!(err.contains("failed self_test 2: expected [{\"num\":3,\"square\":10}], got [{\"num\":3,"), "{err}");
}

#[test]
fn drops_and_errors_can_be_expected() {
    let rt = Runtime::new().unwrap();
    let tests = vec![test(r#"{"num": 3}"#, Some("[]"), false), test(r#"{"n": 1}"#, None, true), test(r#"{"num": 4}"#, None, false)];
    rt.load(&with_tests("even", tests)).expect("odd dropped, no num fails, even kept");

    let err = rt.load(&with_tests("even", vec![test(r#"{"num": 4}"#, None, true)])).unwrap_err().to_string();
    assert!(err.contains("failed self_test 1: expected an error, got 1 document(s)"), "{err}");
    let err = rt.load(&with_tests("even", vec![test("not json", None, false)])).unwrap_err().to_string();
    assert!(err.contains("failed self_test 1: the plugin failed the record: value is not JSON"), "{err}");
}
