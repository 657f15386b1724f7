"""Produce JSON lines to Kafka in Confluent's wire format, with confluent-kafka's
own serializers against a schema registry. Run through scripts/sr-produce (it
uses the pinned venv of scripts/pytools); docs/registry.md has the interface.

Each input line is one record:
    {"key": <JSON or absent/null>, "value": <JSON, or null for a tombstone>,
     "headers"?: {"name": "string"}}
Prints one JSON line when done:
    {"produced": N, "value_schema_id": ID-or-null, "key_schema_id": ID-or-null}
"""

import argparse
import base64
import datetime
import decimal
import importlib
import json
import os
import re
import sys
import tempfile
import uuid

FORMATS = ("avro", "protobuf", "json-schema", "json", "string")


class Fail(Exception):
    pass


# ------------------------------------------------------------------ Avro


class AvroConverter:
    """JSON values -> what fastavro writes, by walking the schema: logical types
    from their JSON forms, bytes/fixed from latin-1 strings, unions by trying
    branches (null first)."""

    PRIMS = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

    def __init__(self, schema_text):
        from fastavro.schema import parse_schema

        self.named = {}
        try:
            self.schema = parse_schema(json.loads(schema_text), named_schemas=self.named)
        except Exception as e:  # noqa: BLE001
            raise Fail(f"not a valid Avro schema: {e}")

    def __call__(self, value):
        return self.conv(self.schema, value, "$")

    def resolve(self, s):
        if isinstance(s, str) and s not in self.PRIMS:
            if s not in self.named:
                raise Fail(f"unknown Avro type {s!r}")
            return self.named[s]
        return s

    def conv(self, s, v, path):
        s = self.resolve(s)
        if isinstance(s, list):
            return self.union(s, v, path)
        t = s if isinstance(s, str) else s["type"]
        logical = s.get("logicalType") if isinstance(s, dict) else None
        if logical:
            r = self.logical(s, logical, v, path)
            if r is not NotImplemented:
                return r
        if isinstance(t, (dict, list)) or (isinstance(t, str) and t in self.named):
            return self.conv(t, v, path)
        if t == "null":
            if v is not None:
                raise Fail(f"{path}: expected null")
            return None
        if t == "boolean":
            if not isinstance(v, bool):
                raise Fail(f"{path}: expected a boolean")
            return v
        if t in ("int", "long"):
            if isinstance(v, bool) or not isinstance(v, int):
                raise Fail(f"{path}: expected an integer")
            return v
        if t in ("float", "double"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise Fail(f"{path}: expected a number")
            return float(v)
        if t == "string":
            if not isinstance(v, str):
                raise Fail(f"{path}: expected a string")
            return v
        if t == "bytes":
            return latin1(v, path)
        if t == "fixed":
            b = latin1(v, path)
            if len(b) != s["size"]:
                raise Fail(f"{path}: fixed {s.get('name')} takes {s['size']} bytes, got {len(b)}")
            return b
        if t == "enum":
            if v not in s["symbols"]:
                raise Fail(f"{path}: {v!r} is not one of {s['symbols']}")
            return v
        if t == "array":
            if not isinstance(v, list):
                raise Fail(f"{path}: expected an array")
            return [self.conv(s["items"], x, f"{path}[{i}]") for i, x in enumerate(v)]
        if t == "map":
            if not isinstance(v, dict):
                raise Fail(f"{path}: expected an object (Avro map)")
            return {k: self.conv(s["values"], x, f"{path}.{k}") for k, x in v.items()}
        if t in ("record", "error"):
            if not isinstance(v, dict):
                raise Fail(f"{path}: expected an object (record {s.get('name')})")
            out = {}
            for f in s["fields"]:
                name = f["name"]
                if name in v:
                    out[name] = self.conv(f["type"], v[name], f"{path}.{name}")
                elif "default" in f:
                    continue  # fastavro writes the default
                elif self.nullable(f["type"]):
                    out[name] = None
                else:
                    raise Fail(f"{path}: missing field {name!r}")
            return out
        raise Fail(f"{path}: unsupported Avro type {t!r}")

    def nullable(self, s):
        s = self.resolve(s)
        return s == "null" or (isinstance(s, list) and any(self.resolve(b) == "null" for b in s))

    def union(self, branches, v, path):
        order = sorted(branches, key=lambda b: 0 if self.resolve(b) == "null" else 1)
        named = [b for b in branches if self.resolve(b) != "null"]
        errors = []
        for b in order:
            try:
                r = self.conv(b, v, path)
            except Fail as e:
                errors.append(str(e))
                continue
            rb = self.resolve(b)
            # several non-null branches: name the branch (fastavro's tuple notation)
            if len(named) > 1 and isinstance(rb, dict) and "name" in rb and rb.get("type") in ("record", "enum", "fixed"):
                return (rb["name"], r)
            return r
        raise Fail(f"{path}: matches no branch of the union ({'; '.join(errors)})")

    def logical(self, s, logical, v, path):
        base = s["type"]
        if logical == "decimal" and base in ("bytes", "fixed"):
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise Fail(f"{path}: expected a decimal as a string")
            try:
                d = decimal.Decimal(str(v))
            except decimal.InvalidOperation:
                raise Fail(f"{path}: {v!r} is not a decimal")
            scale = s.get("scale", 0)
            q = d.quantize(decimal.Decimal(1).scaleb(-scale), context=decimal.Context(prec=100))
            if q != d:
                raise Fail(f"{path}: {v!r} has more than {scale} decimal places")
            return q
        if logical == "uuid" and base == "string":
            if not isinstance(v, str):
                raise Fail(f"{path}: expected a UUID string")
            try:
                return str(uuid.UUID(v))
            except ValueError:
                raise Fail(f"{path}: {v!r} is not a UUID")
        if logical in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis",
                       "local-timestamp-micros") and base == "long":
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if not isinstance(v, str):
                raise Fail(f"{path}: expected an integer or an ISO-8601 string")
            try:
                dt = datetime.datetime.fromisoformat(v)
            except ValueError:
                raise Fail(f"{path}: {v!r} is not an ISO-8601 date-time")
            if logical.startswith("local-"):
                return dt.replace(tzinfo=None) if dt.tzinfo is None else dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            return dt.replace(tzinfo=datetime.timezone.utc) if dt.tzinfo is None else dt.astimezone(datetime.timezone.utc)
        if logical == "date" and base == "int":
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if not isinstance(v, str):
                raise Fail(f"{path}: expected a day count or YYYY-MM-DD")
            try:
                return datetime.date.fromisoformat(v)
            except ValueError:
                raise Fail(f"{path}: {v!r} is not a date (YYYY-MM-DD)")
        if logical in ("time-millis", "time-micros") and base in ("int", "long"):
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if not isinstance(v, str):
                raise Fail(f"{path}: expected an integer or HH:MM:SS[.ffffff]")
            try:
                return datetime.time.fromisoformat(v)
            except ValueError:
                raise Fail(f"{path}: {v!r} is not a time (HH:MM:SS[.ffffff])")
        return NotImplemented


