"""A Protobuf FileDescriptorProto, as serialized bytes, back to .proto text.

Python's stdlib only. confluent-kafka's Python ProtobufSerializer registers a
schema as the base64 of its file's serialized FileDescriptorProto; Confluent's
registry turns that into .proto text, which is what `GET /schemas/ids/{id}`
answers and what other clients (Sluice's host) compile. This module does the
same for scripts/registry/registry.py: a small protobuf wire-format reader for
the descriptor messages and a renderer of the parts that define the wire
format (syntax, package, imports, messages with their fields, maps, oneofs,
proto3 `optional`, nested types, enums, reserved ranges and names, extension
ranges and extensions, services, the common file options, `packed`,
`deprecated`, `json_name` and proto2 defaults). Custom options, comments and
editions files are not rendered: `render` raises ValueError for what it cannot
express. Type names are written fully qualified (`.pkg.Msg`), which every
.proto compiler accepts.
"""

import base64
import binascii

# ------------------------------------------------------------ wire format


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf):
    """(number, wire type, value) for each field of one message's bytes."""
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ValueError("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated length-delimited field")
            val, pos = bytes(buf[pos:pos + n]), pos + n
        elif wt == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((num, wt, val))
    return out


# Per message type: field number -> (name, kind, repeated). Kinds: str, int
# (int32/enum, two's complement), bool, bytes, or the name of a message type.
_SCHEMA = {
    "File": {1: ("name", "str", False), 2: ("package", "str", False), 3: ("dependency", "str", True),
             10: ("public_dependency", "int", True), 11: ("weak_dependency", "int", True),
             4: ("message_type", "Message", True), 5: ("enum_type", "Enum", True),
             6: ("service", "Service", True), 7: ("extension", "Field", True),
             8: ("options", "FileOptions", False), 12: ("syntax", "str", False), 14: ("edition", "int", False)},
    "Message": {1: ("name", "str", False), 2: ("field", "Field", True), 6: ("extension", "Field", True),
                3: ("nested_type", "Message", True), 4: ("enum_type", "Enum", True),
                5: ("extension_range", "Range", True), 8: ("oneof_decl", "Oneof", True),
                7: ("options", "MessageOptions", False), 9: ("reserved_range", "Range", True),
                10: ("reserved_name", "str", True)},
    "Field": {1: ("name", "str", False), 2: ("extendee", "str", False), 3: ("number", "int", False),
              4: ("label", "int", False), 5: ("type", "int", False), 6: ("type_name", "str", False),
              7: ("default_value", "str", False), 8: ("options", "FieldOptions", False),
              9: ("oneof_index", "int", False), 10: ("json_name", "str", False),
              17: ("proto3_optional", "bool", False)},
    "Oneof": {1: ("name", "str", False)},
    "Range": {1: ("start", "int", False), 2: ("end", "int", False)},
    "Enum": {1: ("name", "str", False), 2: ("value", "EnumValue", True), 3: ("options", "EnumOptions", False),
             4: ("reserved_range", "Range", True), 5: ("reserved_name", "str", True)},
    "EnumValue": {1: ("name", "str", False), 2: ("number", "int", False), 3: ("options", "EnumValueOptions", False)},
    "Service": {1: ("name", "str", False), 2: ("method", "Method", True)},
    "Method": {1: ("name", "str", False), 2: ("input_type", "str", False), 3: ("output_type", "str", False),
               5: ("client_streaming", "bool", False), 6: ("server_streaming", "bool", False)},
    "FileOptions": {1: ("java_package", "str", False), 8: ("java_outer_classname", "str", False),
                    10: ("java_multiple_files", "bool", False), 11: ("go_package", "str", False),
                    36: ("objc_class_prefix", "str", False), 37: ("csharp_namespace", "str", False),
                    39: ("swift_prefix", "str", False), 40: ("php_class_prefix", "str", False),
                    41: ("php_namespace", "str", False), 45: ("ruby_package", "str", False)},
    "MessageOptions": {3: ("deprecated", "bool", False), 7: ("map_entry", "bool", False)},
    "FieldOptions": {2: ("packed", "bool", False), 3: ("deprecated", "bool", False)},
    "EnumOptions": {2: ("allow_alias", "bool", False), 3: ("deprecated", "bool", False)},
    "EnumValueOptions": {1: ("deprecated", "bool", False)},
}


def _int32(v):
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _decode(kind, buf):
    schema = _SCHEMA[kind]
    out = {}
    for num, wt, val in _fields(buf):
        if num not in schema:
            continue  # unknown or not rendered (source info, custom options)
        name, k, rep = schema[num]
        if k in ("int", "bool") and wt == 2:  # packed repeated
            vals, pos = [], 0
            while pos < len(val):
                x, pos = _varint(val, pos)
                vals.append(x)
        else:
            vals = [val]
        for val in vals:
            if k == "str":
                if wt != 2:
                    raise ValueError(f"{kind}.{name}: wrong wire type")
                val = val.decode("utf-8")
            elif k == "int":
                val = _int32(val)
            elif k == "bool":
                val = bool(val)
            elif k != "bytes":
                if wt != 2:
                    raise ValueError(f"{kind}.{name}: wrong wire type")
                val = _decode(k, val)
            if rep:
                out.setdefault(name, []).append(val)
            else:
                out[name] = val
    return out


