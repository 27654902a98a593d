"""The study/sampler side of ``python -m merbench_plugins search``: Optuna storage and lost-trial
re-queueing, the grid and its samplers, the trial budget and progress, the trials table and the
importance plot. The worker side (a trial = one runner in a child process) and the command line
are in :mod:`merbench_plugins.search.runner`; both import Optuna only through :func:`import_optuna`.
"""
import itertools
import json
import math
import os
import random
import re
import socket
import sys
import warnings
from typing import Dict, List, Optional

from ..evaluate import report
from ..fileio import pid_alive
from ..train.options import load_yaml

INSTALL_HINT = "pip install 'merbench-plugins[search]'  (or: pip install 'optuna>=3.0')"
MAX_RETRIES = 2                      # a setting whose worker died is queued again at most this often
ORPHAN_GRACE = 60                    # s before a RUNNING trial without owner or heartbeat is failed
GAVE_UP = "gave_up "                 # study attribute prefix of a setting given up after MAX_RETRIES
EXACT_GRID_LIMIT = 20000             # grids up to this size are enumerated exactly by the random sampler


# ---------------------------------------------------------------- optuna (optional extra)

def import_optuna():
    """Optuna, or None after telling how to install it."""
    try:
        import optuna
    except ImportError:
        print(f"error: the search command needs Optuna: {INSTALL_HINT}", file=sys.stderr)
        return None
    if int(optuna.__version__.split(".")[0]) < 3:
        print(f"error: optuna {optuna.__version__} is too old (need >= 3.0): {INSTALL_HINT}", file=sys.stderr)
        return None
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # we print one line per trial ourselves
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def default_storage(out: str) -> str:
    return "sqlite:///" + os.path.abspath(os.path.join(out, "study.db"))


def open_storage(optuna, url: str, heartbeat: int):
    """RDBStorage with heartbeats; stale trials (worker gone) go to :func:`requeue`."""
    kwargs = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}   # workers queue on the file lock
    if heartbeat > 0:
        import inspect
        params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
        callback_kw = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params \
            else "failed_trial_callback"       # optuna < 5
        kwargs.update(heartbeat_interval=int(heartbeat), grace_period=int(2 * heartbeat),
                      **{callback_kw: requeue})
    return optuna.storages.RDBStorage(url, **kwargs)


def is_lost(t) -> bool:
    """A FAIL that says nothing about its setting: its worker died or was interrupted mid-trial."""
    return t.state.name == "FAIL" and "outcome" not in t.user_attrs and not t.user_attrs.get("surplus")


def trial_params(t) -> dict:
    return t.params or t.system_attrs.get("fixed_params") or {}


def gave_up_settings(study) -> Dict[str, str]:
    """{setting as JSON: note} of the settings not queued again after MAX_RETRIES lost workers."""
    return {k[len(GAVE_UP):]: v for k, v in study.user_attrs.items() if k.startswith(GAVE_UP)}


def requeue(study, trial, interrupted: bool = False):
    """Queue a dead worker's setting again (the FAIL stays in the history, marked by ``retry_of``).

    A setting whose worker died more than ``MAX_RETRIES`` times (Ctrl-C/SIGTERM not counted) is
    given up: not queued again, noted in the study, never sampled again, and it uses no budget."""
    params = trial_params(trial)
    same = json.dumps(params, sort_keys=True)
    deaths = sum(1 for t in study.get_trials(deepcopy=False) if is_lost(t) and not t.user_attrs.get("interrupted")
                 and json.dumps(trial_params(t), sort_keys=True) == same)
    if deaths > MAX_RETRIES and not interrupted and params:
        study.set_user_attr(GAVE_UP + same, f"gave up {short_params(params)}: its worker died {deaths} times "
                                            f"(at most {MAX_RETRIES} re-queues); not trained, no budget used")
        return
    study.enqueue_trial(params, user_attrs={"retry_of": trial.number, "retries": deaths})


