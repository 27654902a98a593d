"""`python -m merbench_plugins search`: MERBench's hyperparameter protocol as one resumable command.

MERBench picks a model's settings by random search over its ``model-tune.yaml`` grid, keeps the
best cross-validation score, then re-runs that setting over several seeds and averages. This does
the same on Optuna (the optional ``search`` extra):

* each trial samples one setting from the grid (every list = a categorical choice; scalars and
  one-value lists are fixed), writes it as a ``--hyper_path`` YAML and runs the runner in a child
  process (standalone ``python -m merbench_plugins train`` or MERBench's ``main-robust.py``), so a
  crash, an OOM or a NaN kills only that trial. The objective is the runner's cross-validation
  metric (``cv.emoval``; ``cv.f1`` when it has no emoval), never a test set.
* ``--sampler random`` (default) is MERBench's uniform random pick, without replacement until the
  grid is used up; ``--sampler tpe`` is Optuna's TPE. A setting that already COMPLETEd is not
  trained again: the new trial copies its result and says ``same as #k`` (duplicates are skipped
  explicitly); once every setting of the grid is explored the workers stop.
* the study lives in an RDB storage (default ``sqlite:///OUT/study.db``): rerunning the command
  resumes it, ``--trials N`` is the study's total, finished trials are never lost. Optuna's RDB
  storage hands each trial to exactly one worker. Trials left RUNNING by a dead worker are marked
  FAIL and their setting is queued again: at once when the worker ran on this host (its pid is
  gone), after ``2 x --heartbeat`` s for a trial that never recorded an owner, else after ``2 x
  --heartbeat`` seconds without a heartbeat. A lost trial never counts towards ``--trials``; a
  setting whose worker died more than twice (Ctrl-C not counted) is given up, reported, and never
  sampled again. A setting running in one trial is taken: a twin waits for it and reuses its result.
  Two workers that start a trial at the same instant when one trial is left: the later trial number
  gives its trial back unrun (FAIL + user attribute ``surplus``, left out of tables and counts).
* the study stores its whole configuration (model, metric, grid, --data/--merbench, --seed and the
  runner flags after ``--``): a rerun with any other refuses to resume (``--new`` starts over), and
  the seed re-runs are reused only when made with the same. Grid settings after ``--`` are refused.
* failed trials (non-zero exit, NaN metric, timeout) are FAIL with the error tail in their user
  attributes and count towards ``--trials``; a diverging run (the runner's ``FloatingPointError:
  loss became nan/inf`` or "no epoch produced a finite eval metric") is PRUNED, as is a trial that
  ``--pruner median`` stops on its per-fold eval metrics.
* at the end: a table of every trial, the best setting re-run over ``--seeds`` fresh seeds, a
  mean +- std table (markdown + CSV), ``best.yaml`` in MERBench's ``--hyper_path`` format and an
  fANOVA importance plot (matplotlib extra).

    python -m merbench_plugins search --model attention_robust_v2 --data DATA --trials 40 --workers 2 \\
        --gpus 0,1 --seeds 5 --out search/ -- --feat_type utt --epochs 100

This module is the worker side (a trial = one runner in a child process; the objective; the worker
loop), the orchestration and the command line; the study/sampler side (storage, samplers, grid,
budget, tables) is :mod:`merbench_plugins.search.study`. Local workers run on the launcher's
queue and the SLURM worker array is a launcher script (:mod:`merbench_plugins.launch`).
"""
import argparse
import io
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import yaml

from ..cli import refuse
from ..fileio import OutputError, ensure_writable_dir
from ..launch import queue, slurm
from ..launch.queue import CPU, Job
from ..launch.tether import die_with_parent
from ..evaluate import report
from .study import (import_optuna, default_storage, open_storage, is_lost, trial_params, gave_up_settings,
                           requeue, fail_stale_trials, make_sampler, load_grid, grid_size, setting_key, budget,
                           is_surplus, grid_exhausted, short_params, progress_line, best_trial, trials_table,
                           importance_plot)
from .study import MAX_RETRIES  # noqa: F401  (tests and callers read it here)

METRICS = ("auto", "emoval", "f1", "acc", "val_mse")
# flags the search sets itself on every runner command line
RESERVED_FLAGS = ("--model", "--hyper_path", "--tune_yaml", "--out", "--save_root", "--seed", "--seeds",
                  "--parallel_seeds")
DIVERGED = re.compile(r"FloatingPointError|loss became (?:nan|-?inf)|no epoch produced a finite eval metric")
FOLD_LINE = re.compile(r"fold (\d+)(?:/\d+)?: best epoch \d+, eval (\w+) (-?(?:[0-9.]+(?:e-?\d+)?|nan|inf))")
# the runners' per-fold selection metric -> the search metric it is (``val`` is -val_mse)
FOLD_METRICS = {"emoval": "emoval", "emo": "f1", "val": "val_mse"}
TWIN_POLL = 2.0                      # s between checks while an earlier trial trains the same setting


class TrialFailed(Exception):
    """The runner failed for this setting: record FAIL and go on."""


# ---------------------------------------------------------------- running the runner

def child_main(argv):
    """Entry of a trial's child process: ``PARENT_PID module|script TARGET ARGS...``."""
    import runpy
    parent, kind, target, rest = int(argv[0]), argv[1], argv[2], argv[3:]
    die_with_parent()                   # Linux: SIGKILL of the worker must not leave its runner training
    if os.getppid() != parent:          # the worker died before prctl took effect
        sys.exit(1)
    sys.argv = [target] + rest
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")


