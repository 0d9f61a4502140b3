"""Which live process owns a folder: a run folder while it trains, an export's staging folder
while it is written. ``owner.json`` holds the process id, the host and the process's start
time, so a killed process never leaves a folder locked (its id gone, or reused by a process
that started later)."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path

OWNER_FILE = "owner.json"


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None where
    that cannot be read (not Linux, no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "process_start": process_start(os.getpid()),
            "since": datetime.now().isoformat(timespec="seconds")}


def read_owner(folder: Path) -> dict | None:
    try:
        owner = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
        int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return owner


def owner_alive(folder: Path) -> bool | None:
    """Whether the process named in ``folder/owner.json`` still runs on this machine: True,
    False, or None when it cannot be told (no owner file, another host)."""
    owner = read_owner(folder)
    if owner is None or owner["host"] != socket.gethostname():
        return None
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    started = owner.get("process_start")
    return started is None or process_start(pid) in (None, started)  # else: a reused id


def write_owner(folder: Path) -> None:
    """Names this process as ``folder``'s owner (a temporary file, then renamed)."""
    partial = Path(folder) / f".{OWNER_FILE}.partial"
    partial.write_text(json.dumps(this_process()), encoding="utf-8")
    partial.replace(Path(folder) / OWNER_FILE)


def owned_by_another(folder: Path) -> dict | None:
    """The owner of ``folder`` when it is another live process (this machine; or another
    host, which cannot be checked), else None."""
    owner = read_owner(folder)
    if owner is None:
        return None
    mine = owner["host"] == socket.gethostname() and int(owner["pid"]) == os.getpid()
    return None if mine or owner_alive(folder) is False else owner


def release(folder: Path) -> None:
    """Removes ``folder/owner.json`` if this process owns it."""
    owner = read_owner(folder)
    if owner and owner["host"] == socket.gethostname() and int(owner["pid"]) == os.getpid():
        (Path(folder) / OWNER_FILE).unlink(missing_ok=True)


def claim(folder: Path) -> dict | None:
    """Makes this process ``folder``'s owner, unless another live process owns it: then
    returns that owner (``owner.json`` is created exclusively, so of two processes claiming
    at once one wins; an owner that is gone is replaced)."""
    path = Path(folder) / OWNER_FILE
    for _ in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = owned_by_another(folder)
            if other is not None:
                return other
            path.unlink(missing_ok=True)  # ours from before, or its process is gone
            continue
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(this_process(), file)
        return None
    return read_owner(folder)
