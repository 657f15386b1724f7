"""Write Sluice plugins in Python as plain functions.

    from sluice_plugin import map, Record

    @map
    def enrich(doc: dict, record: Record) -> dict:
        doc["square"] = doc["num"] ** 2
        return doc

Shapes (one per plugin module):
- ``@filter``:   fn(doc[, record]) -> bool          kept records are written unchanged
- ``@map``:      fn(doc[, record]) -> dict | Output | None   (None drops)
- ``@flat_map``: fn(doc[, record]) -> iterable of dict | Output
Each takes ``init=setup`` (``setup(params: Params) -> None``), called once per
instance; raising there stops the plugin from loading. An exception raised for a
record is that record's error (the host dead-letters, skips or stops by policy).
The batch columns of the contract (sluice:plugin@0.3.0) are never seen by authors.

Outputs: return a dict (inserted), or ``Output.upsert(doc)`` / ``Output.delete(id)`` (by
``_id``), or by filter: ``Output.update(filter, {"$inc": {"n": 1}})``,
``Output.replace_where(filter, doc)``, ``Output.delete_where(filter)``; ``.or_insert()`` makes an
update or replace an upsert; each ``.in_collection(name)`` to write elsewhere. Filter values are
matched literally. ``set_ordered(True)`` asks the host to write outputs strictly in order. ``Error("msg")`` fails the record with exactly
that message; any other exception with ``TypeName: msg``. ``log.info(...)`` logs through
the host. ``sluice_plugin.testing.run`` runs the plugin on records natively, for pytest.

JSON: parsed and written like the Rust SDK (compact, UTF-8, no NaN/Infinity), except
that an object keeps its keys in insertion order (Rust plugins store them sorted).

Status (issue #16): the SDK is tested natively against the contract's vectors. A
component built from it (componentize-py) imports WASI 0.2, which the host does not
link yet: running Python plugins in the host arrives with the host's WASI support,
the next step of #16. Until then the host refuses such a component at load.
"""
from __future__ import annotations

import inspect
import json

from . import log
from ._columns import DELETE, DELETE_WHERE, INSERT, OPERATIONS, REPLACE, UPDATE, UPSERT, Record, ResultWriter, read_batch

__all__ = ["map", "filter", "flat_map", "init", "Record", "Output", "Params", "Error", "log", "set_ordered", "CONTRACT_VERSION"]

CONTRACT_VERSION = "sluice:plugin@0.3.0"

_ordered = False


def set_ordered(ordered=True):
    """Ask the host to write this plugin's outputs strictly in order (e.g. in the init function).
    Off by default: consecutive inserts may then be written in any order (faster)."""
    global _ordered
    _ordered = bool(ordered)


class Error(Exception):
    """A record's error with exactly this message (other exceptions get their type name in front)."""


class _InvalidInput(Error):
    """The record's value is absent, not JSON, or not a JSON object (tagged for the host)."""


class Output:
    """One write: insert (default), upsert (must carry _id) or delete (by _id); or, by filter,
    update (operators), replace or delete-where; optionally into another collection."""

    # `upsert_flag`: `upsert` is the constructor `Output.upsert(doc)`.
    __slots__ = ("operation", "document", "collection", "filter", "upsert_flag")

    def __init__(self, operation, document, collection=None, filter=None, upsert=False):  # noqa: A002
        self.operation, self.document, self.collection = operation, document, collection
        self.filter, self.upsert_flag = filter, upsert

    @staticmethod
    def insert(document, collection=None):
        return Output(INSERT, document, collection)

    @staticmethod
    def upsert(document, collection=None):
        return Output(UPSERT, document, collection)

    @staticmethod
    def delete(id, collection=None):
        return Output(DELETE, {"_id": id}, collection)

    @staticmethod
    def update(filter, update, collection=None):  # noqa: A002
        """Update one document matching `filter` with operators ($set, $unset, $inc, $mul, $min, $max,
        $currentDate, $push, $addToSet, $pull, $rename, $setOnInsert)."""
        return Output(UPDATE, update, collection, filter)

    @staticmethod
    def replace_where(filter, document, collection=None):  # noqa: A002
        """Replace one document matching `filter` with `document` (no operators)."""
        return Output(REPLACE, document, collection, filter)

    @staticmethod
    def delete_where(filter, collection=None):  # noqa: A002
        """Delete one document matching `filter`."""
        return Output(DELETE_WHERE, None, collection, filter)

    def or_insert(self):
        """An update or replace that inserts when nothing matches (upsert); others unchanged."""
        return Output(self.operation, self.document, self.collection, self.filter, self.operation in (UPDATE, REPLACE))

    def in_collection(self, collection):
        return Output(self.operation, self.document, collection, self.filter, self.upsert_flag)

    def _key(self):
        return (self.operation, self.document, self.collection, self.filter, self.upsert_flag)

    def __eq__(self, o):
        return isinstance(o, Output) and self._key() == o._key()

    def __repr__(self):
        extra = "" if self.filter is None else f", filter={self.filter!r}, upsert={self.upsert_flag!r}"
        return f"Output({OPERATIONS[self.operation]}, {self.document!r}, {self.collection!r}{extra})"


