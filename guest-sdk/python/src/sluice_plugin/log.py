"""Log through the host (tagged with the plugin's name, rate-limited); to stderr when run natively."""
import sys

_host = None  # (log function, Level enum) once resolved; False natively


def _resolve():
    global _host
    try:
        from wit_world.imports import host, types  # only inside the component
        _host = (host.log, types.Level)
    except ImportError:
        _host = False
    return _host


def _log(level, message):
    h = _host if _host is not None else _resolve()
    if h:
        h[0](getattr(h[1], level), str(message))
    else:
        print(f"[plugin {level.lower()}] {message}", file=sys.stderr)


def trace(message): _log("TRACE", message)
def debug(message): _log("DEBUG", message)
def info(message): _log("INFO", message)
def warn(message): _log("WARN", message)
def error(message): _log("ERROR", message)
