"""Adds computed fields: `square` (= num²) and the record's source coordinates under `source`
(`topic`, `partition`, `offset`). Parameter `square_field` renames the `square` field.
The Python twin of plugins/enrich (Rust)."""
from sluice_plugin import Error, Params, Record, map

I64_MAX = 2**63 - 1
_field = "square"


def setup(params: Params) -> None:
    global _field
    field = params.get("square_field", "square")
    if not field or field.startswith("$") or "." in field:
        raise Error(f"parameter `square_field` = {_json(field)} is not a usable MongoDB field name")
    _field = field


@map(init=setup)
def enrich(doc, record: Record):
    n = doc.get("num") if isinstance(doc, dict) else None
    if type(n) is not int or not -I64_MAX - 1 <= n <= I64_MAX:
        raise Error(f"no integer field `num` in {_json(doc)}")
    square = n * n
    if square > I64_MAX:
        raise Error(f"num {n} squared overflows 64 bits")
    # Fields in the order the Rust plugin stores them (serde_json sorts an object's keys).
    doc["source"] = {"offset": record.offset, "partition": record.partition, "topic": record.topic}
    doc[_field] = square
    return dict(sorted(doc.items()))


def _json(v):
    import json
    return json.dumps(v, separators=(",", ":"))
