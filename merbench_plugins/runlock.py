"""One live owner per run folder: the process that trains into a folder holds ``FOLDER/.run.lock``.

``claim(folder, ...)`` (the runners, when they start training) takes an exclusive ``flock`` on it and writes
who holds it (pid, host, start, command); the lock lasts until the process exits and the kernel drops it
whatever the death, so a killed owner never blocks a rerun. ``owner(folder)`` (the launcher, before it
starts a job) says who holds it, or None. A folder already held by another live process is refused with
its owner named. Holding the lock also means no live writer of ours is at work there: the temp files a
killed writer left in the run's own files are removed then (fileio.TEMP_NAME).
"""
import atexit
import json
import os
import socket
import sys
import time
from typing import Dict, List, Optional, Tuple

from . import fileio

try:
    import fcntl
except ImportError:          # not POSIX: no locks (claim and owner do nothing)
    fcntl = None

LOCK_NAME = ".run.lock"
RETRY = 1.0                  # seconds to retry a taken lock (a launcher's probe holds it for microseconds)
# where the runners write inside a run folder: swept for a killed writer's temp files (not deeper: a folder
# below may be another run's)
OUTPUT_SUBFOLDERS = ("result", "models", "model", "summary", "robust")

_held: Dict[str, int] = {}   # real folder path -> the fd that holds its lock


class RunFolderBusy(ValueError):
    """Another live process trains into this folder; the message names it."""


def lock_path(folder: str) -> str:
    return os.path.join(folder, LOCK_NAME)


def _describe(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        return (f"pid {info['pid']} on {info['host']}, since {info['since']}: "
                f"{' '.join(info.get('command', []))[:200]}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def owner(folder: str) -> Optional[str]:
    """Who holds ``folder``'s run lock ("pid N on HOST, since T: COMMAND"), or None (free, or held by us)."""
    if fcntl is None or os.path.realpath(folder) in _held:
        return None
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _describe(path)
    finally:
        os.close(fd)           # closing drops our probe's shared lock too


def owners(folders) -> List[Tuple[str, str]]:
    """(folder, owner) for each held run lock in ``folders`` or their direct subfolders (MERBench's runner
    locks its save_root, RUN_DIR/saved-trimodal)."""
    found = []
    for folder in folders:
        subs = sorted(e.path for e in os.scandir(folder) if e.is_dir()) if os.path.isdir(folder) else []
        found += [(d, who) for d in [folder] + subs for who in [owner(d)] if who]
    return found


def _acquire(folder: str) -> Optional[int]:
    """The fd holding ``folder``'s lock, or None when another process holds it."""
    os.makedirs(folder, exist_ok=True)
    path, deadline = lock_path(folder), time.time() + RETRY
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.time() > deadline:
                return None
            time.sleep(0.05)
            continue
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:   # not unlinked by an owner releasing it meanwhile
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def claim(*folders: str):
    """Hold the run lock of every folder (created if missing) until this process exits; all or none.

    Raises :class:`RunFolderBusy` naming the owner when another live process holds one. Folders this
    process holds already are fine (a second call is a no-op)."""
    if fcntl is None:
        return
    taken = []
    for folder in folders:
        real = os.path.realpath(folder)
        if real in _held or real in taken:
            continue
        fd = _acquire(folder)
        if fd is None:
            who = _describe(lock_path(folder))
            for t in taken:
                release(t)
            raise RunFolderBusy(f"{folder} is being trained into by another live process ({who}); wait for it "
                                "to finish or stop it, then rerun (or pick another output folder)")
        _held[real] = fd
        taken.append(real)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": sys.argv}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        for d in [folder] + [os.path.join(folder, sub) for sub in OUTPUT_SUBFOLDERS]:
            fileio.remove_leftover_temps(d)          # a killed writer's temp files


def release(folder: str):
    """Give up ``folder``'s lock (and its file: removed while still held, so no one locks a dead name)."""
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is None:
        return
    try:
        os.unlink(lock_path(folder))
    except OSError:
        pass
    os.close(fd)


@atexit.register
def _release_all():
    for folder in list(_held):
        release(folder)