def child_env():
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def runner_command(cfg, hyper_path: str, run_dir: str, seed: int, gpu: Optional[int]):
    """(argv, cwd) of one training run: standalone runner or MERBench's main-robust.py."""
    boot = ["-c", "import sys; from merbench_plugins.search.runner import child_main; child_main(sys.argv[1:])",
            str(os.getpid())]
    if cfg.merbench:
        cmd = boot + ["script", "main-robust.py", "--model", cfg.model, "--hyper_path", hyper_path,
                      "--save_root", os.path.join(run_dir, "saved"), "--seed", str(seed)]
        if gpu is not None:
            cmd += ["--gpu", str(gpu)]
        cwd = cfg.merbench
    else:
        cmd = boot + ["module", "merbench_plugins", "train", cfg.data, "--model", cfg.model,
                      "--hyper_path", hyper_path, "--out", run_dir, "--seed", str(seed)]
        if gpu is not None:
            cmd += ["--device", f"cuda:{gpu}"]
        cwd = None
    return [sys.executable] + cmd + list(cfg.runner_args), cwd


def find_summary(run_dir: str, cfg) -> Optional[str]:
    import glob
    pattern = os.path.join(run_dir, "saved*", "summary", "*.json") if cfg.merbench else \
        os.path.join(run_dir, f"summary_{cfg.model}_*.json")
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    return found[-1] if found else None


def error_tail(text: str, lines: int = 25, chars: int = 3000) -> str:
    """The end of a log without progress-bar noise."""
    keep = [ln for ln in text.splitlines() if ln.strip() and "it/s]" not in ln and "s/it]" not in ln]
    return "\n".join(keep[-lines:])[-chars:]


def run_training(cfg, hyper_path: str, run_dir: str, seed: int, gpu: Optional[int], on_line=None,
                 timeout: Optional[float] = None):
    """Run one training in a child process, log to run_dir/log.txt; returns (returncode, log text).

    ``on_line(line)`` may return True to stop the run (pruning); KeyboardInterrupt kills the child."""
    cmd, cwd = runner_command(cfg, hyper_path, run_dir, seed, gpu)
    log_path = os.path.join(run_dir, "log.txt")
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    expired = []

    def expire():
        expired.append(True)
        proc.kill()

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    buf = io.StringIO()
    try:
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
            for line in proc.stdout:
                log.write(line)
                log.flush()
                buf.write(line)
                if on_line is not None and on_line(line):
                    proc.kill()
                    break
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer:
            timer.cancel()
    return proc.returncode, buf.getvalue(), bool(expired)


def read_cv(summary_path: str) -> dict:
    with open(summary_path) as f:
        return json.load(f)


def objective_value(cv: dict, metric: str):
    """(name, value) of the objective from a summary's ``cv`` block; value None when missing/NaN."""
    name = metric
    if metric == "auto":
        name = "emoval" if "emoval" in cv else "f1"     # present but NaN/null -> the trial fails
    value = cv.get(name)
    if value is None or not math.isfinite(float(value)):
        return name, None
    return name, float(value)


def write_hyper_yaml(path: str, model: str, settings: dict, comment: str = "") -> str:
    text = (comment + "\n" if comment else "") + yaml.safe_dump({model: settings}, sort_keys=False,
                                                                 default_flow_style=False)
    report.atomic_write_text(path, text)
    return path


# ---------------------------------------------------------------- the worker

def make_objective(optuna, cfg, space, fixed, gpu, current):
    keys = sorted(space)
    wanted = {"emoval", "f1"} if cfg.metric == "auto" else {cfg.metric}    # fold lines the pruner reads

    def objective(trial):
        current["number"] = trial.number
        trial.set_user_attr("worker_host", socket.gethostname())
        trial.set_user_attr("worker_pid", os.getpid())
        if is_surplus(optuna, trial, cfg.trials):
            trial.set_user_attr("surplus", True)
            current["surplus"] = True
            raise TrialFailed("surplus: the study already holds --trials trials")
        params = {k: trial.suggest_categorical(k, space[k]) for k in keys}
        twin = finished_twin(optuna, trial, params, keys)     # trained (or training) already: reuse it
        if twin is not None:
            return reuse_twin(optuna, trial, twin, params)
        run_dir = report.unique_path(os.path.join(cfg.out, "trials", f"trial_{trial.number:04d}"))
        os.makedirs(run_dir)
        trial.set_user_attr("dir", run_dir)
        if gpu is not None:
            trial.set_user_attr("gpu", gpu)
        hyper = write_hyper_yaml(os.path.join(run_dir, "hyper.yaml"), cfg.model, {**fixed, **params})

        folds = {}

        def on_line(line):
            m = FOLD_LINE.search(line)
            if m and FOLD_METRICS.get(m.group(2)) in wanted and m.group(3) not in ("nan", "inf"):
                folds[int(m.group(1))] = float(m.group(3))
                trial.report(folds[int(m.group(1))] * (-1 if m.group(2) == "val" else 1), int(m.group(1)))
                return trial.should_prune()
            return False

        start = time.time()
        try:
            code, log, timed_out = run_training(cfg, hyper, run_dir, cfg.seed, gpu, on_line=on_line,
                                                timeout=cfg.trial_timeout)
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM)")
            trial.set_user_attr("interrupted", True)          # not a lost worker: no retry is used up
            raise
        seconds = time.time() - start
        trial.set_user_attr("seconds", round(seconds, 2))
        tail = error_tail(log)
        if code != 0:
            trial.set_user_attr("returncode", code)
            trial.set_user_attr("error", tail)
            if code < 0 and trial.should_prune():
                last = max(folds)
                trial.set_user_attr("outcome", "pruned")
                trial.set_user_attr("error", f"stopped by the median pruner after fold {last} (eval {folds[last]:.4f})")
                raise optuna.TrialPruned("stopped by the median pruner on its per-fold eval metric")
            if DIVERGED.search(log):
                trial.set_user_attr("outcome", "diverged")
                raise optuna.TrialPruned("diverged: " + tail.splitlines()[-1] if tail else "diverged")
            trial.set_user_attr("outcome", "timeout" if timed_out else "killed" if code < 0 else "error")
            why = f"timed out after {cfg.trial_timeout}s" if timed_out else \
                f"runner killed by signal {-code} (out of memory?)" if code < 0 else f"runner exit {code}"
            raise TrialFailed(f"{why}: {tail.splitlines()[-1] if tail else ''}")
        summary_path = find_summary(run_dir, cfg)
        if summary_path is None:
            trial.set_user_attr("outcome", "error")
            trial.set_user_attr("error", "runner exited 0 but wrote no summary JSON\n" + tail)
            raise TrialFailed(f"no summary JSON in {run_dir}")
        cv = read_cv(summary_path).get("cv", {})
        trial.set_user_attr("cv", cv)
        trial.set_user_attr("summary", summary_path)
        name, value = objective_value(cv, cfg.metric)
        if value is None:
            trial.set_user_attr("outcome", "nan")
            trial.set_user_attr("error", f"cv {name} is {cv.get(name)!r} (cv: {cv})")
            raise TrialFailed(f"cv {name} is missing or NaN")
        return value

    return objective


