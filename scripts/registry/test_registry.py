#!/usr/bin/env python3
"""Tests of scripts/registry/registry.py: `python3 scripts/registry/test_registry.py`.

Plain asserts, Python's standard library only. Starts the registry on a free
port with its data in a temporary directory; covers ids shared across
subjects, persistence across a restart, Confluent's error codes, references,
deletes, Protobuf descriptors (base64) turned into .proto text, basic and
bearer auth, and HTTPS when `openssl` is on PATH.
"""

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REGISTRY = os.path.join(HERE, "registry.py")
CT = "application/vnd.schemaregistry.v1+json"


class Registry:
    def __init__(self, data, *args):
        self.proc = subprocess.Popen([sys.executable, REGISTRY, "--port", "0", "--data", data, "--quiet", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, f"registry did not start: {self.proc.stderr.read()}"
        ready = json.loads(line)
        assert ready["ready"] is True, ready
        self.port = ready["port"]
        scheme = "https" if "--tls-cert" in args else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.ctx = None

    def call(self, method, path, body=None, headers=None, raw=False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", CT)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ctx) as r:
                text = r.read().decode()
                assert r.headers["Content-Type"] == CT, r.headers["Content-Type"]
                return r.status, (text if raw else json.loads(text))
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def expect_error(res, status, code):
    assert res[0] == status and res[1]["error_code"] == code, (res, status, code)
    assert isinstance(res[1]["message"], str)


AVRO_A = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]})
AVRO_B = json.dumps({"type": "record", "name": "B", "fields": [{"name": "y", "type": "string"}]})
JSON_S = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}})
PROTO_T = 'syntax = "proto3";\npackage t;\nmessage P { string s = 1; }\n'


# A FileDescriptorProto, encoded by hand (what confluent-kafka's ProtobufSerializer registers, in base64).
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _f(num, val):
    if isinstance(val, int):
        return _varint(num << 3) + _varint(val)
    if isinstance(val, str):
        val = val.encode()
    return _varint(num << 3 | 2) + _varint(len(val)) + val


def _field(name, number, ftype, label=1, type_name=None, oneof=None):
    b = _f(1, name) + _f(3, number) + _f(4, label) + _f(5, ftype)
    if type_name:
        b += _f(6, type_name)
    if oneof is not None:
        b += _f(9, oneof)
    return b


def descriptor():
    entry = _f(1, "CountsEntry") + _f(2, _field("key", 1, 9)) + _f(2, _field("value", 2, 5)) + _f(7, _f(7, 1))
    inner = _f(1, "Inner") + _f(2, _field("v", 1, 1))
    color = _f(1, "Color") + _f(2, _f(1, "RED") + _f(2, 0)) + _f(2, _f(1, "BLUE") + _f(2, 1))
    first = _f(1, "First") + _f(2, _field("id", 1, 9))
    second = (_f(1, "Second")
              + _f(2, _field("ids", 1, 3, label=3))
              + _f(2, _field("counts", 2, 11, label=3, type_name=".t.Second.CountsEntry"))
              + _f(2, _field("inner", 3, 11, type_name=".t.Second.Inner"))
              + _f(2, _field("color", 4, 14, type_name=".t.Second.Color"))
              + _f(2, _field("a", 5, 9, oneof=0)) + _f(2, _field("b", 6, 5, oneof=0))
              + _f(2, _field("at", 7, 11, type_name=".google.protobuf.Timestamp"))
              + _f(3, entry) + _f(3, inner) + _f(4, color) + _f(8, _f(1, "choice")))
    fd = (_f(1, "t.proto") + _f(2, "t") + _f(3, "google/protobuf/timestamp.proto")
          + _f(4, first) + _f(4, second) + _f(12, "proto3"))
    return base64.b64encode(fd).decode()


