"""A hostile Python plugin for the tests (tests/tests/hostile_lang.rs): one component,
switched by its params, misbehaves on one record and passes every other one through.

Params:
- `mode`: what it does on the trigger record —
  `loop` (an endless loop), `sleep` (time.sleep for an hour), `bomb` (allocates without
  bound), `passwd` (reads /etc/passwd), `socket` (a TCP connection to 127.0.0.1:9092),
  `env` (reads the environment and fails naming what it saw), `print` (prints 100 MB).
- `trigger`: the `num` of the record it misbehaves on.
"""
import os
import socket
import time

from sluice_plugin import Error, Params, map

MODES = ("loop", "sleep", "bomb", "passwd", "socket", "env", "print")
_mode = None
_trigger = None


def setup(params: Params) -> None:
    global _mode, _trigger
    mode = params.require("mode")
    if mode not in MODES:
        raise Error(f"parameter `mode` = {mode!r}: not one of {', '.join(MODES)}")
    _mode = mode
    _trigger = params.parse("trigger", int, None)
    if _trigger is None:
        raise Error("missing parameter `trigger`")


def _loop():
    n = 0
    while True:
        n += 1


def _sleep():
    time.sleep(3600)
    raise Error("slept an hour and woke up")


def _bomb():
    hoard = []
    while True:
        hoard.append(bytearray(1 << 20))  # 1 MiB at a time, each kept


def _passwd():
    with open("/etc/passwd") as f:
        return f"read /etc/passwd: {f.read()[:80]!r}"


def _socket():
    # Not socket.create_connection: its name lookup needs the `idna` codec, which the
    # component's standard library leaves out; an address needs no lookup.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(("127.0.0.1", 9092))
        return f"connected to {s.getpeername()}"


def _env():
    return f"environment seen: {dict(os.environ)!r}"


def _print():
    line = "x" * ((1 << 20) - 1)
    for _ in range(100):  # 100 MiB, a 1 MiB line at a time
        print(line)
    return "printed 100 MiB"


ACTIONS = {"loop": _loop, "sleep": _sleep, "bomb": _bomb, "passwd": _passwd, "socket": _socket, "env": _env, "print": _print}


@map(init=setup)
def hostile(doc):
    if not (isinstance(doc, dict) and doc.get("num") == _trigger):
        return doc
    # Whatever the mode did and survived is this record's error: the record never passes.
    raise Error(f"{_mode}: {ACTIONS[_mode]()}")