def fail_stale_trials(optuna, study) -> List[int]:
    """Mark RUNNING trials of dead workers FAIL and queue their settings again; returns their numbers.

    Same host: the worker's pid is checked (immediate). A trial with no owner yet (its worker died
    between creating it and stamping its pid, before any heartbeat) is failed once it is older than
    the grace period (2 x --heartbeat, else ORPHAN_GRACE s). Other hosts: Optuna's heartbeat (after
    the grace period). Only the process whose state change succeeds re-queues, so a setting is queued once.
    """
    import datetime
    TrialState = optuna.trial.TrialState
    storage, host, failed = study._storage, socket.gethostname(), []
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    grace = 2 * interval if interval else ORPHAN_GRACE
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("worker_pid")
        if pid is None:
            if t.datetime_start is None or (now - t.datetime_start).total_seconds() <= grace:
                continue
            why = f"no owner after {grace}s: its worker died before recording its pid or a heartbeat"
        elif t.user_attrs.get("worker_host") != host or pid_alive(int(pid)):
            continue
        else:
            why = f"worker pid {pid} on {host} died mid-trial"
        try:
            storage.set_trial_user_attr(t._trial_id, "error", why)
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
                requeue(study, storage.get_trial(t._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass                                   # another process got there first
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    optuna.storages.fail_stale_trials(study)       # other hosts: heartbeat older than the grace period
    failed += sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    return failed


def make_grid_sampler(optuna, space: Dict[str, list], seed: int):
    """MERBench's random pick over the grid, without replacement while untried settings remain.

    Every worker walks the same seeded random order of the grid, and trial n takes the first setting
    that no trial numbered below n holds or will hold (a trial still choosing is replayed with this
    same rule), so workers that sample at the same instant still pick different settings."""
    TrialState = optuna.trial.TrialState
    keys = sorted(space)
    exact = grid_size(space) <= EXACT_GRID_LIMIT

    class GridRandomSampler(optuna.samplers.BaseSampler):
        def __init__(self):
            self.rng = random.Random()
            self.order = None
            self.distributions = {k: optuna.distributions.CategoricalDistribution(space[k]) for k in keys}

        def infer_relative_search_space(self, study, trial):
            return dict(self.distributions)

        def first_free(self, taken):
            if self.order is None:
                self.order = list(itertools.product(*(space[k] for k in keys)))
                random.Random(seed).shuffle(self.order)
            return next((c for c in self.order if c not in taken), None)

        def sample_relative(self, study, trial, search_space):
            if not search_space:
                return {}
            if not exact:                           # huge grid: collisions are negligible
                taken = {setting_key(p, keys) for p in explored_settings(optuna, study, exclude=trial.number)}
                for _ in range(200):
                    pick = tuple(self.rng.choice(space[k]) for k in keys)
                    if pick not in taken:
                        break
                return dict(zip(keys, pick))
            taken = {setting_key(json.loads(k), keys) for k in gave_up_settings(study)}
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                if t.number >= trial.number:
                    break
                if is_lost(t) or t.user_attrs.get("surplus"):
                    continue                        # a dead worker's trial: its retry holds the setting
                p = trial_params(t)
                if all(k in p for k in keys):
                    taken.add(setting_key(p, keys))
                elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                    pending = self.first_free(taken)  # still choosing: it takes what this rule gives it
                    if pending is not None:
                        taken.add(pending)
            pick = self.first_free(taken)
            if pick is None:                        # grid used up: a duplicate (its result is reused)
                pick = tuple(self.rng.choice(space[k]) for k in keys)
            return dict(zip(keys, pick))

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.rng.choice(list(param_distribution.choices))

    return GridRandomSampler()


def make_sampler(optuna, kind: str, space, seed: Optional[int], order_seed: int):
    if kind == "random":
        return make_grid_sampler(optuna, space, order_seed)
    try:   # constant_liar: parallel workers do not all propose the same promising setting
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    except TypeError:
        return optuna.samplers.TPESampler(seed=seed)


# ---------------------------------------------------------------- grid

def coerce_scalar(v):
    """YAML 1.1 reads ``1e-3`` (MERBench's lr grid) as a string: take the number it means."""
    if isinstance(v, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", v.strip()):
        return float(v)
    return v


def split_grid(entry: dict, source: str):
    """model -> (searched {key: [choices]}, fixed {key: value})."""
    if not isinstance(entry, dict) or not entry:
        raise SystemExit(f"error: the grid in {source} must map setting names to lists of values")
    space, fixed = {}, {}
    for key, values in entry.items():
        values = values if isinstance(values, list) else [values]
        values = list(dict.fromkeys(coerce_scalar(v) for v in values))     # dedupe, keep order
        if not values:
            raise SystemExit(f"error: {source}: {key} has an empty list; give at least one value")
        bad = [v for v in values if not isinstance(v, (bool, int, float, str)) and v is not None]
        if bad:
            raise SystemExit(f"error: {source}: {key} has non-scalar values {bad}; grid values must be "
                             "numbers, strings, booleans or null")
        if len(values) > 1:
            space[str(key)] = values
        else:
            fixed[str(key)] = values[0]
    return space, fixed


def load_grid(cfg):
    """The model's grid: --grid, else MERBench's toolkit/model-tune.yaml (--merbench) or the
    checkout's model-tune.yaml, else the registry's declared grid."""
    candidates = [cfg.grid] if cfg.grid else []
    if not cfg.grid and cfg.merbench:
        candidates.append(os.path.join(cfg.merbench, "toolkit", "model-tune.yaml"))
    if not cfg.grid and not cfg.merbench:
        from ..registry import repo_yaml_path
        candidates.append(repo_yaml_path())
    for path in candidates:
        if path and (os.path.isfile(path) or path == cfg.grid):
            table = load_yaml(path)
            if cfg.model in table:
                return split_grid(table[cfg.model], path) + (os.path.abspath(path),)
            if path == cfg.grid:
                raise SystemExit(f"error: {path} has no entry for model {cfg.model!r} (has: {', '.join(table)})")
    from .. import registry
    try:
        return split_grid(registry.model_grid(cfg.model), "the registry") + ("registry",)
    except KeyError as exc:
        raise SystemExit(f"error: {exc.args[0]}; pass its grid with --grid FILE") from None


def grid_size(space: Dict[str, list]) -> int:
    return int(math.prod(len(v) for v in space.values())) if space else 1


def setting_key(params: dict, keys) -> tuple:
    return tuple(params.get(k) for k in keys)


def explored_settings(optuna, study, exclude: Optional[int] = None):
    """Settings that need no new run: COMPLETE, PRUNED, failed by the runner, running, queued or given up."""
    TrialState = optuna.trial.TrialState
    out = [json.loads(k) for k in gave_up_settings(study)]
    for t in study.get_trials(deepcopy=False):
        if t.number == exclude:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING) or \
                (t.state == TrialState.FAIL and "outcome" in t.user_attrs):
            out.append(trial_params(t))
    return out


# ---------------------------------------------------------------- budget and progress

def not_counted(optuna, trials):
    """Numbers of FAIL trials outside the budget: lost with their worker (:func:`is_lost`) or surplus."""
    return {t.number for t in trials if t.state == optuna.trial.TrialState.FAIL and
            (is_lost(t) or t.user_attrs.get("surplus"))}


def budget(optuna, trials):
    """(counted, running, waiting): counted = finished trials, less the FAILs of :func:`not_counted`."""
    S = optuna.trial.TrialState
    skip = not_counted(optuna, trials)
    counted = sum(1 for t in trials if t.state in (S.COMPLETE, S.PRUNED, S.FAIL) and t.number not in skip)
    return (counted, sum(t.state == S.RUNNING for t in trials), sum(t.state == S.WAITING for t in trials))


def is_surplus(optuna, trial, total: int) -> bool:
    """Two workers that check the budget at the same instant may both start a trial. Trial numbers are
    handed out atomically, so the one whose number is past --trials (not counting lost FAILs)
    gives its trial back unrun. Re-queued settings always run: they replace a lost trial."""
    if "retry_of" in trial.user_attrs:
        return False
    trials = trial.study.get_trials(deepcopy=False)
    skip = not_counted(optuna, trials)
    return sum(1 for t in trials if t.number < trial.number and t.number not in skip) >= total


def grid_exhausted(optuna, study, space, with_running: bool = False) -> bool:
    """Every setting finished (or given up); ``with_running``: or held by a running/queued trial."""
    keys = sorted(space)
    done = {setting_key(p, keys) for p in explored_settings(optuna, study)} if with_running else \
        {setting_key(json.loads(k), keys) for k in gave_up_settings(study)} | \
        {setting_key(t.params, keys) for t in study.get_trials(deepcopy=False)
         if t.state.name in ("COMPLETE", "PRUNED") or (t.state.name == "FAIL" and "outcome" in t.user_attrs)}
    return len(done) >= grid_size(space)


def short_params(params: dict) -> str:
    return ", ".join(f"{k}={fmt_param(v)}" for k, v in sorted(params.items())) or "(fixed grid)"


def progress_line(optuna, study, total: int, metric_label: str) -> str:
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    counted, running, waiting = budget(optuna, trials)
    skip = not_counted(optuna, trials)
    n = {s: sum(t.state == s and t.number not in skip for t in trials) for s in (S.COMPLETE, S.PRUNED, S.FAIL)}
    lost = sum(1 for t in trials if t.number in skip and not t.user_attrs.get("surplus"))
    line = (f"[search {study.study_name}] {counted}/{total} done: {n[S.COMPLETE]} complete, {n[S.PRUNED]} pruned, "
            f"{n[S.FAIL]} failed" + (f" (+{lost} lost with their worker, not counted)" if lost else "") +
            (f", {len(gave_up_settings(study))} setting(s) given up after {MAX_RETRIES} re-queues"
             if gave_up_settings(study) else "") + f" | {running} running" + (f", {waiting} queued" if waiting else ""))
    best = best_trial(optuna, study)
    if best is not None:
        line += f" | best #{best.number} {metric_label} {best.value:.4f} ({short_params(best.params)})"
    return line


def best_trial(optuna, study):
    try:
        return study.best_trial
    except ValueError:
        return None


# ---------------------------------------------------------------- the report

def trial_note(optuna, t, retried_by) -> str:
    S = optuna.trial.TrialState
    notes = []
    if "retry_of" in t.user_attrs:
        notes.append(f"retry of #{t.user_attrs['retry_of']}")
    if "same_as" in t.user_attrs:
        notes.append(f"same as #{t.user_attrs['same_as']}")
    if t.state in (S.FAIL, S.PRUNED):
        err = (t.user_attrs.get("error") or "").strip().splitlines()
        if err:
            notes.append(err[-1][:120])
        elif t.state == S.FAIL:
            notes.append("worker lost (no heartbeat)" if t.number in retried_by else "failed")
    if t.number in retried_by:
        notes.append(f"re-queued as #{retried_by[t.number]}")
    return "; ".join(notes)


def seconds(t) -> Optional[str]:
    s = t.user_attrs.get("seconds")
    return None if s is None else f"{s:.1f}"


def fmt_param(v):
    """Settings as written in the grid (1e-05 stays 1e-05, not 0.0000)."""
    return f"{v:g}" if isinstance(v, float) else v


def trials_table(optuna, study, space, metric_name):
    trials = study.get_trials(deepcopy=False)
    retried_by = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    keys = sorted(space)
    cv_keys = [k for k in ("f1", "acc", "val_mse", "emoval") if k != metric_name]
    headers = ["trial", "state"] + keys + [f"cv {metric_name}"] + [f"cv {k}" for k in cv_keys] + ["seconds", "note"]
    rows = []
    for t in trials:
        if t.user_attrs.get("surplus"):
            continue
        cv = t.user_attrs.get("cv") or {}
        params = t.params or t.system_attrs.get("fixed_params") or {}
        rows.append([t.number, t.state.name] + [fmt_param(params.get(k)) for k in keys] +
                    [t.value if t.state == optuna.trial.TrialState.COMPLETE else None] +
                    [cv.get(k) for k in cv_keys] + [seconds(t), trial_note(optuna, t, retried_by)])
    return headers, rows


def importance_plot(optuna, study, path: str) -> str:
    """fANOVA importance of the searched settings as a bar chart; returns a one-line note."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    distinct = {json.dumps(t.params, sort_keys=True) for t in complete}
    if len(distinct) < 3:
        return f"importance plot skipped: {len(distinct)} distinct complete setting(s); fANOVA needs at least 3"
    try:
        from optuna.importance import FanovaImportanceEvaluator, get_param_importances
        importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except Exception as exc:   # too few complete trials, one setting only, sklearn missing, ...
        return f"importance plot skipped: {type(exc).__name__}: {exc}"
    if not importances:
        return "importance plot skipped: no searched setting varied among complete trials"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("importances (fANOVA): " + ", ".join(f"{k} {v:.3f}" for k, v in importances.items()) +
                "; plot skipped: pip install 'merbench-plugins[plot]'")
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="#4477aa")
    ax.set_xlabel("fANOVA importance of the cross-validation metric")
    ax.set_title(f"{study.study_name}: {len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))} complete trials")
    fig.tight_layout()
    with report.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return f"importance plot: {path} (" + ", ".join(f"{k} {v:.3f}" for k, v in importances.items()) + ")"
