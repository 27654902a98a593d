"""`python -m merbench_plugins search`: tiny grids on tiny data, 2 workers sharing one SQLite study,
resume, failed / diverged / duplicate trials, dead workers, best.yaml, SLURM scripts, no Optuna."""
import contextlib
import io
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from merbench_plugins.__main__ import main as cli
from merbench_plugins.search import runner as search
from merbench_plugins.train import options, runner

MODEL = "attention_robust_v2"
RUNNER_FLAGS = ["--", "--epochs", "2", "--folds", "2", "--threads", "1", "--quiet"]
# 4 settings; heads=3 does not divide hidden_dim=16, so the model raises and those trials must FAIL
GRID = f"""{MODEL}:
  hidden_dim: [16]
  num_attention_heads: [3, 4]
  dropout: [0.1, 0.2]
  lr: [1e-3]
"""


def quiet_cli(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv)
    return code, out.getvalue()


def load_trials(optuna, out, study=MODEL):
    """The study's trials, less any "surplus" one (two workers that started a trial past --trials at
    the same instant: the later number gives it back unrun; see test_surplus_trial_is_given_back)."""
    s = optuna.load_study(study_name=study, storage=search.default_storage(str(out)))
    return [t for t in s.get_trials(deepcopy=True) if not t.user_attrs.get("surplus")]


def snapshot(trials):
    return [(t.number, t.state.name, t.params, t.value, t.datetime_start) for t in trials]


def test_without_optuna_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)       # `import optuna` now raises ImportError
    assert cli(["search", "--model", MODEL, "--data", ".", "--trials", "1"]) != 0
    assert "pip install 'merbench-plugins[search]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def searched(tiny_data, tmp_path_factory):
    """Run 1: 2 workers, 3 trials. Run 2 (resume): 4 trials + best over 2 seeds. Run 3: grid used up."""
    optuna = pytest.importorskip("optuna")
    root = tmp_path_factory.mktemp("search")
    grid = root / "grid.yaml"
    grid.write_text(GRID)
    out = root / "out"
    base = ["search", "--model", MODEL, "--data", str(tiny_data), "--grid", str(grid), "--out", str(out),
            "--sampler_seed", "0"]
    code1, _ = quiet_cli(base + ["--trials", "3", "--workers", "2", "--seeds", "0"] + RUNNER_FLAGS)
    first = load_trials(optuna, out)
    code2, log2 = quiet_cli(base + ["--trials", "4", "--workers", "2", "--seeds", "2"] + RUNNER_FLAGS)
    second = load_trials(optuna, out)
    seed_logs = sorted(out.glob("best/seed_*/log.txt"))
    mtimes = [p.stat().st_mtime for p in seed_logs]
    code3, log3 = quiet_cli(base + ["--trials", "6", "--seeds", "2"] + RUNNER_FLAGS)
    return SimpleNamespace(optuna=optuna, out=out, codes=(code1, code2, code3), first=first, second=second,
                           third=load_trials(optuna, out), log2=log2, log3=log3, seed_logs=seed_logs, mtimes=mtimes)


def test_two_workers_share_one_study_and_run_every_trial_once(searched):
    S = searched.optuna.trial.TrialState
    assert searched.codes[0] == 0
    trials = searched.first
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in (S.COMPLETE, S.FAIL) for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3     # no setting sampled twice
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2               # both workers took trials
    assert len({t.user_attrs["dir"] for t in trials}) == 3
    for t in trials:                                                            # one runner per trial, its setting
        log = Path(t.user_attrs["dir"], "log.txt").read_text()
        assert log.count("\n$ ") + log.startswith("$ ") == 1
        written = yaml.safe_load(Path(t.user_attrs["dir"], "hyper.yaml").read_text())[MODEL]
        assert written == {"hidden_dim": 16, "lr": 0.001, **t.params}


def test_failed_trial_is_recorded_and_the_search_completes(searched):
    S = searched.optuna.trial.TrialState
    by_heads = {3: [], 4: []}
    for t in searched.second:
        by_heads[t.params["num_attention_heads"]].append(t)
    assert by_heads[3] and by_heads[4]
    for t in by_heads[3]:
        assert t.state == S.FAIL and t.user_attrs["outcome"] == "error" and t.user_attrs["returncode"] == 2
        assert "must be divisible by num_attention_heads=3" in t.user_attrs["error"]
    for t in by_heads[4]:
        assert t.state == S.COMPLETE and t.value == t.user_attrs["cv"]["emoval"]
    assert "num_attention_heads=3" in (searched.out / "trials.md").read_text()


