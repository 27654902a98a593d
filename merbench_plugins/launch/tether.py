"""A job's command, tied to the launcher's life: ``python -I tether.py LAUNCHER_PID [--poll] CMD ARGS...``.

Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, then ``exec CMD`` (the job *is* this process from then on,
its exit status the launcher's to read): when the launcher dies, even by ``kill -9``, the kernel kills
the job. Elsewhere (or ``--poll``): this process stays as the job's parent, checks every half second
that the launcher is still its parent and, once it is not, kills the job's process group. Run as a
script with ``-I`` (only the standard library; the launcher's folder is not on its path).
"""
import os
import signal
import sys
import time

POLL = 0.5       # seconds between checks of the launcher (fallback)


def die_with_parent() -> bool:
    """Linux: the kernel sends SIGKILL to this process when its parent dies; False where it cannot."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL)) == 0   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def run(command):
    """Exec ``command``; never returns."""
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"could not start {command[0]}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        os._exit(127)


def watch(command, launcher: int) -> int:
    """Fallback: run ``command`` as a child; kill its process group when the launcher is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)       # the launcher signals the whole group: the job decides
    child = os.fork()
    if child == 0:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        run(command)
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if os.getppid() != launcher:
            os.killpg(os.getpgrp(), signal.SIGKILL)      # the job, what it started, and this watcher
        time.sleep(POLL)
    if os.WIFSIGNALED(status):                            # the launcher reads the job's own fate
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def main(argv):
    launcher, argv = int(argv[0]), argv[1:]
    poll = argv[:1] == ["--poll"]
    command = argv[1:] if poll else argv
    if not poll and die_with_parent():
        if os.getppid() != launcher:          # the launcher died before prctl took effect
            return 1
        run(command)
    if os.getppid() != launcher:
        return 1
    return watch(command, launcher)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
