"""One training run at a time per experiment folder.

A run takes ``<experiments_root>/<name>.lock`` (beside the folder, so archiving the folder cannot move
it) before it archives or writes anything, and removes it when it ends.  The file records the
holder's PID, host name and process start time.  A lock whose process is gone, or whose PID now
belongs to a process started later (the PID was reused), is stale: the next run takes it over with a
warning.  A lock held by a live process, or written on another host (whose processes cannot be
checked from here), refuses the start with one line naming the folder, the PID and the lock file.

Hand-written (about 100 lines) rather than ``filelock``: its ``FileLock`` (flock) does not say who
holds a lock and is unreliable on the network file systems experiments often live on, and its
``SoftFileLock`` detects dead holders only in recent releases whose API is still changing; what we need
(the holder in the refusal, a warning on take-over) is a few system calls.  Process liveness and start
times come from ``psutil`` (a dependency of accelerate), which works on Linux, macOS and Windows.

Limits: a lock is taken with ``os.link`` of a finished temporary file (atomic, and never seen
half-written), or ``O_CREAT | O_EXCL`` where the file system has no hard links.  Two runs that find
the same stale lock in the same instant can both take it over; a live lock is never taken.  A lock that
cannot be written (a full disk, no permission) is one line naming the lock file, and nothing of it is left.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

import psutil

#: lock files this process holds (resolved paths): a second Trainer in the same process is refused too
_HELD: set[str] = set()
#: an unreadable lock file younger than this may still be being written (the O_EXCL fallback)
_UNREADABLE_GRACE_S = 10.0


class ExperimentLocked(FileExistsError):
    """Another live run uses the experiment folder (the message names it, the PID and the lock file)."""


def lock_path(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.lock")


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _record() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _cannot_write(path: Path, err: OSError) -> OSError:
    """A write error of the lock file (a full disk, no permission) as one line naming it: not a
    ``FileExistsError`` (which means 'held'), whatever its errno."""
    failed = OSError(f"cannot write the lock file '{path}' of experiment folder "
                     f"'{path.with_name(path.name.removesuffix('.lock'))}': {err.strerror or err}")
    failed.errno = err.errno
    return failed


def _create(path: Path, record: dict) -> None:
    """Create ``path`` holding ``record``; FileExistsError when it exists, an OSError naming ``path`` when it
    cannot be written (nothing of it is left then)."""
    data = json.dumps(record).encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise _cannot_write(path, err) from None
    try:
        try:
            Path(tmp).write_bytes(data)
        except OSError as err:
            raise _cannot_write(path, err) from None
        try:
            os.link(tmp, path)          # atomic, and the lock is complete when it appears
            return
        except FileExistsError:
            raise
        except OSError:                 # no hard links on this file system
            pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise
        except OSError as err:
            raise _cannot_write(path, err) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as err:          # ours, half written: removed, not left to look like another run's
            path.unlink(missing_ok=True)
            raise _cannot_write(path, err) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _stale_because(record: dict | None, path: Path) -> str | None:
    """Why the lock at ``path`` is stale, or None when its holder may be alive."""
    if record is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it was removed meanwhile"
        return f"it is unreadable and {age:.0f} s old" if age > _UNREADABLE_GRACE_S else None
    if record.get("host", socket.gethostname()) != socket.gethostname():
        return None                      # another machine's process: cannot be checked from here
    pid = record["pid"]
    if not psutil.pid_exists(pid):
        return f"process {pid} has ended"
    started, now = record.get("started"), _start_time(pid)
    if isinstance(started, (int, float)) and now is not None and abs(now - started) > 1.0:
        return f"process {pid} has ended and its PID now belongs to another process"
    if pid == os.getpid() and str(path.resolve()) not in _HELD:
        return "an earlier, unfinished trainer of this process left it"
    return None


def _refusal(folder: Path, path: Path, record: dict | None) -> str:
    if record is None:
        return (f"experiment folder '{folder}' is in use (lock '{path}' is being written); "
                f"wait for that run to end or choose another name")
    pid, host = record["pid"], record.get("host", socket.gethostname())
    since = f", since {record['since']}" if record.get("since") else ""
    if host != socket.gethostname():
        return (f"experiment folder '{folder}' is in use by process {pid} on {host}{since} (lock '{path}'); "
                f"wait for that run to end or choose another name; delete the lock only if that run is gone")
    who = "this process (another Trainer of it has not finished; call its close())" if pid == os.getpid() \
        else f"process {pid}"
    return (f"experiment folder '{folder}' is in use by {who}{since} (lock '{path}'); "
            f"wait for that run to end, stop it, or choose another name")


def acquire(folder: str | Path) -> tuple[Path, str | None]:
    """Take the lock of experiment folder ``folder``: (the lock file, a warning when a stale lock was
    taken over).  ``ExperimentLocked`` when a live run holds it."""
    folder = Path(folder)
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    warning = None
    for _ in range(3):
        try:
            _create(path, _record())
        except FileExistsError:
            record = _read(path)
            reason = _stale_because(record, path)
            if reason is None:
                raise ExperimentLocked(_refusal(folder, path, record)) from None
            if record is not None or path.exists():
                warning = f"took over the stale lock '{path}' ({reason})"
            path.unlink(missing_ok=True)
            continue
        _HELD.add(str(path.resolve()))
        return path, warning
    raise ExperimentLocked(_refusal(folder, path, _read(path)))


def release(path: str | Path) -> None:
    """Remove a lock this process took (a lock another process has taken over since is left alone)."""
    path = Path(path)
    key = str(path.resolve())
    if key not in _HELD:
        return
    _HELD.discard(key)
    record = _read(path)
    if record is not None and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
