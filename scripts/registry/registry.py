#!/usr/bin/env python3
"""A small Confluent-Schema-Registry-compatible registry for local tests.

    python3 scripts/registry/registry.py --port P --data FILE [--host 127.0.0.1]
        [--user NAME:PASS] [--token TOKEN] [--tls-cert F --tls-key F]

Python's standard library only. Serves the part of Confluent's REST API that
serializers and deserializers use (see docs/registry.md): subjects and
versions, schemas by global id (the same schema under another subject gets the
same id), references, soft and permanent deletes, and a config that is always
compatibility NONE. State is one JSON file (--data), rewritten atomically on
every change, so a restart keeps every id and version. Prints
`{"ready": true, "port": P}` on stdout once it listens (--port 0: any free port).
"""

import argparse
import base64
import hmac
import json
import os
import signal
import ssl
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protodesc  # noqa: E402  (beside this file, stdlib only)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
TYPES = ("AVRO", "PROTOBUF", "JSON")


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found_subject(s):
    return ApiError(404, 40401, f"Subject '{s}' not found.")


def not_found_version(s, v):
    return ApiError(404, 40402, f"Version {v} not found.")


def not_found_schema(what="Schema not found"):
    return ApiError(404, 40403, what)


def invalid_schema(msg):
    return ApiError(422, 42201, f"Invalid schema: {msg}")


def truthy(q, name):
    return q.get(name, "false").lower() == "true"


# ------------------------------------------------------------------ store


class Store:
    """Every schema by id, every subject's versions; persisted as one JSON file.

    File layout: {"next_id": N,
                  "schemas": {"<id>": {"schemaType", "schema", "references", "serialized"?}},
                  "subjects": {"<subject>": [{"version", "id", "deleted"}]}}
    """

    def __init__(self, path):
        self.path = path
        self.lock = threading.RLock()
        self.next_id = 1
        self.schemas = {}  # int id -> dict
        self.subjects = {}  # name -> list of version dicts
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            self.next_id = int(data.get("next_id", 1))
            self.schemas = {int(k): v for k, v in data.get("schemas", {}).items()}
            self.subjects = data.get("subjects", {})
            if self.schemas:
                self.next_id = max(self.next_id, max(self.schemas) + 1)
        self.by_key = {self.key(s): i for i, s in self.schemas.items()}

    @staticmethod
    def key(s):
        refs = tuple((r["name"], r["subject"], int(r["version"])) for r in s.get("references", []))
        return (s["schemaType"], s["schema"], refs)

    def save(self):
        data = {"next_id": self.next_id,
                "schemas": {str(k): v for k, v in sorted(self.schemas.items())},
                "subjects": self.subjects}
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def saving(self):
        try:
            self.save()
        except OSError as e:
            raise ApiError(500, 50001, f"Error while storing the schema: {e}")

    # -- lookups

    def live_versions(self, subject, deleted=False):
        vs = self.subjects.get(subject)
        if vs is None:
            return None
        vs = [v for v in vs if deleted or not v["deleted"]]
        return vs if vs or deleted else None

    def version(self, subject, version, deleted=False):
        vs = self.live_versions(subject, deleted)
        if vs is None:
            # a subject whose versions are all (soft-)deleted is "not found"
            raise not_found_subject(subject)
        v = parse_version(version)
        if v == -1:
            live = [x for x in vs if not x["deleted"]] or (vs if deleted else [])
            if not live:
                raise not_found_version(subject, version)
            return live[-1]
        for x in vs:
            if x["version"] == v:
                return x
        raise not_found_version(subject, version)

    def schema_view(self, sid, fmt=None):
        s = self.schemas[sid]
        out = {"schema": s["schema"]}
        if fmt == "serialized" and s.get("serialized"):
            out["schema"] = s["serialized"]
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if s.get("references"):
            out["references"] = s["references"]
        return out

    def version_view(self, subject, v, fmt=None):
        out = {"subject": subject, "version": v["version"], "id": v["id"]}
        out.update(self.schema_view(v["id"], fmt))
        return out

    # -- normalising what a client sends

    def prepare(self, body):
        if not isinstance(body, dict):
            raise ApiError(422, 42201, "Invalid schema: the request body must be a JSON object")
        schema = body.get("schema")
        stype = (body.get("schemaType") or "AVRO").upper()
        if stype not in TYPES:
            raise invalid_schema(f"unknown schemaType {body.get('schemaType')!r}")
        if not isinstance(schema, str) or not schema.strip():
            raise ApiError(422, 42201, "Empty schema")
        refs = body.get("references") or []
        if not isinstance(refs, list):
            raise invalid_schema("references must be a list")
        clean = []
        for r in refs:
            if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not isinstance(r.get("subject"), str):
                raise invalid_schema(f"bad reference {r!r}")
            try:
                ver = int(r.get("version"))
            except (TypeError, ValueError):
                raise invalid_schema(f"bad reference version in {r!r}")
            try:
                v = self.version(r["subject"], ver)
            except ApiError:
                raise invalid_schema(f"reference {r['name']!r}: subject {r['subject']!r} version {ver} does not exist")
            clean.append({"name": r["name"], "subject": r["subject"], "version": v["version"]})
        rec = {"schemaType": stype, "schema": schema, "references": clean}
        if stype in ("AVRO", "JSON"):
            try:
                parsed = json.loads(schema)
            except ValueError as e:
                raise invalid_schema(f"not valid JSON: {e}")
            if stype == "AVRO":
                check_avro(parsed)
            elif not isinstance(parsed, (dict, bool)):
                raise invalid_schema("a JSON Schema must be an object or a boolean")
        else:
            try:
                converted = protodesc.base64_to_text(schema)
            except (ValueError, KeyError) as e:
                raise invalid_schema(f"cannot turn the Protobuf descriptor into .proto text: {e}")
            if converted is not None:
                rec["schema"], rec["serialized"] = converted[0], schema.strip()
            else:
                check_proto_text(schema)
        return rec

    def find(self, rec):
        return self.by_key.get(self.key(rec))


