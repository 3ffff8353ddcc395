"""Structured logs: one JSON object per line, with the correlation id of the request (or job
message) being served. Never logs image bytes or credentials: callers log summaries."""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

#: The correlation id of the work this context serves (`x-request-id`, or made up).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("samsvc_request_id", default="")


def new_request_id() -> str:
    return uuid.uuid4().hex


def redact_url(url: str) -> str:
    """A URL as a log line or an operator's listing may show it: without user name, password,
    query (a signed URL's signature) or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable URL)"
    if ":" in host:
        host = f"[{host}]"
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, host + port, parts.path, query, ""))


#: Seconds in which a sampled log writes at most `burst` lines of one kind.
DEFAULT_SAMPLE_WINDOW_S = 10.0
DEFAULT_SAMPLE_BURST = 5


class LogSampler:
    """Lets at most `burst` lines of each kind through per `window_s` seconds, and says how many
    were held back, so that a caller who can trigger a log line (an unauthenticated refusal)
    cannot flood the log; metrics still count every event."""

    def __init__(self, window_s: float = DEFAULT_SAMPLE_WINDOW_S, burst: int = DEFAULT_SAMPLE_BURST) -> None:
        self.window_s = window_s
        self.burst = burst
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> (start, logged, held back)
        self._lock = threading.Lock()

    def admit(self, kind: str) -> int | None:
        """None to skip this line; otherwise how many lines of `kind` were held back since the
        last one written (to mention in it)."""
        now = time.monotonic()
        with self._lock:
            start, logged, held = self._windows.get(kind, (now, 0, 0))
            if now - start >= self.window_s:
                start, logged = now, 0
            if logged >= self.burst:
                self._windows[kind] = (start, logged, held + 1)
                return None
            if len(self._windows) > 1024:  # kinds come from a fixed set; bound it anyway
                self._windows.clear()
            self._windows[kind] = (start, logged + 1, 0)
            return held


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id", ...extra fields, "exc"}` per line."""

    #: LogRecord attributes that are not user extras.
    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str) -> None:
    """Log to stderr as JSON lines (`fmt` json) or readable text."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
