#!/usr/bin/env python3
"""Writes ../wit/vectors.json: the test vectors of the batch columns.

An encoder written apart from the Rust one (`src/lib.rs`), from `wit/columns.md`
alone; the contract crate's tests check the Rust encoder and decoders against
its output in both directions. Run it after changing the vectors below:
    python3 guest-sdk/contract/gen-vectors.py
"""
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
WIT = os.path.join(HERE, "..", "wit")
PACKAGE = re.search(r"^package (\S+);", open(os.path.join(WIT, "plugin.wit")).read(), re.M).group(1)

ABSENT = 0xFFFFFFFF
NO_TIMESTAMP = -1
INVALID_INPUT_TAG = b"\0sluice:invalid-input\0"
OUTCOME = {"drop": 0, "emit": 1, "error": 2}
OPERATION = {"insert": 0, "upsert": 1, "delete": 2, "update": 3, "replace": 4, "delete-where": 5}
FLAG_UPSERT = 1
OPTION_ORDERED = 1


def h(b):
    return None if b is None else b.hex()


def encode_batch(records):
    cols = {"offsets": [], "timestamps": [], "spans": [], "header_spans": [], "data": bytearray()}
    data = cols["data"]

    def append(b):
        if b is None:
            return [0, ABSENT]
        start = len(data)
        data.extend(b)
        return [start, len(b)]

    for r in records:
        cols["offsets"].append(r["offset"])
        cols["timestamps"].append(NO_TIMESTAMP if r["timestamp"] is None else r["timestamp"])
        first = len(cols["header_spans"]) // 4
        for k, v in r["headers"]:
            k = k.decode("utf-8", "replace").encode("utf-8")  # header keys are UTF-8
            cols["header_spans"] += append(k) + append(v)
        cols["spans"] += append(r["key"]) + append(r["value"]) + [first, len(r["headers"])]
    cols["data"] = data.hex()
    return cols


def encode_result(outcomes, ordered=False):
    cols = {"outcomes": [], "outputs": [], "data": bytearray(), "options": OPTION_ORDERED if ordered else 0}
    data = cols["data"]

    def append(b):
        if b is None:
            return [0, ABSENT]
        b = b.encode()
        start = len(data)
        data.extend(b)
        return [start, len(b)]

    for o in outcomes:
        if o["kind"] == "error":
            if o["invalid_input"]:
                data.extend(INVALID_INPUT_TAG)
            m = o["message"].encode()
            cols["outcomes"] += [OUTCOME["error"], len(data), len(m)]
            data.extend(m)
        elif not o.get("outputs"):
            cols["outcomes"] += [OUTCOME["drop"], 0, 0]
        else:
            first = len(cols["outputs"]) // 8
            for out in o["outputs"]:
                # filter, then document, then collection
                f = append(out["filter"])
                d = append(out["document"])
                c = append(out["collection"])
                flags = FLAG_UPSERT if out["upsert"] else 0
                cols["outputs"] += [OPERATION[out["operation"]], flags] + f + d + c
            cols["outcomes"] += [OUTCOME["emit"], first, len(o["outputs"])]
    cols["data"] = data.hex()
    return cols


def encode_legacy_result(outcomes):
    """The same outcomes as contract 0.2.0 wrote them: 5 numbers per output, no options."""
    cols = {"outcomes": [], "outputs": [], "data": bytearray()}
    data = cols["data"]
    for o in outcomes:
        if o["kind"] == "error":
            if o["invalid_input"]:
                data.extend(INVALID_INPUT_TAG)
            m = o["message"].encode()
            cols["outcomes"] += [OUTCOME["error"], len(data), len(m)]
            data.extend(m)
        elif not o.get("outputs"):
            cols["outcomes"] += [OUTCOME["drop"], 0, 0]
        else:
            first = len(cols["outputs"]) // 5
            for out in o["outputs"]:
                doc = out["document"].encode()
                ds = len(data)
                data.extend(doc)
                if out["collection"] is None:
                    cs, cl = 0, ABSENT
                else:
                    c = out["collection"].encode()
                    cs, cl = len(data), len(c)
                    data.extend(c)
                cols["outputs"] += [OPERATION[out["operation"]], ds, len(doc), cs, cl]
            cols["outcomes"] += [OUTCOME["emit"], first, len(o["outputs"])]
    cols["data"] = data.hex()
    return cols


def rec(offset, value, timestamp=None, key=None, headers=()):
    return {"offset": offset, "timestamp": timestamp, "key": key, "value": value, "headers": list(headers)}


def rec_json(r):
    return {
        "offset": r["offset"],
        "timestamp": r["timestamp"],
        "key": h(r["key"]),
        "value": h(r["value"]),
        "headers": [[h(k), h(v)] for k, v in r["headers"]],
    }


def batch(name, about, records, topic="t", partition=0, decoded=None):
    v = {"name": name, "about": about, "topic": topic, "partition": partition,
         "records": [rec_json(r) for r in records], "columns": encode_batch(records)}
    if decoded is not None:
        v["decoded"] = [rec_json(r) for r in decoded]
    return v


