"""Run the plugin natively on records (no WebAssembly): what `pytest` uses.

    from sluice_plugin.testing import run
    import plugin  # registers the @map / @filter / @flat_map function

    assert run(['{"num": 3}']) == [("emit", [Output.insert({"num": 3, "square": 9})])]
"""
import json

from ._columns import ABSENT, Record, read_result


def run(records, topic=None, partition=None, raw=False):
    """Records through the plugin as one batch; one outcome per record:
    ``("drop",)``, ``("emit", [Output])`` or ``("error", message, invalid_input)``.

    A record is a `Record`, or a value (JSON text as str or bytes; None for a tombstone)
    given offset = its index. A batch is one topic partition: `topic` and `partition`
    default to the first Record's (else "t", 0). With ``raw=True`` an output's document is
    the exact JSON text the plugin wrote (str), to compare bytes; otherwise a dict.
    """
    import sluice_plugin as sdk

    first = next((r for r in records if isinstance(r, Record)), None)
    topic = topic if topic is not None else first.topic if first else "t"
    partition = partition if partition is not None else first.partition if first else 0

    offsets, timestamps, spans, hspans, data = [], [], [], [], bytearray()
    for i, r in enumerate(records):
        if not isinstance(r, Record):
            r = Record(topic, partition, i, None, None, r.encode() if isinstance(r, str) else r)
        elif (r.topic, r.partition) != (topic, partition):
            raise ValueError(f"a batch is one topic partition: {r.topic}/{r.partition} is not {topic}/{partition}")
        first_header = len(hspans) // 4
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
        spans += span + [first_header, len(r.headers)]
        offsets.append(r.offset)
        timestamps.append(-1 if r.timestamp is None else r.timestamp)
    out = sdk._process(topic, partition, offsets, timestamps, spans, hspans, bytes(data))
    decoded = []
    outcomes, outputs, data, _options = out

    def parse(b):
        return None if b is None else (b.decode("utf-8") if raw else json.loads(b))

    for o in read_result(outcomes, outputs, data):
        if o[0] == "emit":
            o = ("emit", [sdk.Output(op, parse(doc), coll, parse(flt), up) for op, flt, doc, up, coll in o[1]])
        decoded.append(o)
    return decoded
