"""One live owner per run folder: whoever trains into a folder holds ``FOLDER/.run.lock``.

An exclusive ``flock`` on that file, with who holds it written inside (pid, host, start, command); the
kernel drops it when its process dies, however it dies, so a killed owner never blocks a rerun.

* The runners call ``claim(folder, ...)`` when they start training: held until the process exits; a folder
  another live process holds is refused (:class:`RunFolderBusy`, the owner named).
* The launcher calls ``acquire(folders)`` before it starts a job and holds the locks until the job exits,
  handing them down to it (``hand_down``: the job's runner adopts them instead of taking its own), so
  there is no moment between the launcher's check and the runner's claim when a second launcher could
  start the same run.

Holding a folder's lock also means no live writer of ours is at work there: the temp files a killed
writer left in the run's own files are removed when a runner claims it (fileio.TEMP_NAME).
"""
import atexit
import json
import os
import socket
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import fileio

try:
    import fcntl
except ImportError:          # not POSIX: no locks (everything here does nothing)
    fcntl = None

LOCK_NAME = ".run.lock"
INHERITED = "MERBENCH_RUN_LOCKS"   # environment: {folder (real path): fd} of the locks a launcher handed down
RETRY = 1.0                  # seconds to retry a taken lock (a probe holds it for microseconds)
# where the runners write inside a run folder: swept for a killed writer's temp files (not deeper: a folder
# below may be another run's)
OUTPUT_SUBFOLDERS = ("result", "models", "model", "summary", "robust")

_held: Dict[str, Tuple[int, bool]] = {}   # real folder path -> (fd holding its lock, whether we made the lock file)
_made_dirs: Dict[int, List[str]] = {}     # lock fd -> the folders made to hold it, deepest first


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


def owners(folders: Sequence[str]) -> List[Tuple[str, str]]:
    """(folder, owner) for each held run lock in ``folders`` or their direct subfolders (MERBench's runner
    locks its save_root, RUN_DIR/saved-trimodal)."""
    found = []
    for folder in folders:
        subs = sorted(e.path for e in os.scandir(folder) if e.is_dir()) if os.path.isdir(folder) else []
        found += [(d, who) for d in [folder] + subs for who in [owner(d)] if who]
    return found


def _same_file(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _made(folder: str) -> List[str]:
    """Make ``folder`` and its missing parents; the ones made, deepest first (to remove them again)."""
    made, d = [], os.path.abspath(folder)
    while not os.path.isdir(d):
        made.append(d)
        d = os.path.dirname(d)
    os.makedirs(folder, exist_ok=True)
    return made


def _lock(folder: str, command: Optional[Sequence[str]] = None) -> Optional[int]:
    """The fd holding ``folder``'s lock with our name written in it, or None when another process holds it.
    Folders it had to make are removed again if they are still empty when the lock is given up."""
    made = _made(folder)
    path, deadline = lock_path(folder), time.time() + RETRY
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.time() > deadline:
                _remove_empty(made)
                return None
            time.sleep(0.05)
            continue
        if _same_file(path, fd):     # not unlinked by an owner releasing it meanwhile
            _sign(fd, command)
            _made_dirs[fd] = made
            return fd
        os.close(fd)


def _sign(fd: int, command: Optional[Sequence[str]] = None):
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": list(command or sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _unlock(folder: str, fd: int, made: bool = True):
    """Close ``fd`` (dropping its lock); the lock file goes first if we made it and it is still that file, and
    the folders made for it if nothing else was put there."""
    if made and _same_file(lock_path(folder), fd):
        try:
            os.unlink(lock_path(folder))
        except OSError:
            pass
    os.close(fd)
    _remove_empty(_made_dirs.pop(fd, []))


def _remove_empty(folders: List[str]):
    for d in folders:
        try:
            os.rmdir(d)
        except OSError:
            return


def acquire(folders: Sequence[str], command: Optional[Sequence[str]] = None):
    """For a launcher about to start ``command`` in ``folders``: ({folder: fd}, None) holding every folder's
    lock (none of their direct subfolders held either), or ({}, (folder, owner)) when another live process
    holds one. Give them back with :func:`release_all`."""
    held: Dict[str, int] = {}
    if fcntl is None:
        return held, None
    for folder in folders:
        fd = _lock(folder, command)
        busy = None if fd is not None else (folder, _describe(lock_path(folder)))
        if fd is not None:
            held[folder] = fd
            subs = sorted(e.path for e in os.scandir(folder) if e.is_dir())
            busy = next(((d, who) for d in subs for who in [owner(d)] if who), None)
        if busy:
            release_all(held)
            return {}, busy
    return held, None


def release_all(held: Dict[str, int]):
    for folder, fd in held.items():
        _unlock(folder, fd)
    held.clear()


def hand_down(held: Dict[str, int]) -> Tuple[Dict[str, str], Tuple[int, ...]]:
    """(environment, pass_fds) for the job's Popen: its runner adopts these locks (claim)."""
    if not held:
        return {}, ()
    return {INHERITED: json.dumps({os.path.realpath(f): fd for f, fd in held.items()})}, tuple(held.values())


def _inherited(real: str) -> Optional[int]:
    """The fd of ``real``'s lock handed down by our launcher (still that lock file, still locked by it)."""
    try:
        fd = int(json.loads(os.environ.get(INHERITED) or "{}")[real])
        if _same_file(lock_path(real), fd):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)      # ours already: the same open file
            return fd
    except (KeyError, ValueError, TypeError, OSError):
        pass
    return None


def claim(*folders: str):
    """Hold the run lock of every folder (created if missing) until this process exits; all or none.

    Raises :class:`RunFolderBusy` naming the owner when another live process holds one. A folder this
    process holds already is fine (a second call is a no-op); one the launcher handed down is adopted."""
    if fcntl is None:
        return
    taken = []
    for folder in folders:
        real = os.path.realpath(folder)
        if real in _held:
            continue
        fd = _inherited(real)
        made = fd is None
        if fd is None:
            fd = _lock(folder)
        else:
            _sign(fd)
        if fd is None:
            who = _describe(lock_path(folder))
            for t in taken:
                release(t)
            raise RunFolderBusy(f"{folder} is being trained into by another live process ({who}); wait for it "
                                "to finish or stop it, then rerun (or pick another output folder)")
        _held[real] = (fd, made)
        taken.append(real)
        for d in [folder] + [os.path.join(folder, sub) for sub in OUTPUT_SUBFOLDERS]:
            fileio.remove_leftover_temps(d)          # a killed writer's temp files


def release(*folders: str):
    """Give up these folders' locks (none named: every lock :func:`claim` took), and their files if we made
    them (removed while still held, so no one locks a dead name); a lock handed down by the launcher stays
    the launcher's to remove. At exit this happens by itself."""
    for real in [os.path.realpath(f) for f in folders] if folders else list(_held):
        if real in _held:
            _unlock(real, *_held.pop(real))


atexit.register(release)