def parse_version(version):
    if version in ("latest", "-1", -1):
        return -1
    try:
        v = int(version)
    except (TypeError, ValueError):
        v = 0
    if v < 1:
        raise ApiError(422, 42202,
                       "The specified version '%s' is not a valid version id. Allowed values are between "
                       "[1, 2^31-1] and the string \"latest\"" % version)
    return v


def check_avro(s, depth=0):
    """Structural checks only: named types referenced by name are not resolved."""
    if depth > 100:
        raise invalid_schema("Avro schema nests too deep")
    if isinstance(s, str):
        return
    if isinstance(s, list):
        if not s:
            raise invalid_schema("an Avro union must not be empty")
        for b in s:
            check_avro(b, depth + 1)
        return
    if not isinstance(s, dict) or "type" not in s:
        raise invalid_schema("an Avro schema is a type name, a union (array) or an object with \"type\"")
    t = s["type"]
    if t == "record" or t == "error":
        if not isinstance(s.get("name"), str) or not isinstance(s.get("fields"), list):
            raise invalid_schema("an Avro record needs a \"name\" and a \"fields\" array")
        for f in s["fields"]:
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) or "type" not in f:
                raise invalid_schema(f"an Avro field needs \"name\" and \"type\": {f!r}")
            check_avro(f["type"], depth + 1)
    elif t == "enum":
        if not isinstance(s.get("name"), str) or not isinstance(s.get("symbols"), list):
            raise invalid_schema("an Avro enum needs a \"name\" and \"symbols\"")
    elif t == "fixed":
        if not isinstance(s.get("name"), str) or not isinstance(s.get("size"), int):
            raise invalid_schema("an Avro fixed needs a \"name\" and a \"size\"")
    elif t == "array":
        if "items" not in s:
            raise invalid_schema("an Avro array needs \"items\"")
        check_avro(s["items"], depth + 1)
    elif t == "map":
        if "values" not in s:
            raise invalid_schema("an Avro map needs \"values\"")
        check_avro(s["values"], depth + 1)
    else:
        check_avro(t, depth + 1)


