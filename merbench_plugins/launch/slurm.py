"""SLURM: array scripts (one task per job, or a pool of identical workers), submitted with a dependent
follow-up job when ``sbatch`` is on PATH; without sbatch the commands to submit them are printed."""
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..fileio import atomic_write_text
from .queue import CPU, Job, LaunchError

TASK_ID = "$SLURM_ARRAY_TASK_ID"
# a bash test: the task's run folder holds a run summary JSON (as queue.has_summary)
HAS_SUMMARY = ("[[ -n \"$(find \"$DIR\" -type f -name '*.json' ! -name '.*' "
               "\\( -name 'summary_*' -o -path '*/summary/*' \\) -print -quit)\" ]]")


@dataclass
class SlurmOptions:
    """What every array task asks for; ``gpus=0`` means CPU-only tasks; "" / 0: not asked (the cluster's default)."""
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


def header(job_name: str, opts: SlurmOptions, output: str, tasks: Optional[int] = None) -> List[str]:
    """``#!/bin/bash`` and the ``#SBATCH`` lines (an array of ``tasks`` tasks, if given)."""
    lines = [f"--job-name={job_name}"]
    lines += [f"--array=0-{tasks - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel else "")] if tasks else []
    lines += [f"--time={opts.time}"] if opts.time else []
    lines += [f"--cpus-per-task={opts.cpus}"] if opts.cpus else []
    lines += [f"--output={output}"] + ([f"--gres=gpu:{opts.gpus}"] if opts.gpus else [])
    lines += [f"--{k}={v}" for k, v in (("partition", opts.partition), ("account", opts.account),
                                        ("mem", opts.mem)) if v]
    return ["#!/bin/bash"] + [f"#SBATCH {line}" for line in lines + list(opts.extra)]


def task_command(argv: Sequence[str]) -> str:
    """A shell-quoted command line in which the word ``$SLURM_ARRAY_TASK_ID`` stays the task's id."""
    return " ".join(a if a == TASK_ID else shlex.quote(a) for a in argv)


def pool_script(job_name: str, argv: Sequence[str], workdir: str, output: str, opts: SlurmOptions,
                tasks: Optional[int] = None) -> str:
    """Every task (or the one job, ``tasks=None``) runs ``argv`` in ``workdir``; a word ``$SLURM_ARRAY_TASK_ID``
    in it becomes the task's id (a pool of workers sharing one queue, e.g. an Optuna study)."""
    return "\n".join(header(job_name, opts, output, tasks) + [f"cd {shlex.quote(workdir)}",
                                                              "exec " + task_command(argv)]) + "\n"


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
    return "\n".join(header(f"mp-{name}", opts, f"{out}/slurm-logs/%A_%a.out", len(jobs)) + body) + "\n"


def write_script(path: str, text: str) -> str:
    atomic_write_text(path, text)
    os.chmod(path, 0o755)
    return path


def script_path(out: str, name: str) -> str:
    return os.path.join(out, f"slurm_{name}_{time.strftime('%Y%m%d-%H%M%S')}.sbatch")


SUBMITTED, NO_SBATCH, REFUSED = "submitted", "no sbatch", "refused"


def submit(script: str, name: str, opts: SlurmOptions, then: Optional[List[str]] = None,
           then_script: Optional[str] = None, then_what: str = "", what: str = "array job", say=print) -> str:
    """sbatch the array, then a job that runs once it has ended: the command ``then`` (``--wrap``) or the
    script ``then_script``. Returns SUBMITTED, NO_SBATCH (the commands to run were printed) or REFUSED."""
    follow = [] if then_script else ["--job-name", f"mp-{name}-after", "--time", "00:30:00", "--output",
                                     os.path.join(os.path.dirname(script), "slurm-logs", "after_%j.out"),
                                     *opts.submit_flags()]
    tail = [then_script] if then_script else ["--wrap", shlex.join(then)] if then else []
    if shutil.which("sbatch") is None:
        say("sbatch not found here: nothing submitted; on the cluster's login node run:")
        say(f"  jid=$(sbatch --parsable {shlex.quote(script)})")
        if tail:
            say(f"  sbatch --dependency=afterany:$jid {shlex.join(follow + tail)}")
        return NO_SBATCH
    proc = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if proc.returncode != 0:
        say(f"error: sbatch refused {script}: {proc.stderr.strip() or proc.stdout.strip()}")
        return REFUSED
    job_id = proc.stdout.strip().split(";")[0]
    say(f"submitted {what} {job_id}")
    if tail:
        proc = subprocess.run(["sbatch", "--parsable", f"--dependency=afterany:{job_id}", *follow, *tail],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            say(f"error: sbatch refused the follow-up job ({proc.stderr.strip()}); once the array has ended run: "
                f"{shlex.join(then) if then else 'sbatch ' + then_script}")
            return REFUSED
        say(f"submitted job {proc.stdout.strip().split(';')[0]} after it{then_what}")
    return SUBMITTED
