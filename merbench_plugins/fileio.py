"""Atomic file writes: a reader (or a crash) never sees a half-written file, and nothing is overwritten
by accident. One helper for every writer in the package (results, caches, plots, the installer), one
name for their temp files (``.NAME.XXXXXXXX.tmp``: recognisable, so a later run can remove the ones a
killed run left), one check that an output folder can be written before any work starts, and a run's
files staged and moved into place together."""
import contextlib
import csv
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

# ``.summary.json.k3j_x9q2.tmp`` / ``.result.npz.abcd1234.tmp.npz``: the temp file of ``summary.json`` ...
# (mkstemp's 8 random characters); ``.tmp-XXXXXXXX...``: the name earlier versions gave them
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$|^\.tmp-[a-z0-9_]{8}")


def _umask_mode() -> int:
    """0o666 minus the umask: what open() would have given (mkstemp files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_beside(path: str, suffix: str = ""):
    """(fd, temp path) of a new temp file in ``path``'s folder, named after it (see :data:`TEMP_NAME`);
    ``suffix`` goes last (numpy and matplotlib pick the format by the extension)."""
    d, name = os.path.split(os.path.abspath(path))
    return tempfile.mkstemp(dir=d, prefix=f".{name}.", suffix=".tmp" + suffix)


def is_temp_of(name: str, targets: Optional[Sequence[str]] = None) -> bool:
    """``name`` is one of our temp files (of one of ``targets``, when given)."""
    m = TEMP_NAME.match(name)
    return bool(m) and (targets is None or m.group("target") in targets)


def leftover_temps(folder: str, targets: Optional[Sequence[str]] = None) -> List[str]:
    """Our temp files in ``folder``: left by a writer killed before its rename. Only call this where no live
    writer of ours can be at work (e.g. under the folder's run lock, runlock.py)."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [os.path.join(folder, f) for f in names if is_temp_of(f, targets) and os.path.isfile(os.path.join(folder, f))]


def remove_leftover_temps(folder: str, targets: Optional[Sequence[str]] = None) -> List[str]:
    """Delete what :func:`leftover_temps` finds; returns the paths removed."""
    removed = []
    for path in leftover_temps(folder, targets):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yields a temp path beside ``path``; on success it replaces ``path`` (readable per umask), else vanishes."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = temp_beside(path, suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str, text: str):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def atomic_save_npz(path: str, compress: bool = True, **arrays):
    with atomic_path(path, ".npz") as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)


class OutputError(ValueError):
    """An output folder that cannot be written; found before any work starts."""


def ensure_writable_dir(path: str, flag: str = "--out") -> str:
    """Prove that ``path`` can be created (where missing) and written, before any work, leaving nothing behind:
    a temporary folder is made and removed in ``path`` or, where it does not exist yet, in its nearest
    existing parent. Else :class:`OutputError`, one line naming the folder and the flag that chose it."""
    probe_in = os.path.abspath(path)
    while not os.path.exists(probe_in):
        probe_in = os.path.dirname(probe_in)
    try:
        if not os.path.isdir(probe_in):
            raise NotADirectoryError(20, f"{probe_in} is a file")
        os.rmdir(tempfile.mkdtemp(dir=probe_in, prefix=".tmp-writable-"))
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {path} ({exc.strerror or exc}); choose another {flag} "
                          f"or make it writable") from None
    return path


STAGING_PREFIX = ".staging-"


class StagedOutputs:
    """The files of one run, written into a hidden folder beside their place and moved there together at the
    end, summaries last: a run that dies leaves none of its files in place, only its staging folder, which
    the next run in the same folder removes (its owner's pid is gone). Before moving, the staging folder
    lists the files it is about to place (``manifest.json``), so a death while moving is undone as well.

        with StagedOutputs(out) as stage:
            np.savez(stage.path("result/test1.npz"), ...)      # written under OUT/.staging-HOST-PID-N/result/
            record(stage.final("result/test1.npz"))             # OUT/result/test1.npz, where it will be
    """

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.dir = os.path.join(self.out, f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{time.time_ns()}")

    def __enter__(self):
        remove_stale_staging(self.out)
        os.makedirs(self.dir)
        return self

    def path(self, relative: str) -> str:
        """Where to write the file that will end up at OUT/``relative`` (its folders made)."""
        staged = os.path.join(self.dir, self._relative(relative))
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        return staged

    def new(self, relative: str) -> Tuple[str, str]:
        """(where to write, where it will be) for a new file at OUT/``relative``: never an existing file's name
        (``-1``, ``-2``, ... before the extension if needed), staged or in place."""
        root, ext = os.path.splitext(self._relative(relative))
        k, rel = 1, root + ext
        while os.path.exists(self.final(rel)) or os.path.exists(os.path.join(self.dir, rel)):
            rel, k = f"{root}-{k}{ext}", k + 1
        return self.path(rel), self.final(rel)

    def final(self, relative: str) -> str:
        """The absolute path OUT/``relative`` (or a staged path's) will have once the run is complete."""
        return os.path.join(self.out, self._relative(relative))

    def _relative(self, path: str) -> str:
        path = os.path.abspath(os.path.join(self.out, path))
        for root in (self.dir, self.out):
            rel = os.path.relpath(path, root)
            if not rel.startswith(os.pardir):
                return rel
        raise ValueError(f"{path} is outside the run's output folder {self.out}")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def commit(self):
        """Move every staged file into place (summaries last), then remove the staging folder."""
        files = sorted((os.path.relpath(os.path.join(d, f), self.dir) for d, _, fs in os.walk(self.dir) for f in fs),
                       key=lambda rel: (os.path.basename(rel).startswith("summary") or rel.startswith("summary"), rel))
        files = [f for f in files if f != MANIFEST]
        atomic_write_text(os.path.join(self.dir, MANIFEST), json.dumps([os.path.join(self.out, f) for f in files]))
        for rel in files:
            final = os.path.join(self.out, rel)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(os.path.join(self.dir, rel), final)
        shutil.rmtree(self.dir, ignore_errors=True)


MANIFEST = "manifest.json"


def remove_stale_staging(out: str) -> List[str]:
    """Remove the staging folders in ``out`` whose process (on this host) is gone, and the files a dead run had
    already moved into place (listed in its manifest); returns what was removed. Others' folders stay."""
    removed = []
    host = socket.gethostname()
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if not name.startswith(STAGING_PREFIX):
            continue
        owner_host, _, rest = name[len(STAGING_PREFIX):].rpartition("-")[0].rpartition("-")
        try:
            pid = int(rest)
        except ValueError:
            continue
        if owner_host != host or pid_alive(pid):
            continue
        folder = os.path.join(out, name)
        manifest = os.path.join(folder, MANIFEST)
        if os.path.isfile(manifest):            # it died while moving its files into place
            with open(manifest) as f:
                listed = json.load(f)
            staged = [os.path.exists(os.path.join(folder, os.path.relpath(p, out))) for p in listed]
            if any(staged):                     # not all placed (the summaries go last): undo the ones that were
                for path, still_staged in zip(listed, staged):
                    if not still_staged and os.path.isfile(path):
                        os.unlink(path)
                        removed.append(path)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def pid_alive(pid: int) -> bool:
    """A process with this pid exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def csv_text(headers, rows) -> str:
    """CSV text; None cells are empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows(["" if v is None else v for v in r] for r in rows)
    return buf.getvalue()


def write_csv(path: str, headers, rows) -> str:
    atomic_write_text(path, csv_text(headers, rows))
    return path