def finished_twin(optuna, trial, params, keys):
    """An earlier trial of the same setting whose result this one reuses; None: train it here.

    A setting running in an earlier trial counts as taken: wait for it (failing dead workers' trials
    meanwhile, whose retry then falls to this trial). Later twins wait for this one, so none deadlock."""
    S = optuna.trial.TrialState
    mine = setting_key(params, keys)
    while True:
        twins = [t for t in trial.study.get_trials(deepcopy=False)
                 if t.number != trial.number and setting_key(trial_params(t), keys) == mine]
        done = [t for t in twins if t.state in (S.COMPLETE, S.PRUNED) or (t.state == S.FAIL and "outcome" in t.user_attrs)]
        if done:
            return min(done, key=lambda t: (t.state != S.COMPLETE, t.number))
        if not any(t.state == S.RUNNING and t.number < trial.number for t in twins):
            return None
        time.sleep(TWIN_POLL)
        fail_stale_trials(optuna, trial.study)


def reuse_twin(optuna, trial, twin, params):
    """This trial takes its twin's result (value, pruned or failed) without training."""
    original = twin.user_attrs.get("same_as", twin.number)
    trial.set_user_attr("same_as", original)
    trial.set_user_attr("cv", twin.user_attrs.get("cv", {}))
    print(f"trial {trial.number}: same setting as #{original}, result reused ({short_params(params)})", flush=True)
    if twin.state == optuna.trial.TrialState.COMPLETE:
        return twin.value
    trial.set_user_attr("outcome", twin.user_attrs.get("outcome", "pruned"))
    trial.set_user_attr("error", f"same as #{original}: " + (twin.user_attrs.get("error") or "").strip()[-200:])
    if twin.state == optuna.trial.TrialState.PRUNED:
        raise optuna.TrialPruned(f"same setting as #{original}, which was pruned")
    raise TrialFailed(f"same setting as #{original}, which failed")


def describe_finished(optuna, study, number: int, metric_label: str) -> str:
    t = study.get_trials(deepcopy=False)[number]
    s = f"trial {t.number} {t.state.name}"
    if t.value is not None and t.state == optuna.trial.TrialState.COMPLETE:
        s += f" {metric_label} {t.value:.4f}"
    if "seconds" in t.user_attrs:
        s += f" in {t.user_attrs['seconds']:.1f}s"
    s += f" ({short_params(t.params)})"
    if t.state != optuna.trial.TrialState.COMPLETE and t.user_attrs.get("error"):
        s += ": " + t.user_attrs["error"].splitlines()[-1][:200]
    return s