class Params(dict):
    """The plugin's parameters from `[[plugins]] params = {...}` (all strings)."""

    def require(self, key):
        if key not in self:
            raise Error(f"missing parameter `{key}`")
        return self[key]

    def parse(self, key, type_, default):
        """The parameter converted with `type_` (e.g. int), `default` when absent; an error naming it otherwise."""
        if key not in self:
            return default
        try:
            return type_(self[key])
        except Exception as e:  # noqa: BLE001
            raise Error(f"parameter `{key}` = {json.dumps(self[key], ensure_ascii=False)}: {e}") from None


# -- JSON, as close to the Rust SDK (serde_json) as Python's json allows ----------------------------

def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite(text):
    f = float(text)
    if f in (float("inf"), float("-inf")):  # 1e400: out of range for serde_json too
        raise ValueError(f"number {text} out of range")
    return f


_decode = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite).decode
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _compact(v):
    try:
        return _encode(v)
    except Exception:  # noqa: BLE001
        return repr(v)


def _value(record):
    v = record.value
    if v is None:
        raise _InvalidInput("record has no value (tombstone)")
    try:
        return _decode(v.decode("utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _InvalidInput(f"value is not JSON: {e}") from None


def _emit(w, out):
    if isinstance(out, Output):
        op, doc, coll, flt, upsert = out.operation, out.document, out.collection, out.filter, out.upsert_flag
    else:
        op, doc, coll, flt, upsert = INSERT, out, None, None, False
    filtered = op in (UPDATE, REPLACE, DELETE_WHERE)
    fbody = None
    if filtered:
        if not isinstance(flt, dict):
            raise Error(f"the filter is not a JSON object: {_compact(flt)}")
        try:
            fbody = _encode(flt).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise Error(f"cannot serialise the filter: {e}") from None
    body = None
    if op != DELETE_WHERE:
        if not isinstance(doc, dict):
            raise Error(f"the output is not a JSON object: {_compact(doc)}")
        try:
            body = _encode(doc).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise Error(f"cannot serialise output: {e}") from None
    w.output(op, body, coll, fbody, upsert and op in (UPDATE, REPLACE))


def _message(e):
    if isinstance(e, Error):
        return str(e)
    return f"{type(e).__name__}: {e}"


# -- The plugin: one function and its shape ------------------------------------------------------

_plugin = None  # (shape, fn taking (doc, record), init or None)


def _register(shape, fn, init_fn):
    global _plugin
    if _plugin is not None:
        raise RuntimeError(f"a plugin has one function: `{_plugin[1].__name__}` is already registered")
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    call = fn if len(params) >= 2 else (lambda doc, record, _f=fn: _f(doc))
    _plugin = (shape, call, init_fn)
    return fn


def _decorator(shape):
    def deco(fn=None, *, init=None):
        if fn is None:
            return lambda f: _register(shape, f, init)
        return _register(shape, fn, init)

    deco.__name__ = shape
    return deco


map = _decorator("map")  # noqa: A001
filter = _decorator("filter")  # noqa: A001
flat_map = _decorator("flat_map")

_init_fn = None


def init(fn):
    """Mark `fn(params: Params)` as the init function (same as `init=` on the shape decorator)."""
    global _init_fn
    _init_fn = fn
    return fn


def _run_init(pairs):
    """Run the init function; returns None or an error message."""
    f = (_plugin and _plugin[2]) or _init_fn
    if f is None:
        return None
    try:
        f(Params(pairs))
    except Exception as e:  # noqa: BLE001
        return _message(e)
    return None


def _one_filter(fn, record, w):
    doc = _value(record)
    if not isinstance(doc, dict):
        raise _InvalidInput(f"value is not a JSON object: {_compact(doc)}")
    if fn(doc, record):
        w.output(INSERT, record.value, None)  # kept unchanged: the bytes as they came


def _one_map(fn, record, w):
    out = fn(_value(record), record)
    if out is not None:
        _emit(w, out)


def _one_flat_map(fn, record, w):
    for out in fn(_value(record), record):
        _emit(w, out)


_ONE = {"filter": _one_filter, "map": _one_map, "flat_map": _one_flat_map}


def _process(topic, partition, offsets, timestamps, spans, header_spans, data):
    """A batch's columns in, a result's columns out: (outcomes, outputs, data)."""
    if _plugin is None:
        raise RuntimeError("no plugin function: decorate one with @map, @filter or @flat_map")
    shape, fn, _ = _plugin
    one = _ONE[shape]
    w = ResultWriter(_ordered)
    for record in read_batch(topic, partition, offsets, timestamps, spans, header_spans, data):
        w.begin()
        try:
            one(fn, record, w)
        except _InvalidInput as e:
            w.failed(str(e), invalid_input=True)
            continue
        except Exception as e:  # noqa: BLE001
            w.failed(_message(e))
            continue
        w.emitted()
    return w.outcomes, w.outputs, bytes(w.data), w.options
