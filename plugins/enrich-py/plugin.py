"""Adds computed fields: `square` (= num²) and the record's source coordinates under `source`
(`topic`, `partition`, `offset`). Parameter `square_field` renames the `square` field.

The Python twin of plugins/enrich (Rust): it stores the same documents, byte for byte.
"""
import json

from sluice_plugin import Error, Params, Record, map

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
_field = "square"


def setup(params: Params) -> None:
    global _field
    field = params.get("square_field", "square")
    if not field or field.startswith("$") or "." in field:
        raise Error(f"parameter `square_field` = {json.dumps(field)} is not a usable MongoDB field name")
    _field = field


@map(init=setup)
def enrich(doc, record: Record):
    # Rust reads `num` as an i64: a float, a bool or a bigger integer is not one.
    n = doc.get("num") if isinstance(doc, dict) else None
    if type(n) is not int or not I64_MIN <= n <= I64_MAX:
        raise Error(f"no integer field `num` in {_rust_json(doc)}")
    square = n * n
    if square > I64_MAX:
        raise Error(f"num {n} squared overflows 64 bits")
    # Same order as the Rust plugin, so a `square_field` named "source" loses to `source`.
    doc[_field] = square
    doc["source"] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    return _sorted(doc)


def _sorted(v):
    """The Rust SDK's serde_json keeps every object's keys sorted (nested ones too), and the
    host stores keys in the order given: sort them to store the very same documents."""
    if isinstance(v, dict):
        return {k: _sorted(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted(x) for x in v]
    return v


def _rust_json(v):
    """`v` as serde_json displays it in an error message (compact, sorted keys, UTF-8)."""
    return json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
