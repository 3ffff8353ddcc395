"""Failpoints: named places in the job lifecycle where fault tests make a process fail for real.

A failpoint does nothing unless configured (FAILPOINTS, empty in production). Fault tests
configure them to kill the process (SIGKILL, as an OOM kill would), raise a transient error,
sleep, or block until the test releases them (so that it can kill Redis at exactly that
point). The same idea as etcd's gofail or TiKV's fail crate, kept deliberately small.

FAILPOINTS is a JSON object, name -> action:

    {"jobs.image.after_record": {"action": "kill", "once": true, "dir": "/tmp/fp"},
     "jobs.image.run": {"action": "raise", "when": {"index": 1}},
     "jobs.image.before_record": {"action": "block", "dir": "/tmp/fp"}}

- `action`: `kill` (SIGKILL this process), `raise` (a transient Unavailable), `sleep`
  (`seconds`), `block` (writes `<dir>/<name>.reached`, waits until `<dir>/<name>.release`
  exists; at most DEFAULT_BLOCK_LIMIT_S).
- `when`: act only when the call's context matches (for example the image index).
- `once`: act on the first matching hit only, across processes (a marker file in `dir`).

In-process tests may also install a Python callable with `install(name, callback)`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samsvc.errors import ConfigurationError, Unavailable

#: Longest a `block` failpoint waits for its release file.
DEFAULT_BLOCK_LIMIT_S = 300.0
#: Seconds between looks for the release file.
BLOCK_POLL_S = 0.02
ACTIONS = frozenset({"kill", "raise", "sleep", "block"})

Callback = Callable[..., None]
_points: dict[str, Callback] = {}


def hit(name: str, **context: Any) -> None:
    """Run the failpoint `name` if one is configured (a dictionary lookup otherwise)."""
    if _points:
        callback = _points.get(name)
        if callback is not None:
            callback(**context)


def install(name: str, callback: Callback) -> None:
    _points[name] = callback


def clear() -> None:
    _points.clear()


def configure(spec: str) -> None:
    """Install the failpoints described by the JSON `spec` (empty: none)."""
    clear()
    if not spec.strip():
        return
    try:
        entries = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"FAILPOINTS is not JSON: {exc.msg}") from None
    if not isinstance(entries, dict):
        raise ConfigurationError("FAILPOINTS must be a JSON object of name -> action")
    for name, entry in entries.items():
        install(name, _from_entry(name, entry))


def _from_entry(name: str, entry: Any) -> Callback:
    if not isinstance(entry, dict) or entry.get("action") not in ACTIONS:
        raise ConfigurationError(f"FAILPOINTS[{name!r}] needs an action among {sorted(ACTIONS)}")
    action: str = entry["action"]
    when: dict[str, Any] = dict(entry.get("when") or {})
    directory = Path(entry["dir"]) if entry.get("dir") else None
    if (action == "block" or entry.get("once")) and directory is None:
        raise ConfigurationError(f"FAILPOINTS[{name!r}] needs a dir for {action!r} or once")
    once = bool(entry.get("once"))
    seconds = float(entry.get("seconds", 0))

    def callback(**context: Any) -> None:
        if any(context.get(key) != value for key, value in when.items()):
            return
        if once and directory is not None and not _first(directory / f"{name}.once"):
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "raise":
            raise Unavailable(f"failpoint {name}", reason="FAILPOINT")
        elif action == "sleep":
            time.sleep(seconds)
        elif directory is not None:
            _block(directory, name)

    return callback


def _first(marker: Path) -> bool:
    """Whether this call created `marker` (only one caller, in any process, does)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _block(directory: Path, name: str) -> None:
    (directory / f"{name}.reached").touch()
    release = directory / f"{name}.release"
    deadline = time.monotonic() + DEFAULT_BLOCK_LIMIT_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(BLOCK_POLL_S)