def parse_file_descriptor(data):
    """A dict of the FileDescriptorProto in `data` (bytes); ValueError if it is not one."""
    fd = _decode("File", data)
    if not fd.get("name") and not fd.get("message_type") and not fd.get("enum_type"):
        raise ValueError("not a FileDescriptorProto (no name, message or enum)")
    return fd


def from_base64(text):
    """The FileDescriptorProto dict if `text` is base64 of one, else None."""
    s = text.strip()
    if not s or any(c.isspace() for c in s):
        return None
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        return parse_file_descriptor(data)
    except (ValueError, UnicodeDecodeError, KeyError):
        return None


# ---------------------------------------------------------------- render

_SCALARS = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
            8: "bool", 9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32", 16: "sfixed64",
            17: "sint32", 18: "sint64"}
_MAX_FIELD = 536870911


def _quote(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\{o:03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_name(name):
    out, up = [], False
    for ch in name:
        if ch == "_":
            up = True
        elif up:
            out.append(ch.upper())
            up = False
        else:
            out.append(ch)
    return "".join(out)


def _type(f):
    t = f.get("type")
    if t in _SCALARS:
        return _SCALARS[t]
    if t == 10:
        raise ValueError(f"field {f.get('name')}: proto2 groups are not supported")
    tn = f.get("type_name")
    if not tn:
        raise ValueError(f"field {f.get('name')}: no type")
    return tn


def _field_options(f, syntax):
    opts = []
    o = f.get("options", {})
    if "packed" in o:
        opts.append(f"packed = {'true' if o['packed'] else 'false'}")
    if o.get("deprecated"):
        opts.append("deprecated = true")
    if "default_value" in f:
        d, t = f["default_value"], f.get("type")
        if t == 9:
            d = _quote(d)
        elif t == 12:
            d = '"' + d + '"'  # already C-escaped in the descriptor
        opts.append(f"default = {d}")
    if "json_name" in f and f["json_name"] != _json_name(f["name"]):
        opts.append(f"json_name = {_quote(f['json_name'])}")
    return f" [{', '.join(opts)}]" if opts else ""


def _field(f, syntax, maps, in_oneof=False):
    label = ""
    lab = f.get("label", 1)
    tn = f.get("type_name", "")
    if lab == 3 and tn in maps:
        key, val = maps[tn]
        return f"map<{_type(key)}, {_type(val)}> {f['name']} = {f['number']}{_field_options(f, syntax)};"
    if in_oneof:
        label = ""
    elif lab == 3:
        label = "repeated "
    elif lab == 2:
        label = "required "
    elif syntax == "proto2" or f.get("proto3_optional"):
        label = "optional "
    return f"{label}{_type(f)} {f['name']} = {f['number']}{_field_options(f, syntax)};"


def _ranges(ranges, exclusive):
    parts = []
    for r in ranges:
        start, end = r.get("start", 0), r.get("end", 0)
        if exclusive:
            end -= 1
        if end >= _MAX_FIELD and exclusive:
            parts.append(f"{start} to max")
        elif end == start:
            parts.append(str(start))
        else:
            parts.append(f"{start} to {end}")
    return ", ".join(parts)


def _enum(e, ind):
    p = "  " * ind
    lines = [f"{p}enum {e['name']} {{"]
    o = e.get("options", {})
    if o.get("allow_alias"):
        lines.append(f"{p}  option allow_alias = true;")
    if o.get("deprecated"):
        lines.append(f"{p}  option deprecated = true;")
    for v in e.get("value", []):
        dep = " [deprecated = true]" if v.get("options", {}).get("deprecated") else ""
        lines.append(f"{p}  {v['name']} = {v.get('number', 0)}{dep};")
    if e.get("reserved_range"):
        lines.append(f"{p}  reserved {_ranges(e['reserved_range'], exclusive=False)};")
    if e.get("reserved_name"):
        lines.append(f"{p}  reserved {', '.join(_quote(n) for n in e['reserved_name'])};")
    lines.append(f"{p}}}")
    return lines


def _extensions(exts, syntax, ind):
    p = "  " * ind
    lines = []
    by_extendee = {}
    for f in exts:
        by_extendee.setdefault(f.get("extendee", ""), []).append(f)
    for extendee, fs in by_extendee.items():
        lines.append(f"{p}extend {extendee} {{")
        for f in fs:
            lines.append(f"{p}  {_field(f, syntax, {})}")
        lines.append(f"{p}}}")
    return lines


def _message(m, scope, syntax, ind):
    p = "  " * ind
    full = f"{scope}.{m['name']}"
    lines = [f"{p}message {m['name']} {{"]
    o = m.get("options", {})
    if o.get("deprecated"):
        lines.append(f"{p}  option deprecated = true;")
    maps = {}
    for n in m.get("nested_type", []):
        if n.get("options", {}).get("map_entry"):
            kv = {f.get("number"): f for f in n.get("field", [])}
            if 1 not in kv or 2 not in kv:
                raise ValueError(f"map entry {n.get('name')} lacks key or value")
            maps[f"{full}.{n['name']}"] = (kv[1], kv[2])
    oneofs = m.get("oneof_decl", [])
    fields = m.get("field", [])
    # Field declarations in order: a field, or a whole oneof at its first field.
    items, done_oneofs = [], set()
    for f in fields:
        oi = f.get("oneof_index")
        if oi is not None and not f.get("proto3_optional"):
            if oi in done_oneofs:
                continue
            done_oneofs.add(oi)
            if oi >= len(oneofs):
                raise ValueError(f"field {f.get('name')}: oneof index {oi} out of range")
            group = [g for g in fields if g.get("oneof_index") == oi and not g.get("proto3_optional")]
            body = [f"{p}  oneof {oneofs[oi]['name']} {{"]
            body += [f"{p}    {_field(g, syntax, maps, in_oneof=True)}" for g in group]
            body.append(f"{p}  }}")
            items.append((None, body))
        else:
            entry = f.get("type_name") if f.get("label") == 3 and f.get("type_name") in maps else None
            items.append((entry, [f"{p}  {_field(f, syntax, maps)}"]))
    # Nested types keep their order (Confluent's message indexes count them),
    # and a map's entry type sits where its field is declared: interleave.
    for n in m.get("nested_type", []):
        if n.get("options", {}).get("map_entry"):
            entry = f"{full}.{n['name']}"
            k = next((i for i, it in enumerate(items) if it[0] == entry), None)
            if k is None:
                raise ValueError(f"map entry {n['name']} has no map field")
            for _, body in items[:k + 1]:
                lines.extend(body)
            items = items[k + 1:]
        else:
            lines.extend(_message(n, full, syntax, ind + 1))
    for _, body in items:
        lines.extend(body)
    for e in m.get("enum_type", []):
        lines.extend(_enum(e, ind + 1))
    if m.get("extension_range"):
        lines.append(f"{p}  extensions {_ranges(m['extension_range'], exclusive=True)};")
    if m.get("extension"):
        lines.extend(_extensions(m["extension"], syntax, ind + 1))
    if m.get("reserved_range"):
        lines.append(f"{p}  reserved {_ranges(m['reserved_range'], exclusive=True)};")
    if m.get("reserved_name"):
        lines.append(f"{p}  reserved {', '.join(_quote(n) for n in m['reserved_name'])};")
    lines.append(f"{p}}}")
    return lines


def render(fd):
    """.proto text of a FileDescriptorProto dict (from parse_file_descriptor)."""
    if fd.get("edition") or fd.get("syntax") == "editions":
        raise ValueError("Protobuf editions files are not supported")
    syntax = fd.get("syntax") or "proto2"
    if syntax not in ("proto2", "proto3"):
        raise ValueError(f"unknown syntax {syntax!r}")
    lines = [f'syntax = "{syntax}";']
    pkg = fd.get("package", "")
    if pkg:
        lines.append(f"package {pkg};")
    deps = fd.get("dependency", [])
    public, weak = set(fd.get("public_dependency", [])), set(fd.get("weak_dependency", []))
    if deps:
        lines.append("")
    for i, d in enumerate(deps):
        kind = "public " if i in public else "weak " if i in weak else ""
        lines.append(f"import {kind}{_quote(d)};")
    opts = fd.get("options", {})
    if opts:
        lines.append("")
        for k, v in opts.items():
            lines.append(f"option {k} = {('true' if v else 'false') if isinstance(v, bool) else _quote(v)};")
    scope = f".{pkg}" if pkg else ""
    for m in fd.get("message_type", []):
        lines.append("")
        lines.extend(_message(m, scope, syntax, 0))
    for e in fd.get("enum_type", []):
        lines.append("")
        lines.extend(_enum(e, 0))
    if fd.get("extension"):
        lines.append("")
        lines.extend(_extensions(fd["extension"], syntax, 0))
    for s in fd.get("service", []):
        lines.append("")
        lines.append(f"service {s['name']} {{")
        for mt in s.get("method", []):
            cs = "stream " if mt.get("client_streaming") else ""
            ss = "stream " if mt.get("server_streaming") else ""
            lines.append(f"  rpc {mt['name']}({cs}{mt['input_type']}) returns ({ss}{mt['output_type']});")
        lines.append("}")
    return "\n".join(lines) + "\n"


def base64_to_text(text):
    """(.proto text, descriptor dict) if `text` is a base64 FileDescriptorProto, else None.
    Raises ValueError if it is one but cannot be rendered."""
    fd = from_base64(text)
    if fd is None:
        return None
    return render(fd), fd