def serialize_ask(study, lock_path: str):
    """One ``study.ask()`` at a time among the workers sharing ``lock_path``. SQLite has no row locks, so
    two workers popping the same queued (re-queued) trial at once both got it and trained it twice
    (seen in a kill/rerun cycle); the lock also keeps two samplers from picking at the same instant."""
    try:
        import fcntl
    except ImportError:                       # not POSIX: no file lock to take
        return
    ask = study.ask

    def locked_ask(*args, **kwargs):
        with open(lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                return ask(*args, **kwargs)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    study.ask = locked_ask


def run_worker(optuna, cfg, space, fixed, order_seed: int, worker_index: int, announce: bool) -> int:
    """One worker: run trials of the shared study until it holds --trials (or the grid is used up)."""
    gpu = cfg.gpu_list[worker_index % len(cfg.gpu_list)] if cfg.gpu_list else None
    seed = None if cfg.sampler_seed is None else cfg.sampler_seed + 7919 * worker_index
    storage = open_storage(optuna, cfg.storage, cfg.heartbeat)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.pruner == "median" else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=cfg.study, storage=storage,
                              sampler=make_sampler(optuna, cfg.sampler, space, seed, order_seed), pruner=pruner)
    if cfg.storage.startswith("sqlite"):
        serialize_ask(study, os.path.join(cfg.out, ".ask.lock"))
    metric_label = "cv " + (cfg.metric if cfg.metric != "auto" else "emoval")
    current = {}
    objective = make_objective(optuna, cfg, space, fixed, gpu, current)
    try:                                      # SLURM preemption / scancel: requeue, then stop
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:                        # not the main thread
        previous = None
    try:
        return _worker_loop(optuna, cfg, space, study, objective, current, worker_index, announce, metric_label)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _worker_loop(optuna, cfg, space, study, objective, current, worker_index, announce, metric_label) -> int:
    while True:
        stale = fail_stale_trials(optuna, study)
        if stale:
            print(f"worker {worker_index}: marked FAIL trial(s) {stale} left RUNNING by a dead worker; "
                  "their settings are queued again", flush=True)
        trials = study.get_trials(deepcopy=False)
        counted, running, waiting = budget(optuna, trials)
        if not waiting and counted >= cfg.trials:
            break
        if not waiting and counted + running >= cfg.trials:
            if cfg.heartbeat <= 0:
                break             # the running trials are someone else's; without heartbeats we cannot tell if they live
            time.sleep(2)         # wait for the last trials: if their worker dies, their settings come back here
            continue
        if not waiting and grid_exhausted(optuna, study, space):
            print(f"worker {worker_index}: every setting of the grid ({grid_size(space)}) has been tried; stopping",
                  flush=True)
            break
        if not waiting and cfg.sampler == "random" and grid_exhausted(optuna, study, space, with_running=True):
            if cfg.heartbeat <= 0:
                break             # the rest is running elsewhere; a rerun takes it over if its worker died
            time.sleep(2)         # the last settings are training: wait in case their worker dies
            continue
        current.clear()
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        except KeyboardInterrupt:
            for sig in (signal.SIGINT, signal.SIGTERM):     # a second signal must not cut the re-queue short
                try:
                    signal.signal(sig, signal.SIG_IGN)
                except ValueError:
                    pass
            if "number" in current:
                t = study.get_trials(deepcopy=False)[current["number"]]
                if is_lost(t) and trial_params(t):
                    requeue(study, t, interrupted=True)
                print(f"\ninterrupted: trial {current['number']} is queued again; rerun the same command to resume",
                      flush=True)
            return 130
        if "number" in current and not current.get("surplus"):
            print(describe_finished(optuna, study, current["number"], metric_label), flush=True)
            if announce:
                print(progress_line(optuna, study, cfg.trials, metric_label), flush=True)
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# ---------------------------------------------------------------- orchestration

def worker_argv(cfg, worker_index) -> List[str]:
    """The command line of one worker process (local or SLURM) joining the same study."""
    argv = [sys.executable, "-m", "merbench_plugins", "search", "--model", cfg.model, "--out", cfg.out,
            "--storage", cfg.storage, "--study", cfg.study, "--trials", str(cfg.trials),
            "--sampler", cfg.sampler, "--metric", cfg.metric, "--seed", str(cfg.seed),
            "--heartbeat", str(cfg.heartbeat), "--pruner", cfg.pruner]
    argv += ["--merbench", cfg.merbench] if cfg.merbench else ["--data", cfg.data]
    if cfg.grid:
        argv += ["--grid", cfg.grid]
    if cfg.gpus and worker_index != slurm.TASK_ID:
        argv += ["--gpus", cfg.gpus]
    if cfg.sampler_seed is not None:
        argv += ["--sampler_seed", str(cfg.sampler_seed)]
    if cfg.trial_timeout:
        argv += ["--trial_timeout", str(cfg.trial_timeout)]
    argv += ["--worker_index", str(worker_index)]
    if cfg.runner_args:
        argv += ["--"] + list(cfg.runner_args)
    return argv


def run_local_workers(optuna, cfg, study, space, metric_label, workers: int) -> int:
    """K worker processes sharing the study (the launcher's queue, one slot each, on gpus[i % len]); this
    process prints progress until they all exit."""
    log_dir = os.path.join(cfg.out, "logs")
    env = {k: v for k, v in child_env().items() if os.environ.get(k) != v}
    jobs = [Job(name=f"worker_{i}", command=worker_argv(cfg, i), run_dir=log_dir, workdir=os.getcwd(), env=env,
                meta_name=None, log_name=f"worker_{i}.log") for i in range(workers)]
    queue.deal(jobs, [str(cfg.gpu_list[i % len(cfg.gpu_list)]) if cfg.gpu_list else CPU for i in range(workers)])
    print(f"starting {workers} workers (logs: {log_dir}/worker_*.log)", flush=True)
    last = []

    def progress():
        line = progress_line(optuna, study, cfg.trials, metric_label)
        if last[-1:] != [line]:
            print(line, flush=True)
            last.append(line)

    try:      # Ctrl-C / SIGTERM: the workers get SIGTERM, re-queue their running trial and exit
        failed = queue.run_local(jobs, finished=None, on_tick=progress, quiet=True)
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", flush=True)
        return 130
    for job, code in failed:
        with open(job.log, errors="replace") as f:
            tail = (error_tail(f.read(), lines=1) or "(empty log)").strip()
        print(f"warning: {job.name.replace('_', ' ')} exited with {code}: {tail} (see {job.log})", file=sys.stderr)
    counted = budget(optuna, study.get_trials(deepcopy=False))[0]
    if failed and (len(failed) == len(jobs) or (counted < cfg.trials and not grid_exhausted(optuna, study, space))):
        print(f"error: {len(failed)} of {len(jobs)} workers crashed and the study is not done ({counted}/{cfg.trials} "
              "trials); fix the cause above and rerun the same command to resume", file=sys.stderr)
        return 1
    return 0


