"""The SDK's columns against the contract's test vectors (guest-sdk/wit/vectors.json), natively."""
import json
import os
import pathlib

import pytest

from sluice_plugin._columns import INVALID_INPUT_TAG, Record, ResultWriter, read_batch, read_result

VECTORS = json.loads(pathlib.Path(os.environ.get("SLUICE_VECTORS", pathlib.Path(__file__).resolve().parents[2] / "wit" / "vectors.json")).read_text())
OPS = {"insert": 0, "upsert": 1, "delete": 2, "update": 3, "replace": 4, "delete-where": 5}
hx = lambda h: None if h is None else bytes.fromhex(h)  # noqa: E731


def test_constants():
    assert VECTORS["contract"] == "sluice:plugin@0.3.0"
    assert INVALID_INPUT_TAG.hex() == VECTORS["invalid_input_tag"]


@pytest.mark.parametrize("v", VECTORS["batches"], ids=lambda v: v["name"])
def test_batch_columns_read_into_records(v):
    c = v["columns"]
    got = list(read_batch(v["topic"], v["partition"], c["offsets"], c["timestamps"], c["spans"], c["header_spans"], hx(c["data"])))
    want = [
        Record(v["topic"], v["partition"], r["offset"], r["timestamp"], hx(r["key"]), hx(r["value"]),
               [(hx(k).decode("utf-8"), hx(val)) for k, val in r["headers"]])
        for r in v.get("decoded", v["records"])
    ]
    assert got == want


def enc(s):
    return None if s is None else s.encode()


def write(outcomes, ordered=False):
    w = ResultWriter(ordered)
    for o in outcomes:
        w.begin()
        if o["kind"] == "drop":
            w.emitted()
        elif o["kind"] == "emit":
            for out in o["outputs"]:
                w.output(OPS[out["operation"]], enc(out["document"]), out["collection"], enc(out["filter"]), out["upsert"])
            w.emitted()
        else:
            w.failed(o["message"], o["invalid_input"])
    return {"outcomes": w.outcomes, "outputs": w.outputs, "data": bytes(w.data).hex(), "options": w.options}


@pytest.mark.parametrize("v", [v for v in VECTORS["results"] if not v.get("decode_only")], ids=lambda v: v["name"])
def test_outcomes_written_into_columns(v):
    assert write(v["outcomes"], v["ordered"]) == v["columns"]


def test_outputs_then_error_discards_outputs():
    w = ResultWriter()
    w.begin()
    w.output(0, b'{"a":1}', "c")
    w.failed("late")
    assert (w.outcomes, w.outputs, bytes(w.data)) == ([2, 0, 4], [], b"late")


@pytest.mark.parametrize("v", VECTORS["results"], ids=lambda v: v["name"])
def test_result_columns_read_back(v):
    c = v["columns"]
    got = read_result(c["outcomes"], c["outputs"], hx(c["data"]))
    want = []
    for o in v["outcomes"]:
        if o["kind"] == "drop" or (o["kind"] == "emit" and not o["outputs"]):
            want.append(("drop",))
        elif o["kind"] == "emit":
            want.append(("emit", [(OPS[x["operation"]], enc(x["filter"]), enc(x["document"]), x["upsert"], x["collection"])
                                  for x in o["outputs"]]))
        else:
            want.append(("error", o["message"], o["invalid_input"]))
    assert got == want