def check_proto_text(text):
    """.proto text: braces balance, strings close, and something is defined."""
    depth, i, n, words = 0, 0, len(text), set()
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise invalid_schema("unterminated string in .proto text")
            i = j + 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise invalid_schema("unterminated comment in .proto text")
            i = j + 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                raise invalid_schema("unbalanced braces in .proto text")
        elif c.isalpha():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            words.add(text[i:j])
            i = j
            continue
        i += 1
    if depth != 0:
        raise invalid_schema("unbalanced braces in .proto text")
    if not words & {"message", "enum", "service", "syntax", "package", "edition"}:
        raise invalid_schema("not .proto text (no syntax, package, message, enum or service)")


# ------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-registry/1"
    store = None  # set by main
    users = ()  # (user, password) pairs
    token = None
    quiet = False

    # -- plumbing

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def send(self, status, body, raw=False):
        data = (body if raw else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="sluice-registry"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(chunks)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n > 0 else b""
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise ApiError(400, 400, "Unexpected character: the request body is not JSON")

    def authorized(self):
        if not self.users and not self.token:
            return True
        h = self.headers.get("Authorization", "")
        scheme, _, cred = h.partition(" ")
        cred = cred.strip()
        if scheme.lower() == "basic" and self.users:
            try:
                user, _, pw = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            ok = False
            for u, p in self.users:
                ok |= hmac.compare_digest(u.encode(), user.encode()) & hmac.compare_digest(p.encode(), pw.encode())
            return ok
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(cred.encode(), self.token.encode())
        return False

    def handle_any(self):
        try:
            url = urllib.parse.urlsplit(self.path)
            q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p != ""]
            if not self.authorized():
                # drain the body so the connection stays usable
                if self.command in ("POST", "PUT"):
                    n = int(self.headers.get("Content-Length") or 0)
                    if n:
                        self.rfile.read(n)
                raise ApiError(401, 40101, "Unauthorized")
            body = self.read_body() if self.command in ("POST", "PUT") else None
            status, out, raw = route(self.store, self.command, parts, q, body)
            self.send(status, out, raw)
        except ApiError as e:
            if e.status in (400, 401):
                self.close_connection = True  # a body may be left unread
            self.send(e.status, {"error_code": e.code, "message": e.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"internal error: {e!r}\n")
            self.send(500, {"error_code": 50001, "message": f"Internal error: {e}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def route(st, method, p, q, body):
    """(status, body, raw) for one request; p is the decoded path segments."""
    n = len(p)
    fmt = q.get("format") or None
    deleted = truthy(q, "deleted")
    with st.lock:
        if n == 0:
            return ok(method, "GET", {})
        head = p[0]
        if head == "schemas":
            if n == 2 and p[1] == "types":
                return ok(method, "GET", ["JSON", "PROTOBUF", "AVRO"])
            if n >= 3 and p[1] == "ids":
                sid = schema_id(st, p[2])
                if n == 3:
                    return ok(method, "GET", st.schema_view(sid, fmt))
                if n == 4 and p[3] == "schema":
                    return ok(method, "GET", st.schema_view(sid, fmt)["schema"], raw=True)
                if n == 4 and p[3] == "versions":
                    return ok(method, "GET", [{"subject": s, "version": v["version"]}
                                              for s, vs in sorted(st.subjects.items()) for v in vs
                                              if v["id"] == sid and (deleted or not v["deleted"])])
                if n == 4 and p[3] == "subjects":
                    return ok(method, "GET", sorted({s for s, vs in st.subjects.items() for v in vs
                                                     if v["id"] == sid and (deleted or not v["deleted"])}))
            raise no_route()
        if head == "subjects":
            if n == 1:
                return ok(method, "GET", sorted(s for s in st.subjects if st.live_versions(s, deleted)))
            subject = p[1]
            if n == 2:
                if method == "POST":
                    return lookup(st, subject, body, deleted, fmt)
                if method == "DELETE":
                    return delete_subject(st, subject, truthy(q, "permanent"))
                raise not_allowed()
            if p[2] != "versions":
                raise no_route()
            if n == 3:
                if method == "POST":
                    return register(st, subject, body)
                vs = st.live_versions(subject, deleted)
                if vs is None:
                    raise not_found_subject(subject)
                return ok(method, "GET", [v["version"] for v in vs])
            if n == 4:
                if method == "DELETE":
                    return delete_version(st, subject, p[3], truthy(q, "permanent"))
                v = st.version(subject, p[3], deleted)
                return ok(method, "GET", st.version_view(subject, v, fmt))
            if n == 5 and p[4] == "schema":
                v = st.version(subject, p[3], deleted)
                return ok(method, "GET", st.schema_view(v["id"], fmt)["schema"], raw=True)
            if n == 5 and p[4] == "referencedby":
                v = st.version(subject, p[3], deleted)
                return ok(method, "GET", referenced_by(st, subject, v["version"]))
            raise no_route()
        if head == "config" and n <= 2:
            if method in ("GET", "HEAD", "DELETE"):
                return 200, {"compatibilityLevel": "NONE"}, False
            if method == "PUT":
                level = (body or {}).get("compatibility") if isinstance(body, dict) else None
                if not isinstance(level, str) or level.upper() != "NONE":
                    raise ApiError(422, 42203, "Invalid compatibility level. This registry only supports NONE.")
                return 200, {"compatibility": "NONE"}, False
            raise not_allowed()
        if head == "mode" and n <= 2:
            if method in ("GET", "HEAD"):
                return 200, {"mode": "READWRITE"}, False
            if method == "PUT":
                mode = (body or {}).get("mode") if isinstance(body, dict) else None
                if mode != "READWRITE":
                    raise ApiError(422, 42204, "Invalid mode. This registry only supports READWRITE.")
                return 200, {"mode": "READWRITE"}, False
            raise not_allowed()
        if head == "compatibility" and n >= 4 and p[1] == "subjects":
            # compatibility NONE: everything is compatible
            if method != "POST":
                raise not_allowed()
            if n == 5 and p[3] == "versions":
                st.version(p[2], p[4])
            elif not st.live_versions(p[2]):
                raise not_found_subject(p[2])
            st.prepare(body)
            return 200, {"is_compatible": True}, False
        if head == "contexts" and n == 1:
            return ok(method, "GET", ["."])
        if head == "associations" and n == 4 and p[1] == "resources":
            # asked by confluent-kafka's serializers before they fall back to TopicNameStrategy
            return ok(method, "GET", [])
        raise no_route()


def ok(method, expected, body, raw=False):
    if method == "HEAD" and expected == "GET":
        return 200, body, raw
    if method != expected:
        raise not_allowed()
    return 200, body, raw


def no_route():
    return ApiError(404, 404, "HTTP 404 Not Found")


def not_allowed():
    return ApiError(405, 405, "HTTP 405 Method Not Allowed")


def schema_id(st, text):
    try:
        sid = int(text)
    except ValueError:
        raise not_found_schema()
    if sid not in st.schemas:
        raise not_found_schema()
    return sid


def register(st, subject, body):
    rec = st.prepare(body)
    sid = st.find(rec)
    vs = st.subjects.get(subject, [])
    if sid is not None and any(v["id"] == sid and not v["deleted"] for v in vs):
        return 200, {"id": sid}, False
    if sid is None:
        sid = st.next_id
        st.next_id += 1
        st.schemas[sid] = rec
        st.by_key[st.key(rec)] = sid
    version = max((v["version"] for v in vs), default=0) + 1
    st.subjects[subject] = vs + [{"version": version, "id": sid, "deleted": False}]
    st.saving()
    return 200, {"id": sid}, False


def lookup(st, subject, body, deleted, fmt):
    vs = st.live_versions(subject, deleted)
    if vs is None:
        raise not_found_subject(subject)
    rec = st.prepare(body)
    sid = st.find(rec)
    for v in reversed(vs):
        if v["id"] == sid:
            return 200, st.version_view(subject, v, fmt), False
    raise not_found_schema()


def referenced_by(st, subject, version):
    return sorted(sid for sid, s in st.schemas.items()
                  if any(r["subject"] == subject and r["version"] == version for r in s.get("references", []))
                  and any(v["id"] == sid and not v["deleted"] for vs in st.subjects.values() for v in vs))


def delete_subject(st, subject, permanent):
    vs = st.subjects.get(subject)
    if vs is None:
        raise not_found_subject(subject)
    for v in vs:
        if not v["deleted"] and referenced_by(st, subject, v["version"]):
            raise ApiError(422, 42206, f"One or more references exist to the schema {{subject={subject},version={v['version']}}}.")
    if permanent:
        if any(not v["deleted"] for v in vs):
            raise ApiError(404, 40405, f"Subject '{subject}' was not deleted first before being permanently deleted")
        del st.subjects[subject]
        st.saving()
        return 200, [v["version"] for v in vs], False
    live = [v for v in vs if not v["deleted"]]
    if not live:
        raise ApiError(404, 40404, f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently")
    for v in live:
        v["deleted"] = True
    st.saving()
    return 200, [v["version"] for v in live], False


def delete_version(st, subject, version, permanent):
    vs = st.subjects.get(subject)
    if vs is None:
        raise not_found_subject(subject)
    v = st.version(subject, version, deleted=permanent)
    if referenced_by(st, subject, v["version"]):
        raise ApiError(422, 42206, f"One or more references exist to the schema {{subject={subject},version={v['version']}}}.")
    if permanent:
        if not v["deleted"]:
            raise ApiError(404, 40407, f"Subject '{subject}' Version {v['version']} was not deleted first before being permanently deleted")
        vs.remove(v)
        if not vs:
            del st.subjects[subject]
    else:
        v["deleted"] = True
    st.saving()
    return 200, v["version"], False


# ------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: any free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--data", required=True, help="JSON file holding the registry's state")
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASS",
                    help="require HTTP basic auth with these credentials (repeatable)")
    ap.add_argument("--token", help="require (or also accept) Authorization: Bearer TOKEN")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    ap.add_argument("--tls-key", help="... and this private key (PEM)")
    ap.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    a = ap.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    users = []
    for u in a.user:
        name, sep, pw = u.partition(":")
        if not sep or not name:
            ap.error(f"--user {u!r}: expected NAME:PASS")
        users.append((name, pw))

    try:
        store = Store(a.data)
    except (OSError, ValueError) as e:
        print(f"registry: cannot read {a.data}: {e}", file=sys.stderr)
        return 1
    Handler.store, Handler.users, Handler.token, Handler.quiet = store, tuple(users), a.token, a.quiet

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    try:
        srv = Server((a.host, a.port), Handler)
    except OSError as e:
        print(f"registry: cannot listen on {a.host}:{a.port}: {e}", file=sys.stderr)
        return 1
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        # handshake in the request's thread, not in accept()
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # state is always on disk: stop at once
    port = srv.server_address[1]
    print(json.dumps({"ready": True, "port": port}), flush=True)
    sys.stderr.write(f"registry listening on {'https' if a.tls_cert else 'http'}://{a.host}:{port}, "
                     f"data {a.data} ({len(store.schemas)} schemas, {len(store.subjects)} subjects)\n")
    sys.stderr.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