def out(operation, document, collection=None, filter=None, upsert=False):
    return {"operation": operation, "filter": filter, "document": document, "upsert": upsert, "collection": collection}


def emit(*outputs):
    return {"kind": "emit", "outputs": list(outputs)}


def error(message, invalid_input=False):
    return {"kind": "error", "message": message, "invalid_input": invalid_input}


DROP = {"kind": "drop"}


def result(name, about, outcomes, columns=None, ordered=False):
    v = {"name": name, "about": about, "records": len(outcomes), "outcomes": outcomes, "ordered": ordered}
    if columns is None:
        v["columns"] = encode_result(outcomes, ordered)
    else:
        v["decode_only"] = True
        v["columns"] = columns
    return v


def malformed(name, records, outcomes, outputs, data, error, options=0):
    return {"name": name, "records": records,
            "columns": {"outcomes": outcomes, "outputs": outputs, "data": data.hex(), "options": options}, "error": error}


def legacy(name, about, outcomes):
    return {"name": name, "about": about, "records": len(outcomes), "outcomes": outcomes,
            "columns": encode_legacy_result(outcomes)}


BATCHES = [
    batch("empty", "no records: every column is empty", []),
    batch("keys-absent-and-present", "a key, then none; a timestamp, then none",
          [rec(5, b"{}", timestamp=1700000000000, key=b"k"), rec(6, b'{"num":1}')], topic="orders", partition=3),
    batch("tombstone", "no value: a tombstone (a plugin may turn it into a delete by key)",
          [rec(7, None, key=b"user-1")]),
    batch("headers", "headers with and without values; a header value and a key that are not UTF-8",
          [rec(0, b'{"a":1}', key=b"\xff\x00", headers=[(b"h", b"v"), (b"e", None), (b"bin", b"\xfe\xff\x00")]),
           rec(1, b"{}", headers=[(b"h", b"w")])]),
    batch("header-key-not-utf8", "a header key that is not UTF-8 is written with U+FFFD for its bad bytes",
          [rec(0, b"{}", headers=[(b"k\xff", b"\xff")])],
          decoded=[rec(0, b"{}", headers=[("k\ufffd".encode(), b"\xff")])]),
    batch("value-not-json", "the value is bytes as they came: the columns never check JSON",
          [rec(-1, b"not json", timestamp=0)]),
]

RESULTS = [
    result("empty", "no records, no outcomes", []),
    result("drop", "a record filtered out", [DROP]),
    result("emit-insert", "one insert into the configured collection", [emit(out("insert", '{"a":1}'))]),
    result("each-operation", "insert, upsert and delete, one with a collection override",
           [emit(out("insert", '{"n":1}')), emit(out("upsert", '{"_id":2,"n":2}')),
            emit(out("delete", '{"_id":3}', "other"))]),
    result("fan-out", "one record becomes three outputs, the next two, one dropped between",
           [emit(out("insert", '{"i":0}'), out("insert", '{"i":1}', "c"), out("upsert", '{"_id":"x"}')),
            DROP, emit(out("delete", '{"_id":"y"}'), out("insert", '{"i":2}'))]),
    result("error", "a plugin error: the message is data", [error("reading: no num")]),
    result("invalid-input", "invalid input: the tag lies just before the message",
           [error("value is not JSON: expected value at line 1 column 1", invalid_input=True),
            error("record has no value (tombstone)", invalid_input=True)]),
    result("each-outcome-kind", "drop, emit, error and invalid input in one result",
           [DROP, emit(out("insert", '{"ok":true}')), error("bad factor"),
            error("value is not a JSON object: [1]", invalid_input=True)]),
    result("invalid-input-legacy", "plugins built before the tag: the message's prefix says invalid input",
           [error("value is not JSON: EOF while parsing", invalid_input=True),
            error("value is not a JSON object: 3", invalid_input=True),
            error("record has no value (tombstone)", invalid_input=True),
            error("the value is not JSON, says the plugin")],
           columns=encode_result([error("value is not JSON: EOF while parsing"), error("value is not a JSON object: 3"),
                                  error("record has no value (tombstone)"), error("the value is not JSON, says the plugin")])),
    result("emit-none", "emit with a count of 0 is the same as drop (writers write drop)",
           [emit()], columns={"outcomes": [1, 0, 0], "outputs": [], "data": "", "options": 0}),
    result("update", "an update by filter, then the same as an upsert into another collection",
           [emit(out("update", '{"$set":{"a":1},"$inc":{"n":1}}', filter='{"_id":"k"}')),
            emit(out("update", '{"$push":{"tags":"x"}}', "c", filter='{"email":"a@b"}', upsert=True))]),
    result("replace-and-delete-where", "a replace by filter (upsert), a replace, a delete by filter",
           [emit(out("replace", '{"name":"n","v":2}', filter='{"name":"n"}', upsert=True),
                 out("replace", '{"v":3}', filter='{"_id":1}')),
            emit(out("delete-where", None, filter='{"name":{"$gt":""}}'))]),
    result("ordered", "the plugin asks for its outputs to be written in order",
           [emit(out("insert", '{"i":0}'), out("update", '{"$inc":{"n":1}}', filter='{"_id":0}'))], ordered=True),
]