def submit_slurm(cfg) -> int:
    """Write an sbatch array of workers + a dependent report job (the launcher's SLURM scripts); submit
    them if sbatch exists."""
    slurm_dir = os.path.join(cfg.out, "slurm")
    os.makedirs(slurm_dir, exist_ok=True)
    opts = slurm.SlurmOptions(time="", cpus=0, gpus=0 if cfg.no_gres else 1, extra=shlex.split(cfg.sbatch_args or ""))
    name = f"search-{cfg.study}"
    final = worker_argv(cfg, slurm.TASK_ID)     # no --gpus: the job sees its one GPU as device 0
    final = final[:final.index("--worker_index")] + ["--report_only", "--seeds", str(cfg.seeds)] + \
        final[final.index("--worker_index") + 2:]
    search_sh, report_sh = os.path.join(slurm_dir, "search.sbatch"), os.path.join(slurm_dir, "report.sbatch")
    slurm.write_script(search_sh, slurm.pool_script(name, worker_argv(cfg, slurm.TASK_ID), os.getcwd(),
                                                    f"{slurm_dir}/worker_%a.log", opts, tasks=cfg.workers))
    slurm.write_script(report_sh, slurm.pool_script(name, final, os.getcwd(), f"{slurm_dir}/report.log", opts))
    print(f"wrote {search_sh} ({cfg.workers} workers) and {report_sh} (table, seeds, best.yaml)")
    if cfg.storage.startswith("sqlite"):
        print("warning: SQLite on a shared filesystem is unreliable with many nodes; prefer "
              "--storage postgresql://USER:PASS@HOST/DB (any Optuna RDB URL)", file=sys.stderr)
    status = slurm.submit(search_sh, name, opts, then_script=report_sh, then_what=" (the report)",
                          what="worker array")
    if status != slurm.SUBMITTED:
        return 1
    print(f"watch with: python -m merbench_plugins search --model {cfg.model} --out {cfg.out} "
          f"--storage '{cfg.storage}' --study {cfg.study} --status")
    return 0


# ---------------------------------------------------------------- the report

def rerun_seeds(cfg, best_yaml_text: str, seeds: List[int], config: Dict[str, str]):
    """The best setting over fresh seeds, on the launcher's queue (--workers slots over --gpus); reuses a
    finished run only when its settings and its whole configuration (:func:`run_config`, runner flags
    included) match."""
    key = json.dumps(config, sort_keys=True)
    results, jobs = {}, []
    for seed in seeds:
        run_dir = os.path.join(cfg.out, "best", f"seed_{seed}")
        hyper, made_by = os.path.join(run_dir, "hyper.yaml"), os.path.join(run_dir, "config.json")
        summary = find_summary(run_dir, cfg) if os.path.isdir(run_dir) else None
        if summary and os.path.isfile(hyper) and open(hyper).read() == best_yaml_text and \
                os.path.isfile(made_by) and open(made_by).read() == key:
            results[seed] = (seed, read_cv(summary), None)
            continue
        if os.path.isdir(run_dir):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir)
        report.atomic_write_text(hyper, best_yaml_text)
        report.atomic_write_text(made_by, key)
        jobs.append(Job(name=f"seed_{seed}", command=[], run_dir=run_dir, label=f"seed={seed}", meta_name=None,
                        log_name="log.txt", timeout=cfg.trial_timeout, meta={"seed": seed, "hyper": hyper}))
    workers = max(1, cfg.workers)
    queue.deal(jobs, [str(cfg.gpu_list[k % len(cfg.gpu_list)]) if cfg.gpu_list else CPU for k in range(workers)])
    env = {k: v for k, v in child_env().items() if os.environ.get(k) != v}
    for job in jobs:
        gpu = None if job.device == CPU else int(job.device)
        job.command, cwd = runner_command(cfg, job.meta["hyper"], job.run_dir, job.meta["seed"], gpu)
        job.workdir, job.env = cwd or os.getcwd(), env
    failed = dict((job.name, code) for job, code in queue.run_local(jobs, finished=None))
    for job in jobs:
        seed, summary = job.meta["seed"], find_summary(job.run_dir, cfg)
        if job.name in failed or summary is None:
            with open(job.log, errors="replace") as f:
                tail = error_tail(f.read()).splitlines()[-1:]
            results[seed] = (seed, None, tail or [f"exit {failed.get(job.name)}"])
        else:
            results[seed] = (seed, read_cv(summary), None)
    return [results[seed] for seed in seeds]


def seeds_table(results, metric_name):
    """Rows per seed, then mean and std (sample std over seeds) of every test metric and the cv metric."""
    ok = [(seed, s) for seed, s, err in results if s is not None]
    tests = sorted({t for _, s in ok for t in s.get("tests", {})})
    metrics = [m for m in ("f1", "acc", "val_mse", "emoval")
               if any(s["tests"].get(t, {}).get(m) is not None for _, s in ok for t in tests)]
    cols = [("cv", metric_name)] + [(t, m) for t in tests for m in metrics]
    headers = ["seed"] + [f"{t} {m}" for t, m in cols]
    value = lambda s, t, m: (s.get("cv", {}) if t == "cv" else s.get("tests", {}).get(t, {})).get(m)  # noqa: E731
    rows = [[seed] + [value(s, t, m) for t, m in cols] for seed, s in ok]
    stats = []
    for j in range(1, len(headers)):
        xs = [r[j] for r in rows if r[j] is not None]
        mean = float(sum(xs) / len(xs)) if xs else None
        std = float(math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))) if len(xs) > 1 else None
        stats.append((mean, std))
    return headers, rows, stats