def latin1(v, path):
    if not isinstance(v, str):
        raise Fail(f"{path}: expected a string (bytes are given as latin-1 text)")
    try:
        return v.encode("latin-1")
    except UnicodeEncodeError:
        raise Fail(f"{path}: bytes are given as latin-1 text; {v!r} has a character above U+00FF")


# -------------------------------------------------------------- Protobuf


def compile_proto(path, workdir):
    """Compile `path` and the .proto files it imports from its directory; return its module."""
    from grpc_tools import protoc
    import grpc_tools

    src_dir = os.path.dirname(os.path.abspath(path))
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    todo, seen = [os.path.basename(path)], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        with open(os.path.join(src_dir, name), encoding="utf-8") as f:
            text = f.read()
        for imp in re.findall(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', text, re.M):
            if os.path.exists(os.path.join(src_dir, imp)):
                todo.append(imp)
    os.makedirs(workdir, exist_ok=True)
    args = ["protoc", f"-I{src_dir}", f"-I{include}", f"--python_out={workdir}", *seen]
    if protoc.main(args) != 0:
        raise Fail(f"protoc could not compile {path} (see its messages above)")
    if workdir not in sys.path:
        sys.path.insert(0, workdir)
    module = os.path.splitext(os.path.basename(path))[0].replace("-", "_") + "_pb2"
    importlib.invalidate_caches()
    return importlib.import_module(module)


def proto_class(module, name, what):
    from google.protobuf import message_factory

    fd = module.DESCRIPTOR
    if name:
        try:
            desc = fd.pool.FindMessageTypeByName(name)
        except KeyError:
            names = ", ".join(f"{fd.package}.{m}" if fd.package else m for m in fd.message_types_by_name)
            raise Fail(f"{what}: no message {name!r} (the file has: {names})")
    else:
        if not fd.message_types_by_name:
            raise Fail(f"{what}: the .proto file defines no message")
        desc = next(iter(fd.message_types_by_name.values()))
    return message_factory.GetMessageClass(desc)


# ------------------------------------------------------------ serializers


def make_serializer(kind, fmt, schema_file, message, registry, workdir):
    """A function (json value, SerializationContext) -> bytes."""
    if fmt == "json":
        return lambda v, ctx: json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if fmt == "string":
        return lambda v, ctx: (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")
    if not schema_file:
        raise Fail(f"--{kind}-format {fmt} needs --{kind}-schema FILE")
    try:
        with open(schema_file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Fail(f"--{kind}-schema: {e}")
    if fmt == "avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer

        conv = AvroConverter(text)
        ser = AvroSerializer(registry, text)
        return lambda v, ctx: ser(conv(v), ctx)
    if fmt == "json-schema":
        from confluent_kafka.schema_registry.json_schema import JSONSerializer

        try:
            json.loads(text)
        except ValueError as e:
            raise Fail(f"--{kind}-schema {schema_file}: not JSON: {e}")
        ser = JSONSerializer(text, registry)
        return lambda v, ctx: ser(v, ctx)
    if fmt == "protobuf":
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
        from google.protobuf import json_format

        module = compile_proto(schema_file, workdir)
        cls = proto_class(module, message, f"--{kind}-schema {schema_file}")
        ser = ProtobufSerializer(cls, registry, {"use.deprecated.format": False})

        def proto(v, ctx):
            try:
                msg = json_format.ParseDict(v, cls())
            except json_format.ParseError as e:
                raise Fail(f"not a {cls.DESCRIPTOR.full_name} in proto3 JSON: {e}")
            return ser(msg, ctx)

        return proto
    raise Fail(f"unknown format {fmt!r}")


def schema_id(data):
    if data and len(data) >= 5 and data[0] == 0:
        return int.from_bytes(data[1:5], "big")
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sr-produce", description="Produce JSON lines from stdin to Kafka in Confluent's "
                                 "wire format, with confluent-kafka's serializers.")
    ap.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    ap.add_argument("--registry", metavar="URL", help="schema registry URL (needed by avro, protobuf, json-schema)")
    ap.add_argument("--registry-user", metavar="USER:PASS", help="HTTP basic auth for the registry")
    ap.add_argument("--registry-ca", metavar="FILE", help="CA certificate (PEM) for an https registry")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--value-format", required=True, choices=FORMATS)
    ap.add_argument("--value-schema", metavar="FILE")
    ap.add_argument("--value-message", metavar="NAME", help="Protobuf message (fully qualified); default: the file's first")
    ap.add_argument("--key-format", choices=FORMATS,
                    help="default: a string key as its text, any other JSON key as compact JSON")
    ap.add_argument("--key-schema", metavar="FILE")
    ap.add_argument("--key-message", metavar="NAME")
    ap.add_argument("--partition", type=int)
    a = ap.parse_args(argv)

    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    needs_registry = a.value_format in ("avro", "protobuf", "json-schema") or a.key_format in ("avro", "protobuf", "json-schema")
    registry = None
    if needs_registry:
        if not a.registry:
            raise Fail("--registry URL is needed for avro, protobuf and json-schema")
        conf = {"url": a.registry}
        if a.registry_user:
            conf["basic.auth.user.info"] = a.registry_user
        if a.registry_ca:
            conf["ssl.ca.location"] = a.registry_ca
        registry = SchemaRegistryClient(conf)

    with tempfile.TemporaryDirectory(prefix="sr-produce-") as workdir:
        value_ser = make_serializer("value", a.value_format, a.value_schema, a.value_message, registry,
                                    os.path.join(workdir, "value"))
        if a.key_format:
            key_ser = make_serializer("key", a.key_format, a.key_schema, a.key_message, registry,
                                      os.path.join(workdir, "key"))
        else:
            key_ser = make_serializer("key", "string", None, None, None, workdir)

        producer = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5, "message.timeout.ms": 30000})
        failures, delivered = [], [0]

        def on_delivery(err, msg):
            if err is not None:
                failures.append(str(err))
            else:
                delivered[0] += 1

        ids = {"value": None, "key": None}
        count = 0
        for lineno, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise Fail(f"input line {lineno}: not JSON: {e}")
            if not isinstance(rec, dict) or "value" not in rec:
                raise Fail(f"input line {lineno}: expected an object with \"value\" (and \"key\", \"headers\")")
            headers = rec.get("headers") or {}
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise Fail(f"input line {lineno}: \"headers\" must map names to strings")
            hdrs = [(k, v.encode("utf-8")) for k, v in headers.items()]
            try:
                key = rec.get("key")
                kb = None if key is None else key_ser(key, SerializationContext(a.topic, MessageField.KEY, hdrs))
                value = rec["value"]
                vb = None if value is None else value_ser(value, SerializationContext(a.topic, MessageField.VALUE, hdrs))
            except Fail as e:
                raise Fail(f"input line {lineno}: {e}")
            except Exception as e:  # noqa: BLE001  (SerializationError, SchemaRegistryError, ...)
                where = ""
                if type(e).__module__.split(".")[0].startswith("httpx") or type(e).__name__ == "SchemaRegistryError":
                    where = f"schema registry {a.registry}: "
                raise Fail(f"input line {lineno}: {where}{type(e).__name__}: {e}")
            if vb is not None and ids["value"] is None and a.value_format in ("avro", "protobuf", "json-schema"):
                ids["value"] = schema_id(vb)
            if kb is not None and ids["key"] is None and a.key_format in ("avro", "protobuf", "json-schema"):
                ids["key"] = schema_id(kb)
            kw = {"key": kb, "value": vb, "headers": hdrs or None, "on_delivery": on_delivery}
            if a.partition is not None:
                kw["partition"] = a.partition
            while True:
                try:
                    producer.produce(a.topic, **kw)
                    break
                except BufferError:
                    producer.poll(0.1)
                except KafkaException as e:
                    raise Fail(f"input line {lineno}: {e}")
            producer.poll(0)
            count += 1
        left = producer.flush(60)
        if left:
            raise Fail(f"{left} of {count} records not delivered within 60 s")
        if failures:
            raise Fail(f"{len(failures)} of {count} records failed: {failures[0]}")
    print(json.dumps({"produced": delivered[0], "value_schema_id": ids["value"], "key_schema_id": ids["key"]}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        print(f"sr-produce: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
