"""Jobs and the local queue: one job per GPU at a time (or JOBS on CPU), resume, logs, JSON metadata.

A job is one command run in its own folder: ``run_dir/run.log`` holds its output and ``run_dir/<meta>``
(JSON) says what it was. A job is finished when ``finished(run_dir)`` holds (by default: a run
summary JSON is there); a finished job is skipped, a crashed one is run again and its old log kept as
``run.log.1``, ``run.log.2``, ...; a job whose run folder another live process holds (runlock) is skipped
with its owner named.

Jobs die with the launcher: each runs in its own process group (Ctrl-C, SIGTERM or SIGHUP to the launcher:
SIGTERM to every group, SIGKILL after ``grace`` seconds) and is tethered to the launcher's life
(tether.py: even ``kill -9`` of the launcher alone kills them).
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, TextIO

from .. import runlock
from ..fileio import atomic_write_text

CPU = "cpu"
TETHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tether.py")
SKIPPED = "skipped"     # run_one: another live process holds the job's run folder


class LaunchError(Exception):
    """Bad settings; the message says what and how to fix it. The CLIs print it and exit 2."""


@dataclass
class Job:
    """One command in one folder; ``device`` is a slot ("cpu" or a GPU id), set by :func:`deal`."""
    name: str
    command: List[str]
    run_dir: str
    device: str = CPU
    workdir: str = "."
    label: str = ""                                     # shown after the name, e.g. "seed=3"
    meta: Dict[str, object] = field(default_factory=dict)   # written as JSON before the run
    meta_name: Optional[str] = "job.json"               # None: no metadata, no command.txt (shared folders)
    env: Dict[str, str] = field(default_factory=dict)   # on top of os.environ
    slot: int = 0                                       # which queue runs it
    log_name: str = "run.log"
    timeout: Optional[float] = None                     # seconds; then killed (exit -9)
    lock_dirs: Sequence[str] = ()                       # run folders its command claims (runlock): busy -> skipped

    @property
    def log(self) -> str:
        return os.path.join(self.run_dir, self.log_name)

    def shell_line(self) -> str:
        """``cd WORKDIR && COMMAND``, shell-quoted: what the listing shows and command.txt holds."""
        return f"cd {shlex.quote(self.workdir)} && {quote_env(self.env)}{shlex.join(self.command)}"


def quote_env(env: Dict[str, str]) -> str:
    """``env K=V ... `` (shell-quoted) to put before a command; "" for no variables."""
    return "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " if env else ""


def device_label(device: str) -> str:
    return CPU if device == CPU else f"gpu:{device}"


def parse_slots(gpus: Optional[str], jobs: str = "1") -> List[str]:
    """GPUS ("0,1"; empty or "cpu": CPU) and JOBS -> the slots, one job at a time on each."""
    if gpus is not None and gpus.replace(" ", "") not in ("", CPU):
        slots = gpus.replace(" ", "").split(",")
        if not all(s.isdigit() for s in slots):
            raise LaunchError(f"GPUS must be comma-separated GPU ids (or empty/cpu for CPU), got '{gpus}'")
        return slots
    if not (jobs.isdigit() and int(jobs) > 0):
        raise LaunchError(f"JOBS must be a positive integer, got '{jobs}'")
    return [CPU] * int(jobs)


def has_summary(run_dir: str) -> bool:
    """A run summary JSON is in ``run_dir`` (standalone: summary_*.json; MERBench: */summary/*.json)."""
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        inside_summary = os.path.basename(root) == "summary"
        if any(f.endswith(".json") and not f.startswith(".") and (f.startswith("summary_") or inside_summary)
               for f in files):
            return True
    return False


def write_json(path: str, obj) -> str:
    """``obj`` as JSON, atomically (any string survives: quotes, tabs, newlines)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    return path


def rotate_log(path: str) -> Optional[str]:
    """Keep an earlier attempt's log as path.1, path.2, ...; returns where it went."""
    if not os.path.exists(path):
        return None
    k = 1
    while os.path.exists(f"{path}.{k}"):
        k += 1
    os.replace(path, f"{path}.{k}")
    return f"{path}.{k}"


def deal(jobs: List[Job], slots: Sequence[str]) -> List[Job]:
    """Round-robin: the k-th job goes to slot k % len(slots) (its device is fixed from here on)."""
    for k, job in enumerate(jobs):
        job.slot, job.device = k % len(slots), slots[k % len(slots)]
    return jobs


def write_meta(job: Job):
    """The job's folder with its JSON metadata and command.txt (a shell line to rerun it by hand)."""
    os.makedirs(job.run_dir, exist_ok=True)
    if job.meta_name is None:
        return
    write_json(os.path.join(job.run_dir, job.meta_name), dict(job.meta, device=job.device, workdir=job.workdir,
                                                               command=list(job.command), env=dict(job.env)))
    atomic_write_text(os.path.join(job.run_dir, "command.txt"), job.shell_line() + "\n")


def spawn(command: List[str], **popen) -> subprocess.Popen:
    """Popen of ``command`` in its own process group, tethered to this process (dies with it, ``kill -9``
    included; tether.py). Not POSIX: a plain Popen."""
    if os.name != "posix":
        return subprocess.Popen(command, **popen)
    return subprocess.Popen([sys.executable, "-I", TETHER, str(os.getpid()), *command], start_new_session=True,
                            **popen)


def signal_group(proc: subprocess.Popen, sig: int):
    """``sig`` to the job's process group (what the job started too); nothing if it is gone."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: str, lines: int = 5) -> List[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


class Queue:
    """Runs jobs, one queue per slot, the slots in parallel; ``run()`` returns the failed (job, exit code).

    ``finished(run_dir)``: a job already finished is skipped, one that exits 0 without finishing fails
    (None: exit 0 is success, nothing is skipped). A job whose ``lock_dirs`` another live process holds is
    skipped too, with a line naming the owner, and listed in ``skipped``. ``on_tick()`` runs every ``tick``
    seconds while jobs run (progress lines). On Ctrl-C / SIGTERM / SIGHUP the jobs' process groups get
    SIGTERM, then SIGKILL after ``grace`` seconds. ``quiet``: no start/done/FAIL lines (the caller reports).
    """

    def __init__(self, jobs: List[Job], finished: Optional[Callable[[str], bool]] = has_summary, threads: str = "",
                 out: TextIO = None, on_tick: Optional[Callable[[], None]] = None, tick: float = 2.0,
                 grace: float = 60.0, quiet: bool = False):
        self.jobs, self.finished, self.threads, self.quiet = jobs, finished, threads, quiet
        self.on_tick, self.tick, self.grace = on_tick, tick, grace
        self.out = out or sys.stdout
        self.failed, self.skipped, self.procs, self.lock = [], [], {}, threading.Lock()
        self.stopping = False

    def say(self, *lines: str):
        if self.quiet:
            return
        with self.lock:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()

    def env(self, job: Job) -> dict:
        env = dict(os.environ, **job.env)
        if job.device == CPU and self.threads:
            env.update(OMP_NUM_THREADS=self.threads, MKL_NUM_THREADS=self.threads)
        return env

    def run_one(self, job: Job):
        """Exit code of the job (None: finished meanwhile by someone else; SKIPPED: someone else trains it).
        The job's run folders are locked from before the check until it exits (its runner adopts the locks)."""
        if self.finished is not None and self.finished(job.run_dir):
            return None
        held, busy = runlock.acquire(job.lock_dirs, job.command)
        if busy:
            self.say(f"skip  {job.name:<28} {job.label:<9} another live process trains {busy[0]} ({busy[1]})")
            return SKIPPED
        try:
            if held and self.finished is not None and self.finished(job.run_dir):
                return None            # finished by the process whose lock we waited for
            return self.start(job, held)
        finally:
            runlock.release_all(held)

    def start(self, job: Job, held: Dict[str, int]) -> int:
        write_meta(job)
        rotate_log(job.log)
        self.say(f"start {job.name:<28} {job.label:<9} {device_label(job.device):<6} log: {job.log}")
        start = time.time()
        with open(job.log, "w") as log:
            env, fds = runlock.hand_down(held)
            proc = spawn(job.command, cwd=job.workdir, env=dict(self.env(job), **env), stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=fds)
            with self.lock:
                self.procs[job.slot] = proc
            try:
                rc = proc.wait(timeout=job.timeout)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                rc = proc.wait()
                log.write(f"\nkilled: still running after {job.timeout:g}s (the job's time limit)\n")
            with self.lock:
                self.procs.pop(job.slot, None)
        if rc == 0 and self.finished is not None and not self.finished(job.run_dir):
            rc = 1
            with open(job.log, "a") as log:
                log.write(f"the run exited 0 but left no result in {job.run_dir}\n")
        secs = int(time.time() - start)
        if rc == 0:
            self.say(f"done  {job.name:<28} {job.label:<9} in {secs}s")
        else:
            self.say(f"FAIL  {job.name:<28} {job.label:<9} exit {rc} after {secs}s; last lines of {job.log}:",
                     *("      " + line for line in tail(job.log)))
        return rc

    def run_slot(self, jobs: List[Job]):
        for job in jobs:
            if self.stopping:
                return
            try:
                rc = self.run_one(job)
            except OSError as exc:   # e.g. the command does not exist
                self.say(f"FAIL  {job.name:<28} {job.label:<9} could not start: {exc}")
                rc = 127
            with self.lock:
                if rc == SKIPPED:
                    self.skipped.append(job)
                elif rc:
                    self.failed.append((job, rc))

    def stop(self):
        """SIGTERM to the running jobs' process groups, SIGKILL to those still there after ``grace`` seconds."""
        self.stopping = True
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            signal_group(proc, signal.SIGTERM)
        deadline = time.time() + self.grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(proc, signal.SIGKILL)       # the job, or what it left running in its group

    def run(self) -> List[tuple]:
        slots: Dict[int, List[Job]] = {}
        for job in self.jobs:
            slots.setdefault(job.slot, []).append(job)
        workers = [threading.Thread(target=self.run_slot, args=(js,), daemon=True) for js in slots.values()]
        main = threading.current_thread() is threading.main_thread()
        handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if main else {}
        for sig, handler in handlers.items():    # SIGTERM (scancel, kill), SIGHUP (closed terminal): stop the jobs
            if sig != signal.SIGINT and handler != signal.SIG_IGN:     # nohup's SIGHUP stays ignored
                signal.signal(sig, _raise_interrupt)
        try:
            for w in workers:
                w.start()
            next_tick = time.time()
            while any(w.is_alive() for w in workers):
                if self.on_tick is not None and time.time() >= next_tick:
                    self.on_tick()
                    next_tick = time.time() + self.tick
                for w in workers:
                    w.join(0.1)
            if self.on_tick is not None:
                self.on_tick()
        except KeyboardInterrupt:
            for sig in handlers:                 # a second Ctrl-C must not cut the shutdown short
                signal.signal(sig, signal.SIG_IGN)
            self.stop()
            for w in workers:
                w.join()
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        order = {id(j): k for k, j in enumerate(self.jobs)}
        return sorted(self.failed, key=lambda f: order[id(f[0])])


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_local(jobs: List[Job], **kwargs) -> List[tuple]:
    """Run ``jobs`` (already dealt to slots) on this machine; the failed (job, exit code)."""
    return Queue(jobs, **kwargs).run()
