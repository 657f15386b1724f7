"""Run the plugin natively on records (no WebAssembly): what `pytest` uses."""
from ._columns import ABSENT, Record, read_result


def run(records, topic="t", partition=0):
    """Records (Record objects, or JSON strings/bytes for values) through the plugin: one outcome each,
    ("drop",) | ("emit", [Output-like (op, doc_dict, collection)]) | ("error", message, invalid_input)."""
    import json
    import sluice_plugin as sdk

    offsets, timestamps, spans, hspans, data = [], [], [], [], bytearray()
    for i, r in enumerate(records):
        if not isinstance(r, Record):
            r = Record(topic, partition, i, None, None, r.encode() if isinstance(r, str) else r)
        first = len(hspans) // 4
        for k, v in r.headers:
            kb = k.encode()
            hspans += [len(data), len(kb)]
            data += kb
            if v is None:
                hspans += [0, ABSENT]
            else:
                hspans += [len(data), len(v)]
                data += v
        span = []
        for part in (r.key, r.value):
            if part is None:
                span += [0, ABSENT]
            else:
                span += [len(data), len(part)]
                data += part
        spans += span + [first, len(r.headers)]
        offsets.append(r.offset)
        timestamps.append(-1 if r.timestamp is None else r.timestamp)
    out = sdk._process(topic, partition, offsets, timestamps, spans, hspans, bytes(data))
    decoded = []
    for o in read_result(*out):
        if o[0] == "emit":
            o = ("emit", [sdk.Output(op, json.loads(doc), coll) for op, doc, coll in o[1]])
        decoded.append(o)
    return decoded
