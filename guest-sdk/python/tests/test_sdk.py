"""The decorators, outcomes and outputs, natively (a fresh SDK state per test)."""
import importlib

import pytest

import sluice_plugin


@pytest.fixture
def sdk():
    sluice_plugin._plugin = None
    sluice_plugin._init_fn = None
    yield sluice_plugin
    sluice_plugin._plugin = None


def test_map_outputs_and_errors(sdk):
    from sluice_plugin.testing import run

    @sdk.map
    def f(doc, record):
        n = doc["n"]
        if n == 0:
            return None
        if n == 1:
            return sdk.Output.upsert({"_id": 1, "x": "é"}).in_collection("other")
        if n == 2:
            return sdk.Output.delete(7)
        if n == 3:
            raise sdk.Error("three")
        if n == 4:
            return [1]
        return {"n": n, "k": record.key_str(), "h": record.header("h").decode()}

    recs = [sdk.Record("t", 0, i, None, b"k", f'{{"n":{i}}}'.encode(), [("h", b"v")]) for i in range(6)]
    out = run(recs + ["[1,2]", "", '{"n": NaN}'])
    assert out[0] == ("drop",)
    assert out[1] == ("emit", [sdk.Output(1, {"_id": 1, "x": "é"}, "other")])
    assert out[2] == ("emit", [sdk.Output(2, {"_id": 7}, None)])
    assert out[3] == ("error", "three", False)
    assert out[4] == ("error", "the output is not a JSON object: [1]", False)
    assert out[5] == ("emit", [sdk.Output(0, {"n": 5, "k": "k", "h": "v"}, None)])
    assert out[6][0] == "error" and out[6][1].startswith("TypeError"), out[6]  # map gets any JSON, like Rust
    assert out[7][0] == "error" and out[7][2], "an empty value is not JSON: invalid input"
    assert out[8][0] == "error" and out[8][2], "NaN is not JSON (as serde_json)"


def test_filter_keeps_bytes_and_checks_objects(sdk):
    from sluice_plugin.testing import run

    @sdk.filter
    def even(doc):
        return doc["num"] % 2 == 0

    out = run(['{"num": 2}', '{"num":3}', "[1]", sdk.Record("t", 0, 9, None, b"k", None)])
    assert out[0] == ("emit", [sdk.Output(0, {"num": 2}, None)])
    assert out[1] == ("drop",)
    assert out[2] == ("error", "value is not a JSON object: [1]", True)
    assert out[3] == ("error", "record has no value (tombstone)", True)


def test_flat_map_discards_outputs_of_a_failing_record(sdk):
    from sluice_plugin.testing import run

    @sdk.flat_map(init=lambda p: None)
    def split(doc):
        for i in range(doc["k"]):
            yield {"i": i}
        if doc.get("fail"):
            raise ValueError("late")

    out = run(['{"k":2}', '{"k":2,"fail":true}', '{"k":0}'])
    assert out == [("emit", [sdk.Output(0, {"i": 0}), sdk.Output(0, {"i": 1})]), ("error", "ValueError: late", False), ("drop",)]


def test_params_and_init(sdk):
    seen = {}

    @sdk.init
    def setup(params):
        seen["f"] = params.parse("factor", int, 2)

    @sdk.map
    def f(doc):
        return doc

    assert sdk._run_init([("factor", "3")]) is None and seen["f"] == 3
    assert "parameter `factor`" in sdk._run_init([("factor", "x")])


def test_one_function_per_plugin(sdk):
    sdk.map(lambda d: d)
    with pytest.raises(RuntimeError):
        sdk.filter(lambda d: True)


def test_raw_documents_are_the_bytes_written(sdk):
    from sluice_plugin.testing import run

    @sdk.map
    def f(doc, record):
        doc["at"] = [record.topic, record.partition, record.offset]
        return doc

    rec = sdk.Record("orders", 3, 41, None, None, '{"b":"é","a":1.5}'.encode())
    # Compact, UTF-8 (not \u escapes), insertion order; topic and partition from the Record.
    assert run([rec], raw=True) == [("emit", [sdk.Output(0, '{"b":"é","a":1.5,"at":["orders",3,41]}')])]
    with pytest.raises(ValueError):
        run([rec, sdk.Record("other", 3, 42, None, None, b"{}")])


def test_not_json_as_serde_json_sees_it(sdk):
    from sluice_plugin.testing import run

    sdk.map(lambda d: {"v": d})
    out = run(['{"n": 1e400}', '\ufeff{"n": 1}', '{"n": Infinity}', b'{"n": "\xff"}'])
    assert all(o[0] == "error" and o[1].startswith("value is not JSON") and o[2] for o in out), out


def test_log_goes_to_stderr_natively(sdk, capsys):
    sdk.log.info("loaded 3 rules")
    sdk.log.warn("careful")
    assert capsys.readouterr().err == "[plugin info] loaded 3 rules\n[plugin warn] careful\n"


def test_guest_glue_is_not_imported_natively():
    import sys

    assert "sluice_plugin._guest" not in sys.modules  # it needs componentize-py's generated modules


def test_writes_by_filter_and_ordered(sdk):
    from sluice_plugin.testing import run

    @sdk.flat_map
    def f(doc):
        return [
            sdk.Output.update({"_id": doc["k"]}, {"$inc": {"n": 1}}).or_insert(),
            sdk.Output.replace_where({"name": "a"}, {"name": "a", "v": 2}).in_collection("c"),
            sdk.Output.delete_where({"name": {"$gt": ""}}),
            sdk.Output.insert({"x": 1}).or_insert(),
        ]

    out = run([sdk.Record("t", 0, 0, value=b'{"k": "id"}')])
    assert out == [("emit", [
        sdk.Output(3, {"$inc": {"n": 1}}, None, {"_id": "id"}, True),
        sdk.Output(4, {"name": "a", "v": 2}, "c", {"name": "a"}, False),
        sdk.Output(5, None, None, {"name": {"$gt": ""}}, False),
        sdk.Output(0, {"x": 1}, None),
    ])]
    sdk.set_ordered(True)
    assert sdk._process("t", 0, [], [], [], [], b"")[3] == 1
    sdk.set_ordered(False)
    assert sdk._process("t", 0, [], [], [], [], b"")[3] == 0
