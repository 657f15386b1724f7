# shellcheck shell=bash
# The common part of scripts/services, sourced by it: where state lives,
# messages, ports, pid files, starting detached and stopping, waiting for
# readiness, the state lock. Expects SCRIPT_DIR (the scripts/ directory).

REPO=$(cd "$SCRIPT_DIR/.." && pwd)
STATE=${SERVICES_DIR:-$REPO/.services}
SLUICE_CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
SERVICES_TIMEOUT=${SERVICES_TIMEOUT:-90}
HOST=127.0.0.1

say() { printf '[%s] %s\n' "${SVC:-services}" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "${SVC:-services}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${SVC:-services}" "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

# port_open PORT: something accepts TCP connections on $HOST:PORT
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# who_listens PORT: best-effort description of the listener on PORT
who_listens() {
  if command -v ss >/dev/null 2>&1; then
    ss -ltnpH "sport = :$1" 2>/dev/null | sed 's/^/    /' || true
  fi
}

# pid_of NAME PIDFILE MATCH: print the pid if PIDFILE names a live process of
# ours (its command line contains MATCH), otherwise remove a stale PIDFILE.
pid_of() {
  local pidfile=$1 match=$2 pid
  [[ -f $pidfile ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  if [[ -n $pid && -r /proc/$pid/cmdline ]] &&
     tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$match"; then
    echo "$pid"
    return 0
  fi
  rm -f "$pidfile"
  return 1
}

log_tail() {
  local log=$1
  if [[ -f $log ]]; then
    printf -- '----- last 40 lines of %s -----\n' "$log" >&2
    tail -n 40 "$log" >&2 || true
    printf -- '----- end of log -----\n' >&2
  fi
}

# rotate LOG: keep one previous log around
rotate() { if [[ -f $1 ]]; then mv -f "$1" "$1.1"; fi; }

# launch PIDFILE LOG CMD...: start CMD detached (own session, no stdin, output
# to LOG), record its pid. The pid is the one of CMD itself (exec).
launch() {
  local pidfile=$1 log=$2
  shift 2
  rm -f "$pidfile"
  # fd 9 (our lock) must not leak into the daemon
  # and neither should any other inherited descriptor above stderr
  # shellcheck disable=SC2016
  setsid bash -c 'for fd in /proc/$$/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
    echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$log" 2>&1 9>&- &
  local i
  for i in $(seq 1 50); do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "process did not start (no pid file $pidfile)"
}

# stop_pid NAME PIDFILE PID TIMEOUT
stop_pid() {
  local name=$1 pidfile=$2 pid=$3 t=$4 i
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name (pid $pid) still running after ${t}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "could not kill $name (pid $pid)"
  fi
  rm -f "$pidfile"
  say "$name stopped"
}

lock_state() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 900 9 || die "another 'scripts/services' is running (lock $STATE/.lock)"
}

# wait_ready NAME PIDFILE PID LOG ADDR INTERVAL CHECK...: poll CHECK every
# INTERVAL seconds until it succeeds; die (with the log's tail) if the process
# exits or SERVICES_TIMEOUT passes first.
wait_ready() {
  local name=$1 pidfile=$2 pid=$3 log=$4 addr=$5 interval=$6
  shift 6
  local deadline=$((SECONDS + SERVICES_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      log_tail "$log"
      die "$name process exited during start-up"
    fi
    "$@" && break
    if ((SECONDS >= deadline)); then
      log_tail "$log"
      die "$name not ready on $addr after ${SERVICES_TIMEOUT}s (still running as pid $pid)"
    fi
    sleep "$interval"
  done
}