def main():
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="registry-test-")
    data = os.path.join(tmp, "registry.json")
    r = Registry(data)
    try:
        assert r.call("GET", "/") == (200, {})
        assert r.call("GET", "/subjects") == (200, [])
        assert r.call("GET", "/schemas/types") == (200, ["JSON", "PROTOBUF", "AVRO"])
        assert r.call("GET", "/config") == (200, {"compatibilityLevel": "NONE"})
        assert r.call("GET", "/config/s1") == (200, {"compatibilityLevel": "NONE"})
        assert r.call("PUT", "/config", {"compatibility": "NONE"}) == (200, {"compatibility": "NONE"})
        assert r.call("PUT", "/config/s1", {"compatibility": "none"}) == (200, {"compatibility": "NONE"})
        expect_error(r.call("PUT", "/config", {"compatibility": "BACKWARD"}), 422, 42203)
        assert r.call("GET", "/mode") == (200, {"mode": "READWRITE"})

        # ids are global; the same schema under another subject keeps its id
        assert r.call("POST", "/subjects/s1/versions?normalize=false", {"schema": AVRO_A}) == (200, {"id": 1})
        assert r.call("POST", "/subjects/s1/versions", {"schema": AVRO_A, "schemaType": "AVRO"}) == (200, {"id": 1})
        assert r.call("GET", "/subjects/s1/versions") == (200, [1])
        assert r.call("POST", "/subjects/s2/versions", {"schema": AVRO_A}) == (200, {"id": 1})
        assert r.call("POST", "/subjects/s1/versions", {"schema": AVRO_B}) == (200, {"id": 2})
        assert r.call("GET", "/subjects/s1/versions") == (200, [1, 2])
        assert r.call("GET", "/subjects") == (200, ["s1", "s2"])
        assert r.call("GET", "/schemas/ids/1?subject=s1&format=") == (200, {"schema": AVRO_A})  # AVRO: no schemaType
        assert r.call("GET", "/schemas/ids/1/subjects") == (200, ["s1", "s2"])
        assert r.call("GET", "/schemas/ids/1/versions") == (200, [{"subject": "s1", "version": 1},
                                                                  {"subject": "s2", "version": 1}])
        assert r.call("GET", "/subjects/s1/versions/latest") == (200, {"subject": "s1", "version": 2, "id": 2,
                                                                       "schema": AVRO_B})
        assert r.call("GET", "/subjects/s1/versions/-1")[1]["version"] == 2
        assert r.call("GET", "/subjects/s1/versions/1")[1]["id"] == 1
        assert r.call("GET", "/subjects/s1/versions/1/schema", raw=True) == (200, AVRO_A)
        # a subject name with a slash (percent-encoded)
        assert r.call("POST", "/subjects/a%2Fb/versions", {"schema": AVRO_B}) == (200, {"id": 2})
        assert r.call("GET", "/subjects/a%2Fb/versions/1")[1]["subject"] == "a/b"

        # lookup
        st, body = r.call("POST", "/subjects/s1?normalize=false&deleted=false", {"schema": AVRO_B})
        assert st == 200 and body["id"] == 2 and body["version"] == 2 and body["subject"] == "s1", body
        expect_error(r.call("POST", "/subjects/s1", {"schema": json.dumps({"type": "string"})}), 404, 40403)
        expect_error(r.call("POST", "/subjects/nope", {"schema": AVRO_A}), 404, 40401)

        # other types: schemaType is returned; references are kept and must exist
        assert r.call("POST", "/subjects/j/versions", {"schema": JSON_S, "schemaType": "JSON"}) == (200, {"id": 3})
        assert r.call("GET", "/schemas/ids/3") == (200, {"schema": JSON_S, "schemaType": "JSON"})
        assert r.call("POST", "/subjects/p/versions", {"schema": PROTO_T, "schemaType": "PROTOBUF"}) == (200, {"id": 4})
        assert r.call("GET", "/schemas/ids/4") == (200, {"schema": PROTO_T, "schemaType": "PROTOBUF"})
        ref = [{"name": "A", "subject": "s1", "version": 1}]
        with_ref = json.dumps({"type": "record", "name": "C", "fields": [{"name": "a", "type": "A"}]})
        assert r.call("POST", "/subjects/c/versions", {"schema": with_ref, "references": ref}) == (200, {"id": 5})
        assert r.call("GET", "/schemas/ids/5") == (200, {"schema": with_ref, "references": ref})
        assert r.call("GET", "/subjects/s1/versions/1/referencedby") == (200, [5])
        # the same text with other references is another schema
        assert r.call("POST", "/subjects/c/versions", {"schema": with_ref, "references":
                                                       [{"name": "A", "subject": "s2", "version": 1}]}) == (200, {"id": 6})

        # a Protobuf FileDescriptorProto in base64 is stored as .proto text
        b64 = descriptor()
        assert r.call("POST", "/subjects/pb/versions", {"schema": b64, "schemaType": "PROTOBUF"}) == (200, {"id": 7})
        st, body = r.call("GET", "/schemas/ids/7")
        text = body["schema"]
        for line in ['syntax = "proto3";', "package t;", 'import "google/protobuf/timestamp.proto";',
                     "message First {", "  string id = 1;", "message Second {", "  repeated int64 ids = 1;",
                     "  map<string, int32> counts = 2;", "  .t.Second.Inner inner = 3;", "  .t.Second.Color color = 4;",
                     "  oneof choice {", "    string a = 5;", "    int32 b = 6;",
                     "  .google.protobuf.Timestamp at = 7;", "  message Inner {", "    double v = 1;",
                     "  enum Color {", "    RED = 0;", "    BLUE = 1;"]:
            assert line in text.split("\n"), (line, text)
        assert "CountsEntry" not in text, text
        assert r.call("GET", "/schemas/ids/7?format=serialized")[1]["schema"] == b64
        assert r.call("GET", "/subjects/pb/versions/1?format=serialized")[1]["schema"] == b64
        assert r.call("POST", "/subjects/pb?format=serialized", {"schema": b64, "schemaType": "PROTOBUF"})[1]["id"] == 7
        assert r.call("POST", "/subjects/pb2/versions", {"schema": text, "schemaType": "PROTOBUF"}) == (200, {"id": 7})

        # errors, with Confluent's codes
        expect_error(r.call("POST", "/subjects/x/versions", {"schema": "{not json"}), 422, 42201)
        expect_error(r.call("POST", "/subjects/x/versions", {"schema": "{}", "schemaType": "JSON", "references":
                                                             [{"name": "n", "subject": "nope", "version": 1}]}), 422, 42201)
        expect_error(r.call("POST", "/subjects/x/versions", {"schema": "{[", "schemaType": "JSON"}), 422, 42201)
        expect_error(r.call("POST", "/subjects/x/versions", {"schema": "message {", "schemaType": "PROTOBUF"}), 422, 42201)
        expect_error(r.call("POST", "/subjects/x/versions", {"schema": AVRO_A, "schemaType": "XML"}), 422, 42201)
        expect_error(r.call("POST", "/subjects/x/versions", {"schemaType": "AVRO"}), 422, 42201)
        expect_error(r.call("GET", "/subjects/nope/versions"), 404, 40401)
        expect_error(r.call("GET", "/subjects/nope/versions/1"), 404, 40401)
        expect_error(r.call("GET", "/subjects/s1/versions/9"), 404, 40402)
        expect_error(r.call("GET", "/subjects/s1/versions/zero"), 422, 42202)
        expect_error(r.call("GET", "/subjects/s1/versions/0"), 422, 42202)
        expect_error(r.call("GET", "/schemas/ids/99"), 404, 40403)
        expect_error(r.call("GET", "/schemas/ids/abc"), 404, 40403)
        expect_error(r.call("GET", "/no/such/route"), 404, 404)
        expect_error(r.call("DELETE", "/subjects/s1/versions/1"), 422, 42206)  # referenced by id 5

        # deletes: soft (ids stay resolvable), then permanent
        expect_error(r.call("DELETE", "/subjects/s2"), 422, 42206)  # id 6 (subject c version 2) references it
        assert r.call("DELETE", "/subjects/c/versions/2") == (200, 2)
        assert r.call("DELETE", "/subjects/s2") == (200, [1])
        assert r.call("GET", "/subjects") == (200, ["a/b", "c", "j", "p", "pb", "pb2", "s1"])
        assert "s2" in r.call("GET", "/subjects?deleted=true")[1]
        expect_error(r.call("GET", "/subjects/s2/versions"), 404, 40401)
        assert r.call("GET", "/subjects/s2/versions?deleted=true") == (200, [1])
        assert r.call("GET", "/subjects/s2/versions/1?deleted=true")[1]["id"] == 1
        assert r.call("GET", "/schemas/ids/1/subjects") == (200, ["s1"])
        assert r.call("GET", "/schemas/ids/6")[0] == 200  # soft-deleted, still resolvable
        assert r.call("DELETE", "/subjects/s2?permanent=true") == (200, [1])
        expect_error(r.call("DELETE", "/subjects/s2"), 404, 40401)
        expect_error(r.call("DELETE", "/subjects/j?permanent=true"), 404, 40405)
        assert r.call("DELETE", "/subjects/s1/versions/2") == (200, 2)
        assert r.call("GET", "/subjects/s1/versions") == (200, [1])
        assert r.call("GET", "/schemas/ids/2")[0] == 200
        # registering again after a delete: a new version, the old id
        assert r.call("POST", "/subjects/s1/versions", {"schema": AVRO_B}) == (200, {"id": 2})
        assert r.call("GET", "/subjects/s1/versions") == (200, [1, 3])
    finally:
        r.stop()

    # a restart keeps every id and version
    r = Registry(data)
    try:
        assert r.call("GET", "/schemas/ids/1") == (200, {"schema": AVRO_A})
        assert r.call("GET", "/subjects/s1/versions") == (200, [1, 3])
        assert r.call("GET", "/schemas/ids/7?format=serialized")[1]["schema"] == b64
        assert r.call("POST", "/subjects/s1/versions", {"schema": AVRO_A}) == (200, {"id": 1})
        new = json.dumps({"type": "enum", "name": "E", "symbols": ["X"]})
        assert r.call("POST", "/subjects/e/versions", {"schema": new}) == (200, {"id": 8})
    finally:
        r.stop()
    assert json.load(open(data))["next_id"] == 9
    assert not [f for f in os.listdir(tmp) if f.endswith(".tmp")]

    # auth: basic, bearer, either when both are set
    r = Registry(data, "--user", "alice:s3cret", "--token", "tok-1")
    try:
        expect_error(r.call("GET", "/subjects"), 401, 40101)
        basic = lambda u, p: {"Authorization": "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()}  # noqa: E731
        assert r.call("GET", "/subjects", headers=basic("alice", "s3cret"))[0] == 200
        expect_error(r.call("GET", "/subjects", headers=basic("alice", "wrong")), 401, 40101)
        assert r.call("GET", "/schemas/ids/1", headers={"Authorization": "Bearer tok-1"})[0] == 200
        expect_error(r.call("GET", "/schemas/ids/1", headers={"Authorization": "Bearer tok-2"}), 401, 40101)
        expect_error(r.call("POST", "/subjects/z/versions", {"schema": AVRO_A}), 401, 40101)
    finally:
        r.stop()
    r = Registry(data, "--token", "tok-1")
    try:
        expect_error(r.call("GET", "/subjects", headers=basic("alice", "s3cret")), 401, 40101)
        assert r.call("GET", "/subjects", headers={"Authorization": "Bearer tok-1"})[0] == 200
    finally:
        r.stop()

    # HTTPS
    if shutil.which("openssl"):
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        r = Registry(data, "--tls-cert", cert, "--tls-key", key)
        try:
            r.ctx = ssl.create_default_context(cafile=cert)
            assert r.call("GET", "/schemas/ids/1") == (200, {"schema": AVRO_A})
        finally:
            r.stop()
    else:
        print("openssl not found: HTTPS not tested")

    shutil.rmtree(tmp)
    print(f"registry tests passed in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
