"""Atomic file writes: a reader (or a crash) never sees a half-written file, and nothing is overwritten
by accident. One helper for every writer in the package (results, caches, plots)."""
import contextlib
import os
import tempfile

import numpy as np


def _umask_mode() -> int:
    """0o666 minus the umask: what open() would have given (mkstemp files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yields a temp path beside ``path``; on success it replaces ``path`` (readable per umask), else vanishes."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str, text: str):
    with atomic_path(path, os.path.basename(path)) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def atomic_save_npz(path: str, compress: bool = True, **arrays):
    with atomic_path(path, ".npz") as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
