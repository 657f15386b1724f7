# shellcheck shell=bash
# Schema registry for scripts/services (sourced after lib.sh): our own small
# Confluent-compatible registry (scripts/registry/registry.py, Python's
# standard library only; docs/registry.md says why and what it serves). Its
# state is one JSON file, rewritten atomically on every change, so a stop is
# immediate and a start comes back with every id and version.

REGISTRY_PORT=${REGISTRY_PORT:-8081}

REGISTRY_DIR="$STATE/registry"
REGISTRY_PID="$STATE/registry.pid"
REGISTRY_LOG="$REGISTRY_DIR/registry.log"
REGISTRY_DATA="$REGISTRY_DIR/registry.json"

registry_pid() { pid_of "$REGISTRY_PID" "$REGISTRY_DATA"; }

# registry_ping: GET /subjects answers 200 with a JSON array
registry_ping() {
  port_open "$REGISTRY_PORT" || return 1
  python3 - "$HOST" "$REGISTRY_PORT" <<'PY' >/dev/null 2>&1
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/subjects", timeout=5) as r:
    sys.exit(0 if r.status == 200 and isinstance(json.load(r), list) else 1)
PY
}

start_registry() {
  local SVC=registry pid
  if pid=$(registry_pid); then
    say "already running (pid $pid)"
  else
    need python3 "the schema registry is a Python script"
    if port_open "$REGISTRY_PORT"; then
      who_listens "$REGISTRY_PORT" >&2
      die "port $HOST:$REGISTRY_PORT is already in use by another process (not started by this script); stop it or set REGISTRY_PORT"
    fi
    mkdir -p "$REGISTRY_DIR"
    rotate "$REGISTRY_LOG"
    launch "$REGISTRY_PID" "$REGISTRY_LOG" python3 -u "$SCRIPT_DIR/registry/registry.py" \
      --host "$HOST" --port "$REGISTRY_PORT" --data "$REGISTRY_DATA"
    pid=$(tr -dc '0-9' <"$REGISTRY_PID")
    say "started schema registry (pid $pid), log $REGISTRY_LOG"
  fi
  wait_ready "Schema registry" "$REGISTRY_PID" "$pid" "$REGISTRY_LOG" "$HOST:$REGISTRY_PORT" 0.1 registry_ping
  say "ready on $HOST:$REGISTRY_PORT (http://$HOST:$REGISTRY_PORT)"
}

# registry_gone PID: exited, or a zombie its parent has not reaped yet (its
# port is closed either way; init may take a second or two to reap it)
registry_gone() {
  [[ ! -r /proc/$1/stat || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]
}

# Immediate: the state is on disk after every change, so SIGTERM ends it at once.
stop_registry() {
  local SVC=registry pid i
  if pid=$(registry_pid); then
    say "stopping Schema registry (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 250; i++)); do
      registry_gone "$pid" && break
      sleep 0.02
    done
    if ! registry_gone "$pid"; then
      warn "Schema registry (pid $pid) still running after 5s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 250; i++)); do
        registry_gone "$pid" && break
        sleep 0.02
      done
      registry_gone "$pid" || die "could not kill Schema registry (pid $pid)"
    fi
    rm -f "$REGISTRY_PID"
    say "Schema registry stopped"
  else
    say "not running"
  fi
}

# registry_status: one line; 0 when running and answering, 3 otherwise
registry_status() {
  local pid
  if pid=$(registry_pid); then
    if port_open "$REGISTRY_PORT"; then
      printf 'registry: running  pid %-8s port %s\n' "$pid" "$REGISTRY_PORT"
    else
      printf 'registry: starting pid %-8s port %s (not answering yet)\n' "$pid" "$REGISTRY_PORT"
      return 3
    fi
  else
    if port_open "$REGISTRY_PORT"; then
      printf 'registry: stopped  (port %s is used by another process)\n' "$REGISTRY_PORT"
    else
      printf 'registry: stopped\n'
    fi
    return 3
  fi
  return 0
}