def finalize(optuna, cfg, study, space, fixed, grid_source) -> int:
    """Trials table, best.yaml, the best setting over --seeds seeds, importance plot, summary.json."""
    metric_name = cfg.metric if cfg.metric != "auto" else "emoval"
    headers, rows = trials_table(optuna, study, space, metric_name)
    report.atomic_write_text(os.path.join(cfg.out, "trials.md"), report.markdown_table(headers, rows) + "\n")
    report.write_csv(os.path.join(cfg.out, "trials.csv"), headers, rows)
    shown = rows if len(rows) <= 40 else sorted(rows, key=lambda r: -1e9 if r[len(space) + 2] is None else
                                                (r[len(space) + 2] * (-1 if cfg.metric == "val_mse" else 1)))[::-1][:40]
    print(f"\ntrials ({len(rows)}; all in {os.path.join(cfg.out, 'trials.md')}"
          + (", top 40 shown" if len(rows) > 40 else "") + "):")
    print(report.markdown_table(headers, shown))
    if fixed:
        print("fixed: " + short_params(fixed))
    given_up = list(gave_up_settings(study).values())
    for note in given_up:
        print(f"warning: {note}", file=sys.stderr)
    best = best_trial(optuna, study)
    if best is None:
        print(f"error: no trial completed; the errors are in {os.path.join(cfg.out, 'trials.md')} "
              "and each trial's log.txt", file=sys.stderr)
        return 1
    settings = {**fixed, **best.params}
    comment = (f"# best of study {study.study_name!r}: trial {best.number}, cv {metric_name} {best.value:.4f}\n"
               f"# grid: {grid_source}; use with --hyper_path (MERBench's format: model -> settings)")
    best_path = write_hyper_yaml(os.path.join(cfg.out, "best.yaml"), cfg.model, settings, comment)
    print(f"\nbest: trial {best.number}, cv {metric_name} {best.value:.4f} ({short_params(best.params)}) -> {best_path}")
    summary = {"study": study.study_name, "model": cfg.model, "storage": cfg.storage, "metric": metric_name,
               "best_trial": best.number, "best_value": best.value, "best_settings": settings,
               "trials": len(rows), "grid_source": grid_source, "given_up": given_up}
    if cfg.seeds > 0:
        seeds = [cfg.seed + 1 + k for k in range(cfg.seeds)]      # fresh seeds: the search ran at --seed
        print(f"re-running the best setting over seeds {seeds} ...", flush=True)
        with open(best_path) as f:
            results = rerun_seeds(cfg, f.read(), seeds, run_config(cfg, space, fixed))
        for seed, s, err in results:
            if s is None:
                print(f"warning: seed {seed} failed: {err[0] if err else ''}", file=sys.stderr)
        h, r, stats = seeds_table(results, metric_name)
        if r:
            pm = ["mean ± std"] + [None if m is None else f"{m:.4f}" + ("" if sd is None else f" ± {sd:.4f}")
                                   for m, sd in stats]
            table = report.markdown_table(h, r + [pm])
            report.atomic_write_text(os.path.join(cfg.out, "best_seeds.md"),
                                     f"{cfg.model}, best setting ({short_params(settings)}), {len(r)} seeds\n\n{table}\n")
            report.write_csv(os.path.join(cfg.out, "best_seeds.csv"), h,
                      r + [["mean"] + [m for m, _ in stats], ["std"] + [sd for _, sd in stats]])
            print(table)
            summary["seeds"] = {col: {"mean": m, "std": sd} for col, (m, sd) in zip(h[1:], stats)}
            summary["seed_runs"] = [{"seed": seed, "ok": s is not None} for seed, s, _ in results]
        else:
            print("error: every seed re-run failed; see best/seed_*/log.txt", file=sys.stderr)
    note = importance_plot(optuna, study, os.path.join(cfg.out, "importance.png"))
    print(note)
    summary["importance"] = note
    report.write_summary(os.path.join(cfg.out, "summary.json"), summary)
    return 0


# ---------------------------------------------------------------- command line

def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m merbench_plugins search",
        description="MERBench's hyperparameter protocol on Optuna: search a model's model-tune.yaml grid "
                    "(random or TPE) on the cross-validation metric, then re-run the best setting over "
                    "several seeds. Resumable (rerun the same command); scales to many workers via a shared "
                    "RDB storage. Runner flags go after `--`.",
        epilog="example: python -m merbench_plugins search --model attention_robust_v2 --data data/ --trials 40 "
               "--workers 2 --gpus 0,1 -- --feat_type utt --epochs 100",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model to tune (registered, or any MERBench model with --merbench)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="standalone: a MERBench-layout feature folder (runs `merbench_plugins train`)")
    src.add_argument("--merbench", metavar="ROOT", help="a MERBench checkout with our models installed "
                                                        "(runs its main-robust.py; MERBench flags go after `--`)")
    p.add_argument("--trials", type=int, help="total trials of the study (a rerun continues up to this number)")
    p.add_argument("--sampler", default="random", choices=["random", "tpe"],
                   help="random: MERBench's uniform pick, without replacement; tpe: Optuna's TPE")
    p.add_argument("--grid", help="model-tune.yaml to search (default: ROOT/toolkit/model-tune.yaml with "
                                  "--merbench, else this checkout's model-tune.yaml, else the registry's grid)")
    p.add_argument("--metric", default="auto", choices=METRICS,
                   help="objective from the runner's cross-validation block (auto: emoval, else f1)")
    p.add_argument("--out", help="output folder (default: search_MODEL)")
    p.add_argument("--storage", help="Optuna RDB URL shared by all workers (default: sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default: the model name)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (or SLURM array tasks)")
    p.add_argument("--gpus", help="comma-separated GPU ids; worker i trains on gpus[i %% len]")
    p.add_argument("--seeds", type=int, default=5, help="re-run the best setting over this many fresh seeds (0 = skip)")
    p.add_argument("--seed", type=int, default=42, help="seed of every search trial (the re-runs use seed+1 ...)")
    p.add_argument("--sampler_seed", type=int, help="seed of the sampler (default: fresh randomness)")
    p.add_argument("--pruner", default="none", choices=["none", "median"],
                   help="median: stop a trial whose per-fold eval metric is below the median of earlier trials "
                        "(reads the runner's fold lines: the standalone runner prints them without --quiet)")
    p.add_argument("--trial_timeout", type=float, help="kill and FAIL a trial after this many seconds")
    p.add_argument("--heartbeat", type=int, default=60,
                   help="seconds between worker heartbeats; a RUNNING trial silent for 2x this is failed and "
                        "re-queued (0 = off; same-host dead workers are detected at once regardless)")
    p.add_argument("--slurm", action="store_true", help="write and submit an sbatch array of --workers workers "
                                                        "plus a dependent report job")
    p.add_argument("--sbatch_args", help="extra #SBATCH options, e.g. \"--partition=gpu --time=24:00:00\"")
    p.add_argument("--no_gres", action="store_true", help="SLURM: do not request --gres=gpu:1 per task")
    p.add_argument("--new", action="store_true", help="delete the study of this name (its trials) and start over, "
                                                      "e.g. after changing runner flags")
    p.add_argument("--status", action="store_true", help="print progress and the trial table of the study; run nothing")
    p.add_argument("--report_only", action="store_true", help="no new trials: table, seeds re-run, best.yaml, plot")
    p.add_argument("--worker_index", type=int, help=argparse.SUPPRESS)
    return p