def test_resume_continues_and_keeps_finished_trials(searched):
    assert searched.codes[1] == 0
    assert len(searched.second) == 4
    assert snapshot(searched.second[:3]) == snapshot(searched.first)
    settings = {(t.params["num_attention_heads"], t.params["dropout"]) for t in searched.second}
    assert settings == {(3, 0.1), (3, 0.2), (4, 0.1), (4, 0.2)}                # the resume took the missing one
    # run 3 asks for 6 trials, but every setting is explored: nothing new runs, the seed runs are reused
    assert searched.codes[2] == 0 and "has been tried; stopping" in searched.log3
    dirs = sorted(os.path.basename(t.user_attrs["dir"]) for t in searched.third)
    assert dirs == sorted(os.listdir(searched.out / "trials"))                 # 4 trials, 4 runner folders
    assert snapshot(searched.third) == snapshot(searched.second)
    assert [p.stat().st_mtime for p in searched.seed_logs] == searched.mtimes and len(searched.mtimes) == 2


def test_best_yaml_reloads_in_merbench_format(searched, tiny_data):
    S = searched.optuna.trial.TrialState
    complete = [t for t in searched.second if t.state == S.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    path = str(searched.out / "best.yaml")
    table = options.load_yaml(path)
    assert table == yaml.safe_load(open(path)) and list(table) == [MODEL]
    assert table[MODEL] == {"hidden_dim": 16, "lr": 0.001, **best.params}     # "1e-3" read as the number
    settings = runner.resolve(runner.build_parser(), [str(tiny_data), "--model", MODEL, "--hyper_path", path])[0].settings
    assert (settings["num_attention_heads"], settings["dropout"], settings["hidden_dim"], settings["lr"]) == \
        (4, best.params["dropout"], 16, 0.001)
    summary = json.loads((searched.out / "summary.json").read_text())
    assert summary["best_trial"] == best.number and summary["best_settings"] == table[MODEL]
    rows = list(__import__("csv").reader(open(searched.out / "best_seeds.csv")))
    assert [r[0] for r in rows] == ["seed", "43", "44", "mean", "std"]       # fresh seeds, not the search's 42
    col = rows[0].index("test1 f1")
    a, b, mean = float(rows[1][col]), float(rows[2][col]), float(rows[3][col])
    assert mean == pytest.approx((a + b) / 2) and float(rows[4][col]) == pytest.approx(abs(a - b) / 2 ** 0.5)
    assert "±" in (searched.out / "best_seeds.md").read_text()
    assert len(list(__import__("csv").reader(open(searched.out / "trials.csv")))) == 1 + 4


FAKE_RUNNER = r"""
import json, os, sys, time, yaml
hyper, run_dir, model = sys.argv[1:4]
mode = yaml.safe_load(open(hyper))[model]["mode"]
print("  m fold 1/2: best epoch 1, eval %s (0.1s)" % ("emo 0.7000" if mode == "emo" else "emoval 0.5000"), flush=True)
if mode == "diverge":
    sys.exit("FloatingPointError: loss became nan (batch of 'x'...); lower --lr or raise --grad_clip")
if mode == "crash":
    print("Traceback (most recent call last):\nRuntimeError: CUDA out of memory", flush=True)
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
cv = {"f1": 0.5, "acc": 0.5} if mode == "nan" else {"f1": 0.6, "acc": 0.7, "val_mse": 0.4, "emoval": 0.5}
if mode == "nan":
    cv["emoval"] = None                       # the runner writes NaN as null
if mode == "noemoval":
    cv = {"f1": 0.8, "acc": 0.8}           # no emoval at all: the objective falls back to f1
json.dump({"cv": cv, "tests": {"test1": {"f1": 0.1}}}, open(os.path.join(run_dir, "summary_%s_1.json" % model), "w"))
"""


@pytest.fixture
def fake_runner(tmp_path, monkeypatch):
    """Trials run a 0.1 s stand-in for the runner that acts on its `mode` setting."""
    script = tmp_path / "fake_runner.py"
    script.write_text(FAKE_RUNNER)
    monkeypatch.setattr(search, "runner_command", lambda args, hyper, run_dir, seed, gpu: (
        [sys.executable, str(script), hyper, run_dir, args.model], None))
    return tmp_path


def test_diverged_pruned_failures_recorded_duplicates_reused(fake_runner, tiny_data):
    optuna = pytest.importorskip("optuna")
    S = optuna.trial.TrialState
    grid = fake_runner / "grid.yaml"
    grid.write_text(f"{MODEL}:\n  mode: [ok, diverge, crash, nan, hang, noemoval]\n")
    out = fake_runner / "out"
    base = ["search", "--model", MODEL, "--data", str(tiny_data), "--grid", str(grid), "--out", str(out),
            "--seeds", "0", "--trial_timeout", "3"]
    code, log = quiet_cli(base + ["--trials", "8"])
    assert code == 0, log
    trials = load_trials(optuna, out)
    assert len(trials) == 6 and "has been tried; stopping" in log     # 6 settings: a 7th would repeat one
    by_mode = {t.params["mode"]: t for t in trials}
    assert by_mode["ok"].state == S.COMPLETE and by_mode["ok"].value == 0.5
    assert by_mode["ok"].intermediate_values == {1: 0.5}               # per-fold eval metric reported
    assert by_mode["noemoval"].state == S.COMPLETE and by_mode["noemoval"].value == 0.8   # falls back to f1
    assert by_mode["diverge"].state == S.PRUNED and by_mode["diverge"].user_attrs["outcome"] == "diverged"
    assert by_mode["crash"].state == S.FAIL and "CUDA out of memory" in by_mode["crash"].user_attrs["error"]
    assert by_mode["nan"].state == S.FAIL and by_mode["nan"].user_attrs["outcome"] == "nan"
    assert by_mode["hang"].state == S.FAIL and by_mode["hang"].user_attrs["outcome"] == "timeout"
    assert json.loads((out / "summary.json").read_text())["best_trial"] == by_mode["noemoval"].number
    # a setting that already COMPLETEd comes up again: its result is copied, nothing is trained twice
    optuna.load_study(study_name=MODEL, storage=search.default_storage(str(out))).enqueue_trial({"mode": "ok"})
    assert quiet_cli(base + ["--trials", "7"])[0] == 0
    again = load_trials(optuna, out)[6]
    assert (again.state, again.value, again.user_attrs["same_as"]) == (S.COMPLETE, 0.5, by_mode["ok"].number)
    assert "dir" not in again.user_attrs and len(os.listdir(out / "trials")) == 6
    # TPE: a second study in the same storage; every distinct setting is trained exactly once
    grid.write_text(f"{MODEL}:\n  mode: [ok, noemoval]\n")
    code, log = quiet_cli(base + ["--study", "tpe", "--sampler", "tpe", "--sampler_seed", "0", "--trials", "3"])
    assert code == 0, log
    tpe = load_trials(optuna, out, "tpe")
    assert 2 <= len(tpe) <= 3 and all(t.state == S.COMPLETE for t in tpe)
    ran = [t for t in tpe if "dir" in t.user_attrs]
    assert len(ran) == len({t.params["mode"] for t in tpe}) and len(os.listdir(out / "trials")) == 6 + len(ran)


def test_dead_workers_trials_fail_and_their_settings_come_back(tmp_path):
    optuna = pytest.importorskip("optuna")
    S = optuna.trial.TrialState
    storage = search.open_storage(optuna, search.default_storage(str(tmp_path)), heartbeat=1)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                         # a pid that no longer runs

    def running(host, pid):
        t = study.ask()
        t.suggest_categorical("x", [1, 2, 3])
        t.set_user_attr("worker_host", host)
        t.set_user_attr("worker_pid", pid)
        return t
    local = running(socket.gethostname(), dead.pid)                  # this host, dead pid: failed at once
    remote = running("another-node", 1)                              # other host: only its heartbeat tells
    running(socket.gethostname(), os.getpid())               # alive: left alone
    study._storage.record_heartbeat(remote._trial_id)
    assert search.fail_stale_trials(optuna, study) == [local.number]
    time.sleep(3.5)          # > grace period (2 x heartbeat) + 1 s: SQLite keeps whole seconds
    assert search.fail_stale_trials(optuna, study) == [remote.number]
    trials = study.get_trials()
    assert [t.state for t in trials[:3]] == [S.FAIL, S.FAIL, S.RUNNING]
    assert "died mid-trial" in trials[local.number].user_attrs["error"]
    retries = [t for t in trials if t.state == S.WAITING]
    assert [(t.user_attrs["retry_of"], t.system_attrs["fixed_params"]) for t in retries] == \
        [(local.number, trials[local.number].params), (remote.number, trials[remote.number].params)]
    assert search.budget(optuna, trials) == (0, 1, 2)                   # re-queued FAILs do not use the budget


def test_slurm_writes_a_worker_array_and_a_dependent_report_job(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    out, bin_dir = tmp_path / "out", tmp_path / "bin"
    bin_dir.mkdir()
    argv = ["search", "--model", MODEL, "--data", str(tiny_data), "--out", str(out), "--trials", "8",
            "--workers", "3", "--slurm", "--sbatch_args", "--partition=gpu --time=2:00:00"] + RUNNER_FLAGS
    monkeypatch.setenv("PATH", str(bin_dir))                            # no sbatch: scripts + how to submit
    code, log = quiet_cli(argv)
    assert code == 1 and "sbatch not found" in log and "--dependency=afterany" in log
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\necho 4242\n")
    sbatch.chmod(0o755)
    code, log = quiet_cli(argv)
    assert code == 0 and "submitted worker array 4242" in log
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].endswith("search.sbatch") and "--dependency=afterany:4242" in calls[1]
    script = (out / "slurm" / "search.sbatch").read_text()
    assert "#SBATCH --array=0-2" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --time=2:00:00" in script and "#SBATCH --gres=gpu:1" in script
    worker = shlex.split(script.splitlines()[-1].replace("$SLURM_ARRAY_TASK_ID", "1"))
    assert worker[0] == "exec" and worker[2:5] == ["-m", "merbench_plugins", "search"]
    own, after = search.split_argv(worker[5:])
    args = search.build_parser().parse_args(own)                        # the worker joins the same study
    assert (args.worker_index, args.trials, args.study, args.storage) == (1, 8, MODEL, search.default_storage(str(out)))
    assert after == RUNNER_FLAGS[1:]
    assert "--report_only" in (out / "slurm" / "report.sbatch").read_text()


def test_bad_input_fails_before_any_trial(tiny_data, tmp_path, capsys):
    pytest.importorskip("optuna")
    base = ["search", "--model", MODEL, "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--trials", "2"]
    assert cli(base + ["--", "--seed", "3"]) == 2
    assert "--seed after `--` would clash" in capsys.readouterr().err
    assert cli(base + ["--", "--epochz", "2"]) == 2
    assert "invalid runner flags after `--`" in capsys.readouterr().err
    assert cli(base[:-2]) == 2 and "--trials N" in capsys.readouterr().err
    assert not (tmp_path / "o" / "trials").exists()


def test_surplus_trial_is_given_back_but_retries_always_run():
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study()
    for v in (0.1, 0.2):
        study.add_trial(optuna.trial.create_trial(value=v))
    late = study.ask()                      # two workers raced past --trials 2: this one is third
    assert search.is_surplus(optuna, late, total=2) and not search.is_surplus(optuna, late, total=3)
    study.enqueue_trial({}, user_attrs={"retry_of": 0})
    retry = study.ask()
    assert not search.is_surplus(optuna, retry, total=2)


# ---------------------------------------------------------------- issue 16: results you can trust

def fake_base(fake_runner, tiny_data, modes, *extra):
    grid = fake_runner / "grid.yaml"
    grid.write_text(f"{MODEL}:\n  mode: [{', '.join(modes)}]\n  hidden_dim: [16, 32]\n")
    return ["search", "--model", MODEL, "--data", str(tiny_data), "--grid", str(grid), "--out",
            str(fake_runner / "out"), "--seeds", "0", "--sampler_seed", "0", "--heartbeat", "0"] + list(extra)


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_grid_setting_after_dashdash_is_refused(fake_runner, tiny_data, capsys):
    pytest.importorskip("optuna")
    base = fake_base(fake_runner, tiny_data, ["a"], "--trials", "1")
    for flag in ("--hidden_dim", "--hidden"):          # argparse abbreviations too
        assert cli(base + ["--", flag, "64"]) == 2
        err = capsys.readouterr().err
        assert "--hidden_dim (searched by the grid) after `--` would override" in err
    assert not (fake_runner / "out" / "trials").exists()


def test_repeated_kills_never_use_budget_and_capped_setting_is_not_retrained(fake_runner, tiny_data):
    optuna = pytest.importorskip("optuna")
    S = optuna.trial.TrialState
    base = fake_base(fake_runner, tiny_data, ["a", "b", "c"])
    (fake_runner / "out").mkdir()
    study = optuna.create_study(study_name=MODEL, storage=search.default_storage(str(fake_runner / "out")))
    for k in range(search.MAX_RETRIES + 2):      # setting (a, 16): its worker is killed every time
        if k == 0:
            study.enqueue_trial({"mode": "a", "hidden_dim": 16})
        t = study.ask()                           # the re-queued setting comes back here
        assert (t.suggest_categorical("mode", ["a", "b", "c"]), t.suggest_categorical("hidden_dim", [16, 32])) == ("a", 16)
        t.set_user_attr("worker_host", socket.gethostname())
        t.set_user_attr("worker_pid", dead_pid())
        assert search.fail_stale_trials(optuna, study) == [t.number]
        if k == search.MAX_RETRIES:
            break
    lost = study.get_trials()
    assert search.budget(optuna, lost)[0] == 0 and not any(t.state == S.WAITING for t in lost)
    code, log = quiet_cli(base + ["--trials", "5"] + RUNNER_FLAGS)
    assert code == 0, log
    trials = load_trials(optuna, fake_runner / "out")
    trained = [(t.params["mode"], t.params["hidden_dim"]) for t in trials if "dir" in t.user_attrs]
    assert len(trained) == len(set(trained)) == 5 and ("a", 16) not in trained        # 5 distinct, a/16 given up
    assert sum(t.state == S.COMPLETE for t in trials) == 5
    assert "1 setting(s) given up" in log and "mode=a" in json.dumps(json.loads(
        (fake_runner / "out" / "summary.json").read_text())["given_up"])


def test_resume_refuses_other_runner_flags_and_new_starts_over(fake_runner, tiny_data, capsys):
    optuna = pytest.importorskip("optuna")
    base = fake_base(fake_runner, tiny_data, ["a", "b"], "--trials", "1")
    assert quiet_cli(base + ["--", "--epochs", "2"])[0] == 0
    with pytest.raises(SystemExit) as refused:
        quiet_cli(base + ["--trials", "2", "--", "--epochs", "3"])
    assert "another configuration" in str(refused.value) and "runner_args" in str(refused.value)
    assert "--new" in str(refused.value)
    with pytest.raises(SystemExit, match="another configuration"):        # seeds would re-run with other flags
        quiet_cli(base + ["--report_only", "--", "--epochs", "5"])
    assert len(load_trials(optuna, fake_runner / "out")) == 1
    assert quiet_cli(base + ["--new", "--", "--epochs", "3"])[0] == 0
    assert [t.number for t in load_trials(optuna, fake_runner / "out")] == [0]    # a fresh study


def test_running_setting_counts_as_taken(fake_runner, tiny_data, monkeypatch):
    optuna = pytest.importorskip("optuna")
    S = optuna.trial.TrialState
    base = fake_base(fake_runner, tiny_data, ["a"])
    (fake_runner / "out").mkdir()
    study = optuna.create_study(study_name=MODEL, storage=search.default_storage(str(fake_runner / "out")))
    for dim in (32, 16):                        # both settings of the grid are training in a live worker
        study.enqueue_trial({"hidden_dim": dim})
        running = study.ask()
        assert running.suggest_categorical("hidden_dim", [16, 32]) == dim
        running.set_user_attr("worker_host", socket.gethostname())
        running.set_user_attr("worker_pid", os.getpid())
    code, log = quiet_cli(base + ["--trials", "3"] + RUNNER_FLAGS)
    assert code == 1, log                                               # nothing finished yet: no report
    assert not (fake_runner / "out" / "trials").exists()                # nothing trained twice
    # a later twin (TPE, or a sampling race) waits for the running one and takes its result
    monkeypatch.setattr(search, "TWIN_POLL", 0.05)
    study.enqueue_trial({"hidden_dim": 16})
    twin = study.ask()
    assert twin.suggest_categorical("hidden_dim", [16, 32]) == 16
    threading.Timer(0.3, lambda: study.tell(running, 0.7)).start()
    found = search.finished_twin(optuna, twin, {"hidden_dim": 16}, ["hidden_dim"])
    assert found.number == running.number and study.get_trials()[running.number].state == S.COMPLETE


def test_pruner_reads_the_searched_metric_only(fake_runner, tiny_data, capsys):
    optuna = pytest.importorskip("optuna")
    base = fake_base(fake_runner, tiny_data, ["ok", "emo"], "--metric", "f1", "--pruner", "median", "--trials", "4")
    assert quiet_cli(base + RUNNER_FLAGS)[0] == 0
    reported = {(t.params["mode"], t.params["hidden_dim"]): t.intermediate_values
                for t in load_trials(optuna, fake_runner / "out")}
    assert reported[("ok", 16)] == {} and reported[("emo", 16)] == {1: 0.7}   # emoval is not f1; emo is
    assert cli(base[:-6] + ["--metric", "acc", "--pruner", "median", "--trials", "1"]) == 2
    assert "--pruner median reads" in capsys.readouterr().err


def test_slurm_report_job_uses_its_one_gpu(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setenv("PATH", str(tmp_path))                              # no sbatch: scripts only
    argv = ["search", "--model", MODEL, "--data", str(tiny_data), "--out", str(tmp_path / "out"), "--trials", "4",
            "--workers", "2", "--gpus", "0,1", "--slurm"] + RUNNER_FLAGS
    assert quiet_cli(argv)[0] == 1
    rep = (tmp_path / "out" / "slurm" / "report.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in rep and "--report_only" in rep and "--gpus" not in rep


def test_trial_without_owner_or_heartbeat_is_failed_and_requeued(tmp_path):
    optuna = pytest.importorskip("optuna")
    S = optuna.trial.TrialState
    storage = search.open_storage(optuna, search.default_storage(str(tmp_path)), heartbeat=1)
    study = optuna.create_study(study_name="s", storage=storage)
    orphan = study.ask()                      # its worker died before stamping its pid or a heartbeat
    orphan.suggest_categorical("x", [1, 2])
    assert search.fail_stale_trials(optuna, study) == []          # young: its worker may still be starting
    time.sleep(2.3)                                               # > grace period (2 x heartbeat)
    assert search.fail_stale_trials(optuna, study) == [orphan.number]
    trials = study.get_trials()
    assert trials[0].state == S.FAIL and "no owner" in trials[0].user_attrs["error"]
    assert trials[1].state == S.WAITING and trials[1].system_attrs["fixed_params"] == trials[0].params


def test_all_workers_crash_fails_and_ctrl_c_uses_no_retry(fake_runner, tiny_data, monkeypatch, capsys):
    optuna = pytest.importorskip("optuna")
    base = fake_base(fake_runner, tiny_data, ["a", "b"])
    assert quiet_cli(base + ["--trials", "1"] + RUNNER_FLAGS)[0] == 0          # one trial done: a report is possible
    monkeypatch.setattr(search, "worker_argv", lambda args, i: [sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert cli(base + ["--trials", "3", "--workers", "2"] + RUNNER_FLAGS) == 1
    err = capsys.readouterr().err
    assert "2 of 2 workers crashed" in err and "boom" in err
    study = optuna.load_study(study_name=MODEL, storage=search.default_storage(str(fake_runner / "out")))
    for k in range(search.MAX_RETRIES + 3):      # Ctrl-C again and again, then one lost worker
        study.enqueue_trial({"mode": "a", "hidden_dim": 32})
        t = study.ask()
        t.suggest_categorical("mode", ["a", "b"])
        t.suggest_categorical("hidden_dim", [16, 32])
        t.set_user_attr("interrupted", k <= search.MAX_RETRIES)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
        search.requeue(study, study.get_trials()[t.number], interrupted=k <= search.MAX_RETRIES)
        assert study.get_trials()[-1].state == optuna.trial.TrialState.WAITING    # queued again every time
        assert study.get_trials()[-1].user_attrs["retries"] == max(0, k - search.MAX_RETRIES)   # lost workers only
        study.ask()                               # a worker takes the retry (left RUNNING here)
    assert not search.gave_up_settings(study)


def test_sqlite_workers_ask_one_at_a_time(tmp_path):
    """Two workers popping the same re-queued trial at once both trained it (SQLite has no row locks)."""
    optuna = pytest.importorskip("optuna")
    url = search.default_storage(str(tmp_path))
    optuna.create_study(study_name="s", storage=url).enqueue_trial({"x": 1})
    spans = []

    class Slow(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):      # inside ask(), after the trial is popped or created
            start = time.time()
            time.sleep(0.3)
            spans.append((start, time.time(), trial.number))

    def worker():
        study = optuna.load_study(study_name="s", storage=url, sampler=Slow())
        search.serialize_ask(study, str(tmp_path / ".ask.lock"))
        study.ask()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1, na), (b0, b1, nb) = sorted(spans)
    assert a1 <= b0 and na != nb                       # no overlap; the queued trial went to one worker
