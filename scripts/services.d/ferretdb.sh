# shellcheck shell=bash
# FerretDB for scripts/services (sourced after lib.sh): FerretDB v1, the
# MongoDB wire protocol on SQLite, built once from the Go module proxy.

FERRETDB_VERSION=${FERRETDB_VERSION:-v1.24.2}
[[ $FERRETDB_VERSION == v* ]] || FERRETDB_VERSION="v$FERRETDB_VERSION"
MONGO_PORT=${MONGO_PORT:-27017}
FERRETDB_DEBUG_ADDR=${FERRETDB_DEBUG_ADDR:--}

FERRETDB_HOME="$SLUICE_CACHE/ferretdb-$FERRETDB_VERSION"
FERRETDB_BIN="$FERRETDB_HOME/ferretdb"
MONGO_DIR="$STATE/ferretdb"
MONGO_PID="$STATE/ferretdb.pid"
MONGO_LOG="$MONGO_DIR/ferretdb.log"

mongo_pid() { pid_of "$MONGO_PID" "$MONGO_DIR/data/"; }

install_ferretdb() {
  [[ -x $FERRETDB_BIN ]] && return 0
  need go "used to build FerretDB from the Go module proxy"
  [[ $FERRETDB_VERSION == v1.* ]] || die "FERRETDB_VERSION=$FERRETDB_VERSION: only FerretDB v1.x (SQLite backend) is supported"
  mkdir -p "$SLUICE_CACHE"
  (
    exec 8>"$SLUICE_CACHE/.ferretdb-$FERRETDB_VERSION.lock"
    flock -w 900 8 || die "timed out waiting for another FerretDB build"
    [[ -x $FERRETDB_BIN ]] && exit 0
    say "building FerretDB $FERRETDB_VERSION into $FERRETDB_HOME (first run only, takes a few minutes)"
    local mod="github.com/FerretDB/FerretDB" src tmp="$FERRETDB_HOME/tmp"
    # `go install ...@version` builds a binary that panics at start-up, since the
    # module zip lacks the generated build/version/version.txt. So build from a
    # copy of the module source with that file written in.
    rm -rf "$tmp"
    mkdir -p "$tmp"
    src=$(cd / && GOFLAGS='' go mod download -json "$mod@$FERRETDB_VERSION" 2>"$tmp/go.log" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') || true
    [[ -n $src && -d $src ]] || { log_tail "$tmp/go.log"; die "go mod download $mod@$FERRETDB_VERSION failed"; }
    cp -R "$src" "$tmp/src"
    chmod -R u+w "$tmp/src"
    echo "$FERRETDB_VERSION" >"$tmp/src/build/version/version.txt"
    (cd "$tmp/src" && GOFLAGS='' go build -buildvcs=false -trimpath -o "$tmp/ferretdb" ./cmd/ferretdb) \
      >>"$tmp/go.log" 2>&1 || { log_tail "$tmp/go.log"; die "go build of FerretDB $FERRETDB_VERSION failed"; }
    "$tmp/ferretdb" --version >/dev/null || die "built FerretDB binary does not run"
    mv -f "$tmp/ferretdb" "$FERRETDB_BIN"
    rm -rf "$tmp"
    say "FerretDB $FERRETDB_VERSION ready"
  )
}

# mongo_ping: send an OP_MSG {ping: 1} and expect {ok: 1.0}; falls back to a
# plain TCP check when python3 is missing.
mongo_ping() {
  port_open "$MONGO_PORT" || return 1
  command -v python3 >/dev/null 2>&1 || return 0
  python3 - "$HOST" "$MONGO_PORT" <<'PY' >/dev/null 2>&1
import socket, struct, sys
doc = b"\x10ping\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
doc = struct.pack("<i", len(doc) + 5) + doc + b"\x00"
body = struct.pack("<I", 0) + b"\x00" + doc
msg = struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(msg)
buf = b""
while len(buf) < 4 or len(buf) < struct.unpack("<i", buf[:4])[0]:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
ok = b"\x01ok\x00" + struct.pack("<d", 1.0)
sys.exit(0 if ok in buf else 1)
PY
}

start_mongo() {
  local SVC=ferretdb pid
  if pid=$(mongo_pid); then
    say "already running (pid $pid)"
  else
    if port_open "$MONGO_PORT"; then
      who_listens "$MONGO_PORT" >&2
      die "port $HOST:$MONGO_PORT is already in use by another process (not started by this script); stop it or set MONGO_PORT"
    fi
    install_ferretdb
    mkdir -p "$MONGO_DIR/data"
    rotate "$MONGO_LOG"
    launch "$MONGO_PID" "$MONGO_LOG" "$FERRETDB_BIN" \
      --handler=sqlite --sqlite-url="file:$MONGO_DIR/data/" \
      --listen-addr="$HOST:$MONGO_PORT" --state-dir="$MONGO_DIR" \
      --debug-addr="$FERRETDB_DEBUG_ADDR" --telemetry=disable --log-level=INFO
    pid=$(tr -dc '0-9' <"$MONGO_PID")
    say "started FerretDB $FERRETDB_VERSION (pid $pid), log $MONGO_LOG"
  fi
  wait_ready FerretDB "$MONGO_PID" "$pid" "$MONGO_LOG" "$HOST:$MONGO_PORT" 0.2 mongo_ping
  say "ready on $HOST:$MONGO_PORT (mongodb://$HOST:$MONGO_PORT/)"
}

kill_mongo() {
  local SVC=ferretdb pid i
  if pid=$(mongo_pid); then
    kill -KILL "$pid" 2>/dev/null || true
    # Gone, or a zombie its parent has not reaped yet (the port is closed either way).
    for ((i = 0; i < 100; i++)); do
      [[ -r /proc/$pid/stat && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
      sleep 0.02
    done
    rm -f "$MONGO_PID"
    say "FerretDB killed (pid $pid)"
  else
    say "not running"
  fi
}

stop_mongo() {
  local SVC=ferretdb pid
  if pid=$(mongo_pid); then
    stop_pid FerretDB "$MONGO_PID" "$pid" 15
  else
    say "not running"
  fi
}

# mongo_status: one line; 0 when running and answering, 3 otherwise
mongo_status() {
  local pid
  if pid=$(mongo_pid); then
    if port_open "$MONGO_PORT"; then
      printf 'ferretdb: running  pid %-8s port %s\n' "$pid" "$MONGO_PORT"
    else
      printf 'ferretdb: starting pid %-8s port %s (not answering yet)\n' "$pid" "$MONGO_PORT"
      return 3
    fi
  else
    if port_open "$MONGO_PORT"; then
      printf 'ferretdb: stopped  (port %s is used by another process)\n' "$MONGO_PORT"
    else
      printf 'ferretdb: stopped\n'
    fi
    return 3
  fi
  return 0
}
