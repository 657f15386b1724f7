"""The enrich plugin through the SDK, natively: the exact documents the Rust enrich
(plugins/enrich) stores for the same records (its unit tests' inputs, and the seed's)."""
import pytest

import sluice_plugin as sdk
from sluice_plugin import Record
from sluice_plugin.testing import run

import plugin


@pytest.fixture(autouse=True)
def default_params():
    assert sdk._run_init([]) is None
    yield
    assert sdk._run_init([]) is None


def stored(records, **kw):
    """The JSON text of each record's one inserted document (an error fails the test)."""
    out = []
    for o in run(records, raw=True, **kw):
        assert o[0] == "emit" and len(o[1]) == 1 and o[1][0].operation == 0 and o[1][0].collection is None, o
        out.append(o[1][0].document)
    return out


def test_adds_square_and_source():
    # Rust: adds_square_and_source (Record::new("testnum", 2, 41, r#"{"num":12}"#)).
    assert stored([Record("testnum", 2, 41, None, None, b'{"num":12}')]) == [
        '{"num":12,"source":{"offset":41,"partition":2,"topic":"testnum"},"square":144}'
    ]


def test_seed_records_as_rust_stores_them():
    # The seed's values are {"num": n} on topic testnum; the Rust enrich stored these.
    assert stored(['{"num":1}', '{"num":500}', '{"num":-3}'], topic="testnum") == [
        '{"num":1,"source":{"offset":0,"partition":0,"topic":"testnum"},"square":1}',
        '{"num":500,"source":{"offset":1,"partition":0,"topic":"testnum"},"square":250000}',
        '{"num":-3,"source":{"offset":2,"partition":0,"topic":"testnum"},"square":9}',
    ]


def test_keys_sorted_at_every_depth_like_serde_json():
    assert stored(['{"z":{"b":1,"a":[{"d":1,"c":"é"}]},"num":2}'], topic="t") == [
        '{"num":2,"source":{"offset":0,"partition":0,"topic":"t"},"square":4,"z":{"a":[{"c":"é","d":1}],"b":1}}'
    ]


def test_rejects_bad_input():
    # Rust: rejects_bad_input, and the SDK's invalid input for a value that is not JSON.
    out = run(['{"num": 1.5}', '{"num": 9223372036854775807}', '{"num": 3037000500}', "nope", '{"num": true}'])
    assert out[0] == ("error", 'no integer field `num` in {"num":1.5}', False)
    assert out[1] == ("error", "num 9223372036854775807 squared overflows 64 bits", False)
    assert out[2] == ("error", "num 3037000500 squared overflows 64 bits", False)
    assert out[3][0] == "error" and out[3][1].startswith("value is not JSON") and out[3][2]
    assert out[4] == ("error", 'no integer field `num` in {"num":true}', False)


def test_init_checks_field_name():
    # Rust: init_checks_field_name.
    assert sdk._run_init([("square_field", "a.b")]) == 'parameter `square_field` = "a.b" is not a usable MongoDB field name'
    assert sdk._run_init([("square_field", "sq")]) is None
    assert stored(['{"num":3}']) == ['{"num":3,"source":{"offset":0,"partition":0,"topic":"t"},"sq":9}']
