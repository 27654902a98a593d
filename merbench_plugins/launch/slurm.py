"""SLURM: one array task per job, written as a bash script; submitted (plus a dependent follow-up job)
when ``sbatch`` is on PATH, else the commands to submit it are printed."""
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..fileio import atomic_write_text
from .queue import CPU, Job, LaunchError

# a bash test: the task's run folder holds a run summary JSON (as queue.has_summary)
HAS_SUMMARY = ("[[ -n \"$(find \"$DIR\" -type f -name '*.json' ! -name '.*' "
               "\\( -name 'summary_*' -o -path '*/summary/*' \\) -print -quit)\" ]]")


@dataclass
class SlurmOptions:
    """What every array task asks for; ``gpus=0`` means CPU-only tasks."""
    partition: str = ""
    time: str = "04:00:00"
    gpus: int = 1
    cpus: int = 4
    mem: str = ""
    account: str = ""
    max_parallel: str = ""                                  # the array throttle (%N)
    extra: List[str] = field(default_factory=list)          # more "#SBATCH" arguments

    @classmethod
    def from_env(cls, env=None) -> "SlurmOptions":
        """SLURM_PARTITION, SLURM_TIME, SLURM_GPUS, SLURM_CPUS, SLURM_MEM, SLURM_ACCOUNT, SLURM_MAX_PARALLEL."""
        env = os.environ if env is None else env
        opts = cls(partition=env.get("SLURM_PARTITION", ""), time=env.get("SLURM_TIME") or cls.time,
                   mem=env.get("SLURM_MEM", ""), account=env.get("SLURM_ACCOUNT", ""),
                   max_parallel=env.get("SLURM_MAX_PARALLEL", ""))
        for name in ("gpus", "cpus"):
            value = env.get(f"SLURM_{name.upper()}") or str(getattr(cls, name))
            if not value.isdigit():
                raise LaunchError(f"SLURM_{name.upper()} must be a non-negative integer, got '{value}'")
            setattr(opts, name, int(value))
        return opts

    @property
    def device(self) -> str:
        """The device every task uses: GPU 0 of its own allocation, or its CPUs."""
        return CPU if self.gpus == 0 else "0"

    def submit_flags(self) -> List[str]:
        return (["--partition", self.partition] if self.partition else []) + \
               (["--account", self.account] if self.account else [])


def header(name: str, n: int, out: str, opts: SlurmOptions) -> List[str]:
    lines = [f"--job-name=mp-{name}", f"--array=0-{n - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel else ""),
             f"--time={opts.time}", f"--cpus-per-task={opts.cpus}", f"--output={out}/slurm-logs/%A_%a.out"]
    lines += [f"--gres=gpu:{opts.gpus}"] if opts.gpus else []
    lines += [f"--{k}={v}" for k, v in (("partition", opts.partition), ("account", opts.account),
                                        ("mem", opts.mem)) if v]
    return ["#!/bin/bash"] + [f"#SBATCH {line}" for line in lines + list(opts.extra)]


def array_script(name: str, jobs: Sequence[Job], out: str, opts: SlurmOptions, finished: Optional[str] = HAS_SUMMARY,
                 about: str = "") -> str:
    """The sbatch script: task k runs jobs[k] in its folder, its output in run.log (an older one kept as
    run.log.1, ...); with ``finished`` (a bash test on $DIR), a finished task exits at once."""
    q = shlex.quote
    dirs = [f"  {k}) DIR={q(job.run_dir)} ;;  # {job.name} {job.label}".rstrip() for k, job in enumerate(jobs)]
    cmds = [f"  {k}) {job.shell_line()} ;;"
            for k, job in enumerate(jobs)]
    body = [f"# written by {name} --slurm: one array task per job{about}; resubmitting it is safe.",
            "set -euo pipefail",
            'case "$SLURM_ARRAY_TASK_ID" in', *dirs,
            '  *) echo "no job $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac",
            'mkdir -p "$DIR"']
    if finished:
        body += [f'if {finished}; then', '  echo "finished already: $DIR"; exit 0', "fi"]
    body += ['LOG="$DIR/run.log"; k=1',
             'if [[ -e "$LOG" ]]; then while [[ -e "$LOG.$k" ]]; do k=$((k + 1)); done; mv -f "$LOG" "$LOG.$k"; fi',
             'echo "$(hostname): $DIR (log: $LOG)"',
             'case "$SLURM_ARRAY_TASK_ID" in', *cmds, 'esac > "$LOG" 2>&1']
    return "\n".join(header(name, len(jobs), out, opts) + body) + "\n"


def write_script(path: str, text: str) -> str:
    atomic_write_text(path, text)
    os.chmod(path, 0o755)
    return path


def script_path(out: str, name: str) -> str:
    return os.path.join(out, f"slurm_{name}_{time.strftime('%Y%m%d-%H%M%S')}.sbatch")


def submit(script: str, name: str, opts: SlurmOptions, then: Optional[List[str]] = None, then_what: str = "",
           say=print) -> int:
    """sbatch the array, then (``then``, a command) a job that runs once it has ended; 0 when submitted
    or when there is no sbatch here (the commands to run are printed), 1 when sbatch refused."""
    follow = ["--job-name", f"mp-{name}-after", "--time", "00:30:00",
              "--output", os.path.join(os.path.dirname(script), "slurm-logs", "after_%j.out"), *opts.submit_flags()]
    if shutil.which("sbatch") is None:
        say("sbatch not found here; on the cluster's login node run:")
        say(f"  jid=$(sbatch --parsable {shlex.quote(script)})")
        if then:
            say(f"  sbatch --dependency=afterany:$jid {shlex.join(follow)} --wrap {shlex.quote(shlex.join(then))}")
        return 0
    proc = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if proc.returncode != 0:
        say(f"error: sbatch refused {script}: {proc.stderr.strip() or proc.stdout.strip()}")
        return 1
    job_id = proc.stdout.strip().split(";")[0]
    say(f"submitted array job {job_id}")
    if then:
        proc = subprocess.run(["sbatch", "--parsable", f"--dependency=afterany:{job_id}", *follow,
                               "--wrap", shlex.join(then)], capture_output=True, text=True)
        if proc.returncode != 0:
            say(f"error: sbatch refused the follow-up job ({proc.stderr.strip()}); once the array has ended run: "
                f"{shlex.join(then)}")
            return 1
        say(f"submitted job {proc.stdout.strip().split(';')[0]} after the array{then_what}")
    return 0