LEGACY = [
    legacy("each-operation", "contract 0.2.0: 5 numbers per output, no options; read as insert, upsert and delete",
           [emit(out("insert", '{"n":1}')), emit(out("upsert", '{"_id":2,"n":2}')),
            emit(out("delete", '{"_id":3}', "other"))]),
    legacy("fan-out-and-errors", "contract 0.2.0: outputs, a drop and an error",
           [emit(out("insert", '{"i":0}'), out("insert", '{"i":1}', "c")), DROP,
            error("value is not JSON: x", invalid_input=True)]),
]

NOF = [0, ABSENT]  # no filter
MALFORMED = [
    malformed("document-outside", 1, [1, 0, 1], [0, 0] + NOF + [0, 7, 0, ABSENT], b"{}", "document outside"),
    malformed("outputs-beyond", 1, [1, 0, 2], [0, 0] + NOF + [0, 2, 0, ABSENT], b"{}", "beyond the 1 given"),
    malformed("unknown-operation", 1, [1, 0, 1], [6, 0] + NOF + [0, 2, 0, ABSENT], b"{}", "unknown operation 6"),
    malformed("update-without-filter", 1, [1, 0, 1], [3, 0] + NOF + [0, 2, 0, ABSENT], b"{}", "update needs a filter"),
    malformed("insert-with-filter", 1, [1, 0, 1], [0, 0, 0, 2, 0, 2, 0, ABSENT], b"{}", "insert takes no filter"),
    malformed("delete-where-with-document", 1, [1, 0, 1], [5, 0, 0, 2, 0, 2, 0, ABSENT], b"{}", "delete-where takes no document"),
    malformed("filter-outside", 1, [1, 0, 1], [5, 0, 0, 9, 0, ABSENT, 0, ABSENT], b"{}", "filter outside"),
    malformed("upsert-flag-on-insert", 1, [1, 0, 1], [0, 1] + NOF + [0, 2, 0, ABSENT], b"{}", "flags 1 not allowed for insert"),
    malformed("unknown-flag", 1, [1, 0, 1], [3, 2, 0, 2, 0, 2, 0, ABSENT], b"{}", "flags 2 not allowed"),
    malformed("unknown-option", 0, [], [], b"", "unknown options 2", options=2),
    malformed("unknown-outcome-kind", 1, [9, 0, 0], [], b"", "unknown outcome kind 9"),
    malformed("message-outside", 1, [2, 0, 5], [], b"ab", "error message outside"),
    malformed("collection-not-utf8", 1, [1, 0, 1], [0, 0] + NOF + [0, 2, 1, 1], b"{\xff", "not UTF-8"),
    malformed("collection-outside", 1, [1, 0, 1], [0, 0] + NOF + [0, 2, 1, 9], b"{}", "collection name outside"),
    malformed("too-many-outcomes", 1, [0, 0, 0, 0, 0, 0], [], b"", "6 outcome numbers for 1 records"),
    malformed("outputs-not-multiple", 0, [], [0, 0, 0], b"", "not a multiple of 8"),
    malformed("overflowing-range", 1, [1, ABSENT, 2], [], b"", "beyond"),
]


def main():
    vectors = {
        "about": "Test vectors of the Sluice plugin contract's columns (see columns.md). Bytes are hex. "
                 "batches: records -> columns (host) and columns -> records ('decoded' when it differs). "
                 "results: outcomes -> columns (plugin) and columns -> outcomes (host); 'decode_only' ones "
                 "are read, never written. malformed: results a host must refuse, with a part of the reason. "
                 "legacy: results as contract 0.2.0 laid them out (5 numbers per output, no options), "
                 "which a host that still runs 0.2.0 plugins reads as the outcomes.",
        "contract": PACKAGE,
        "absent": ABSENT,
        "no_timestamp": NO_TIMESTAMP,
        "invalid_input_tag": INVALID_INPUT_TAG.hex(),
        "batches": BATCHES,
        "results": RESULTS,
        "malformed": MALFORMED,
        "legacy": LEGACY,
    }
    with open(os.path.join(WIT, "vectors.json"), "w") as f:
        text = json.dumps(vectors, indent=1, ensure_ascii=False)
        # Lists of numbers (the integer columns) and of two strings (headers) on one line.
        text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
        text = re.sub(r"\[\s*((?:\"[0-9a-f]*\"|null),\s*(?:\"[0-9a-f]*\"|null))\s*\]",
                      lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
        f.write(text + "\n")


if __name__ == "__main__":
    main()
