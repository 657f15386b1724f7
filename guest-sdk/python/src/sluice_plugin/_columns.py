"""The contract's columns (guest-sdk/wit/columns.md), in pure Python.

Reads a `batch` into Records and writes a `batch-result` one record at a time.
No WebAssembly here: the SDK's tests run it natively against vectors.json.
"""
from __future__ import annotations

ABSENT = 0xFFFFFFFF
NO_TIMESTAMP = -1
INVALID_INPUT_TAG = b"\x00sluice:invalid-input\x00"

DROP, EMIT, ERROR = 0, 1, 2
INSERT, UPSERT, DELETE, UPDATE, REPLACE, DELETE_WHERE = 0, 1, 2, 3, 4, 5
OPERATIONS = ("insert", "upsert", "delete", "update", "replace", "delete-where")
FLAG_UPSERT = 1
OPTION_ORDERED = 1
WIDTH = 8  # numbers per output: operation, flags, filter span, document span, collection span


class Record:
    """One input record. `value` is None for a tombstone; `headers` is a list of
    (str key, bytes-or-None value) in the record's order."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")

    def __init__(self, topic, partition, offset, timestamp=None, key=None, value=None, headers=()):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = list(headers)

    def header(self, name):
        """The first header called `name`: its value (None when it has none); KeyError if absent."""
        for k, v in self.headers:
            if k == name:
                return v
        raise KeyError(name)

    def key_str(self):
        if self.key is None:
            return None
        try:
            return self.key.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def __eq__(self, other):
        return isinstance(other, Record) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self):
        return "Record(" + ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__) + ")"


def read_batch(topic, partition, offsets, timestamps, spans, header_spans, data):
    """Yield the batch's records. `data` is bytes. A span outside `data` is a host bug (IndexError)."""
    n = len(offsets)
    if len(timestamps) != n or len(spans) != 6 * n:
        raise ValueError("batch columns of different lengths")
    data = bytes(data)
    for i in range(n):
        ks, kl, vs, vl, fh, hc = spans[6 * i: 6 * i + 6]
        headers = []
        for h in range(fh, fh + hc):
            hks, hkl, hvs, hvl = header_spans[4 * h: 4 * h + 4]
            key = data[hks: hks + hkl].decode("utf-8", "replace")
            headers.append((key, None if hvl == ABSENT else data[hvs: hvs + hvl]))
        ts = timestamps[i]
        yield Record(
            topic,
            partition,
            offsets[i],
            None if ts == NO_TIMESTAMP else ts,
            None if kl == ABSENT else data[ks: ks + kl],
            None if vl == ABSENT else data[vs: vs + vl],
            headers,
        )


class ResultWriter:
    """Writes a batch result's columns, one record's outcome at a time."""

    __slots__ = ("outcomes", "outputs", "data", "options", "_mark_out", "_mark_data")

    def __init__(self, ordered=False):
        self.outcomes = []
        self.outputs = []
        self.data = bytearray()
        self.options = OPTION_ORDERED if ordered else 0
        self._mark_out = 0
        self._mark_data = 0

    def begin(self):
        self._mark_out = len(self.outputs)
        self._mark_data = len(self.data)

    def _append(self, b):
        if b is None:
            return 0, ABSENT
        start = len(self.data)
        self.data += b
        return start, len(b)

    def output(self, operation, document, collection=None, filter=None, upsert=False):
        """An output: its filter (update, replace, delete-where) then its document (None for
        delete-where), JSON bytes as they are, then its collection name."""
        fs, fl = self._append(filter)
        ds, dl = self._append(document)
        cs, cl = self._append(None if collection is None else collection.encode("utf-8"))
        flags = FLAG_UPSERT if upsert else 0
        self.outputs += (operation, flags, fs, fl, ds, dl, cs, cl)

    def emitted(self):
        first = self._mark_out // WIDTH
        count = len(self.outputs) // WIDTH - first
        self.outcomes += (EMIT, first, count) if count else (DROP, 0, 0)

    def failed(self, message: str, invalid_input=False):
        del self.outputs[self._mark_out:]
        del self.data[self._mark_data:]
        if invalid_input:
            self.data += INVALID_INPUT_TAG
        m = message.encode("utf-8", "replace")
        self.outcomes += (ERROR, len(self.data), len(m))
        self.data += m


def read_result(outcomes, outputs, data):
    """Decode a result's columns (for tests): a list of ("drop",),
    ("emit", [(op, filter_bytes_or_None, doc_bytes_or_None, upsert, collection)]),
    ("error", message, invalid_input). Not a validator (the host checks results)."""
    data = bytes(data)
    out = []
    legacy = ("value is not JSON", "value is not a JSON object", "record has no value")
    for i in range(len(outcomes) // 3):
        kind, first, count = outcomes[3 * i: 3 * i + 3]
        if kind == DROP or (kind == EMIT and count == 0):
            out.append(("drop",))
        elif kind == EMIT:
            items = []
            for j in range(first, first + count):
                op, flags, fs, fl, ds, dl, cs, cl = outputs[WIDTH * j: WIDTH * j + WIDTH]
                items.append((
                    op,
                    None if fl == ABSENT else data[fs: fs + fl],
                    None if dl == ABSENT else data[ds: ds + dl],
                    bool(flags & FLAG_UPSERT),
                    None if cl == ABSENT else data[cs: cs + cl].decode("utf-8"),
                ))
            out.append(("emit", items))
        elif kind == ERROR:
            msg = data[first: first + count].decode("utf-8", "replace")
            tagged = first >= len(INVALID_INPUT_TAG) and data[first - len(INVALID_INPUT_TAG): first] == INVALID_INPUT_TAG
            out.append(("error", msg, tagged or msg.startswith(legacy)))
        else:
            raise ValueError(f"unknown outcome kind {kind}")
    return out