def split_argv(argv):
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def check_runner_args(cfg, space, fixed) -> Optional[str]:
    """Validate the flags after `--` with the runner's own parser before any trial starts; a grid
    setting given there would override every trial's value (command line > --hyper_path)."""
    flags = {a.split("=")[0] for a in cfg.runner_args if a.startswith("--")}
    clash = sorted(flags & set(RESERVED_FLAGS))
    if clash:
        return (f"{', '.join(clash)} after `--` would clash with the search (it sets --model, --hyper_path, "
                "the output folder and --seed per trial); use the search's own --model/--seed/--out")
    if cfg.gpu_list and flags & {"--device", "--gpu"}:
        return "--gpus sets each worker's --device/--gpu: drop --device/--gpu after `--`"
    import contextlib
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            if cfg.merbench:
                from ..train.merbench_runner import build_parser as runner_parser
                parsed = runner_parser().parse_args(["--model", cfg.model] + list(cfg.runner_args))
                if parsed.dataset is None and parsed.train_dataset is None:
                    return "main-robust.py needs --dataset: pass MERBench's flags after `--` (e.g. -- --dataset MER2023 ...)"
            else:
                from ..train.runner import build_parser as runner_parser
                parsed = runner_parser().parse_args([cfg.data, "--model", cfg.model] + list(cfg.runner_args))
    except SystemExit:
        return "invalid runner flags after `--`: " + err.getvalue().strip().splitlines()[-1]
    given = [k for k in sorted({**space, **fixed}) if getattr(parsed, k, None) is not None]   # model flags default None
    if given:
        where = ", ".join(f"--{k} ({'searched' if k in space else 'fixed'} by the grid)" for k in given)
        return (f"{where} after `--` would override the grid's value in every trial, so trials and best.yaml "
                "would record settings that were not trained; drop it after `--`, or change the grid (--grid FILE)")
    return None


class SearchError(ValueError):
    """A search command that cannot run; the message says what to change."""


@dataclass(frozen=True)
class SearchConfig:
    """One ``search`` command, resolved once at the entry point (paths absolute, defaults filled, checked):
    every function below reads this, never the command line."""

    model: str
    data: Optional[str]
    merbench: Optional[str]
    trials: int
    sampler: str
    grid: Optional[str]
    metric: str
    out: str
    storage: str
    study: str
    workers: int
    gpus: Optional[str]
    gpu_list: Tuple[int, ...]
    seeds: int
    seed: int
    sampler_seed: Optional[int]
    pruner: str
    trial_timeout: Optional[float]
    heartbeat: int
    slurm: bool
    sbatch_args: Optional[str]
    no_gres: bool
    new: bool
    status: bool
    report_only: bool
    worker_index: Optional[int]
    runner_args: Tuple[str, ...]


def prepare(parsed: argparse.Namespace, runner_args=()) -> SearchConfig:
    """The parsed flags with defaults filled and everything checked that does not need Optuna
    (:class:`SearchError` otherwise)."""
    values = dict(vars(parsed), runner_args=tuple(runner_args))
    values["out"] = out = os.path.abspath(parsed.out or f"search_{parsed.model}")
    values["study"] = parsed.study or parsed.model
    values["storage"] = parsed.storage or default_storage(out)
    values["gpu_list"] = tuple(int(g) for g in parsed.gpus.split(",") if g.strip()) if parsed.gpus else ()
    for key in ("data", "merbench", "grid"):
        values[key] = os.path.abspath(values[key]) if values[key] else values[key]
    values["trials"] = parsed.trials or 0
    cfg = SearchConfig(**values)
    if cfg.status:
        return cfg
    try:
        ensure_writable_dir(cfg.out, "--out")
    except OutputError as exc:
        raise SearchError(str(exc)) from None
    if not cfg.data and not cfg.merbench:
        raise SearchError("give the data: --data DIR (standalone runner) or --merbench ROOT (MERBench's main-robust.py)")
    if cfg.data and not os.path.isdir(cfg.data):
        raise SearchError(f"--data {cfg.data} is not a folder")
    if cfg.merbench and not os.path.isfile(os.path.join(cfg.merbench, "main-robust.py")):
        raise SearchError(f"{cfg.merbench}/main-robust.py not found: install the models first with "
                          f"`python -m merbench_plugins install {cfg.merbench}`")
    if not cfg.report_only and (parsed.trials is None or parsed.trials < 1):
        raise SearchError("--trials N (N >= 1) is required: the total number of trials of the study")
    if cfg.workers < 1:
        raise SearchError("--workers must be at least 1")
    if cfg.pruner == "median" and cfg.metric == "acc":
        raise SearchError("--pruner median reads the runners' per-fold eval lines, which carry emoval, f1 (emo) or "
                          "val_mse only: use --metric auto/emoval/f1/val_mse with it, or --pruner none")
    return cfg


def run_config(cfg, space, fixed) -> Dict[str, str]:
    """Everything that decides what a trial trains: a resumed study must match it exactly."""
    return {"model": cfg.model, "metric": cfg.metric, "space": json.dumps(space, sort_keys=True),
            "fixed": json.dumps(fixed, sort_keys=True), "data": cfg.data or "", "merbench": cfg.merbench or "",
            "seed": str(cfg.seed), "runner_args": json.dumps(list(cfg.runner_args))}


def open_study(optuna, cfg, space, fixed, grid_source, create: bool):
    """Create or load the study; refuse to resume one made with another configuration (:func:`run_config`)."""
    os.makedirs(cfg.out, exist_ok=True)
    storage = open_storage(optuna, cfg.storage, cfg.heartbeat)
    identity = run_config(cfg, space, fixed)
    if getattr(cfg, "new", False) and cfg.worker_index is None:
        try:
            optuna.delete_study(study_name=cfg.study, storage=storage)
            print(f"--new: deleted the old study {cfg.study!r} from {cfg.storage}", flush=True)
        except KeyError:
            pass
    if create:
        study = optuna.create_study(study_name=cfg.study, storage=storage, load_if_exists=True,
                                    direction="minimize" if cfg.metric == "val_mse" else "maximize")
    else:
        study = optuna.load_study(study_name=cfg.study, storage=storage)
    have = study.user_attrs
    if "model" not in have:
        for k, v in identity.items():
            study.set_user_attr(k, v)
        study.set_user_attr("grid_source", grid_source)
        # one random order of the grid for every worker of the study, also after a resume
        seed = cfg.sampler_seed if cfg.sampler_seed is not None else random.SystemRandom().randrange(2 ** 31)
        study.set_user_attr("sampler_seed", seed)
        return study
    diff = [k for k in identity if have.get(k) != identity[k]]
    if diff:
        shown = "; ".join(f"{k}: study has {have.get(k)!r}, this command {identity[k]!r}" for k in diff)
        raise SystemExit(f"error: study {cfg.study!r} in {cfg.storage} was made with another configuration "
                         f"({shown}). Rerun with the same flags (runner flags after `--` included) to resume, "
                         "or pass --new to delete it and start over (or --study NAME / --out DIR for a separate one)")
    return study


def status(optuna, cfg) -> int:
    if cfg.storage == default_storage(cfg.out) and not os.path.isfile(os.path.join(cfg.out, "study.db")):
        print(f"error: no study database {os.path.join(cfg.out, 'study.db')}; pass the search's --out or --storage",
              file=sys.stderr)
        return 1
    storage = open_storage(optuna, cfg.storage, 0)
    try:
        study = optuna.load_study(study_name=cfg.study, storage=storage)
    except KeyError:
        print(f"error: no study {cfg.study!r} in {cfg.storage}", file=sys.stderr)
        return 1
    space = json.loads(study.user_attrs.get("space", "{}"))
    metric = study.user_attrs.get("metric", "auto")
    metric_name = metric if metric != "auto" else "emoval"
    print(progress_line(optuna, study, cfg.trials or study.user_attrs.get("trials", 0), "cv " + metric_name))
    headers, rows = trials_table(optuna, study, space, metric_name)
    print(report.markdown_table(headers, rows))
    return 0


def main(argv=None):
    own, runner_args = split_argv(sys.argv[1:] if argv is None else argv)
    parsed = build_parser().parse_args(own)
    optuna = import_optuna()
    if optuna is None:
        return 2
    try:
        cfg = prepare(parsed, runner_args)
    except SearchError as exc:
        return refuse(exc)
    if cfg.status:
        return status(optuna, cfg)
    space, fixed, grid_source = load_grid(cfg)
    if cfg.worker_index is None and not cfg.report_only:
        error = check_runner_args(cfg, space, fixed)
        if error:
            return refuse(error)
    metric_label = "cv " + (cfg.metric if cfg.metric != "auto" else "emoval")
    if cfg.worker_index is not None:          # one worker of a local pool or of a SLURM array
        study = open_study(optuna, cfg, space, fixed, grid_source, create=True)
        return run_worker(optuna, cfg, space, fixed, study.user_attrs.get("sampler_seed", 0), cfg.worker_index,
                          announce=False)
    study = open_study(optuna, cfg, space, fixed, grid_source, create=True)
    print(f"study {cfg.study!r} in {cfg.storage}: {cfg.model}, {len(space)} searched settings "
          f"({grid_size(space)} combinations, grid from {grid_source}), {cfg.sampler} sampler, "
          f"objective {metric_label}", flush=True)
    if cfg.trials:
        study.set_user_attr("trials", cfg.trials)      # for --status
    if cfg.slurm:
        return submit_slurm(cfg)
    if not cfg.report_only:
        stale = fail_stale_trials(optuna, study)
        if stale:
            print(f"trial(s) {stale} were left RUNNING by a dead worker: marked FAIL, settings queued again")
        print(progress_line(optuna, study, cfg.trials, metric_label), flush=True)
        counted, running, waiting = budget(optuna, study.get_trials(deepcopy=False))
        workers = min(cfg.workers, max(1, cfg.trials - counted - running + waiting))   # no idle starters
        if workers == 1:
            code = run_worker(optuna, cfg, space, fixed, study.user_attrs.get("sampler_seed", 0), 0, announce=True)
        else:
            code = run_local_workers(optuna, cfg, study, space, metric_label, workers)
        if code:
            return code
    return finalize(optuna, cfg, study, space, fixed, grid_source)


if __name__ == "__main__":
    sys.exit(main())
