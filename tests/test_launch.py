"""The launcher (merbench_plugins/launch/): the local queue (GPU round-robin, CPU slots, resume, retry of a
crashed run), the SLURM array script, and JSON metadata that survives awkward strings.

Jobs are tiny Python one-liners that log start/end times, so the queue tests take a second or two.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from merbench_plugins.launch import experiments, queue, slurm
from merbench_plugins.launch.queue import CPU, Job, LaunchError

AWKWARD = ['say "hi"', "it's", "tab\there", "new\nline", "back\\slash", "$HOME `x`", "ünï", "", "--flag=a b"]

# a job: append "start/end <device> <t>" to the log, sleep, then exit CODE (0: write a run summary)
JOB = """
import json, os, sys, time
log, device, code, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(log, "a") as f: f.write(f"start {device} {time.time()}\\n")
print("working on", device); time.sleep(pause)
with open(log, "a") as f: f.write(f"end {device} {time.time()}\\n")
if code: print(f"boom {code}", file=sys.stderr); sys.exit(code)
json.dump({"argv": sys.argv[5:]}, open(os.path.join(os.getcwd(), "summary_x.json"), "w"))
"""


def make_job(tmp_path, k, code=0, pause=0.3, extra=()):
    run_dir = tmp_path / "runs" / f"job{k}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", JOB, str(tmp_path / "times.log"), f"job{k}", str(code), str(pause), *extra]
    return Job(name=f"job{k}", command=cmd, run_dir=str(run_dir), workdir=str(run_dir), label=f"k={k}",
               meta={"k": k})


def spans(log: Path):
    """job -> (start, end)"""
    out = {}
    for line in log.read_text().splitlines():
        kind, job, t = line.split()
        out.setdefault(job, [None, None])[kind == "end"] = float(t)
    return out


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


# ---------------------------------------------------------------------------------------------------
# slots and the queue

def test_parse_slots():
    assert queue.parse_slots("0,1, 3") == ["0", "1", "3"]
    assert queue.parse_slots("", "3") == queue.parse_slots("cpu", "3") == [CPU] * 3
    assert queue.parse_slots(None) == [CPU]
    for gpus, jobs, message in [("0,a", "1", "GPUS must be"), ("cpu", "0", "JOBS must be"), ("", "x", "JOBS must")]:
        with pytest.raises(LaunchError, match=message):
            queue.parse_slots(gpus, jobs)


def test_gpu_round_robin_one_job_per_gpu_at_a_time(tmp_path, capsys):
    jobs = queue.deal([make_job(tmp_path, k) for k in range(5)], ["0", "1"])
    assert [(j.slot, j.device) for j in jobs] == [(0, "0"), (1, "1"), (0, "0"), (1, "1"), (0, "0")]
    assert queue.run_local(jobs) == []
    s = spans(tmp_path / "times.log")
    for a in jobs:
        for b in jobs:
            if a is not b and a.device == b.device:
                assert not overlaps(s[a.name], s[b.name]), (a.name, b.name)      # one at a time per GPU
    assert s["job0"][1] <= s["job2"][0] <= s["job2"][1] <= s["job4"][0]         # in the dealt order
    assert any(overlaps(s[f"job{a}"], s[f"job{b}"]) for a in (0, 2, 4) for b in (1, 3))   # the GPUs in parallel
    printed = capsys.readouterr().out
    assert printed.count("start ") == 5 and printed.count("done  ") == 5 and "gpu:1" in printed


def test_cpu_slots_run_jobs_at_a_time(tmp_path):
    jobs = queue.deal([make_job(tmp_path, k, pause=0.8) for k in range(3)], queue.parse_slots("cpu", "3"))
    assert {j.slot for j in jobs} == {0, 1, 2} and {j.device for j in jobs} == {CPU}
    queue.run_local(jobs, threads="2", out=open(os.devnull, "w"))
    s = spans(tmp_path / "times.log")
    assert max(a for a, _ in s.values()) < min(b for _, b in s.values())       # all three ran at once


def test_cpu_jobs_get_the_thread_count(tmp_path):
    job = make_job(tmp_path, 0)
    job.command = [sys.executable, "-c", "import os, json; json.dump(os.environ['OMP_NUM_THREADS'], "
                                         "open('summary_t.json', 'w'))"]
    assert queue.run_local(queue.deal([job], [CPU]), threads="3", out=open(os.devnull, "w")) == []
    assert json.load(open(Path(job.run_dir) / "summary_t.json")) == "3"


def test_finished_run_is_skipped_crashed_one_retried_with_its_old_log_kept(tmp_path):
    done, crash = make_job(tmp_path, 0), make_job(tmp_path, 1, code=3)
    Path(done.run_dir, "summary_old.json").write_text("{}")
    failed = queue.run_local(queue.deal([done, crash], ["0"]), out=open(os.devnull, "w"))
    assert [(j.name, rc) for j, rc in failed] == [("job1", 3)]
    assert not Path(done.log).exists() and list(spans(tmp_path / "times.log")) == ["job1"]   # never started
    assert "boom 3" in Path(crash.log).read_text()

    retry = make_job(tmp_path, 1)                                   # the same run, fixed
    assert queue.run_local(queue.deal([done, retry], ["0"]), out=open(os.devnull, "w")) == []
    assert "boom 3" in Path(crash.log + ".1").read_text()          # the crash's log, kept
    assert "boom" not in Path(retry.log).read_text() and queue.has_summary(retry.run_dir)
    assert not Path(retry.log + ".2").exists()


def test_exit_0_without_a_result_is_a_failure(tmp_path):
    job = make_job(tmp_path, 0)
    job.command = [sys.executable, "-c", "print('nothing written')"]
    (failed_job, rc), = queue.run_local([job], out=open(os.devnull, "w"))
    assert rc == 1 and "left no result" in Path(job.log).read_text()


def test_a_missing_command_fails_that_job_only(tmp_path):
    bad, good = make_job(tmp_path, 0), make_job(tmp_path, 1)
    bad.command = [str(tmp_path / "no-such-program")]
    failed = queue.run_local(queue.deal([bad, good], ["0"]), out=open(os.devnull, "w"))
    assert [(j.name, rc) for j, rc in failed] == [("job0", 127)] and queue.has_summary(good.run_dir)


def test_has_summary_layouts(tmp_path):
    assert not queue.has_summary(str(tmp_path / "missing"))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".summary_tmp.json").write_text("{}")          # a half-written temp file
    (tmp_path / "a" / "variant.json").write_text("{}")
    assert not queue.has_summary(str(tmp_path / "a"))
    (tmp_path / "a" / "saved" / "summary").mkdir(parents=True)      # MERBench: saved*/summary/*.json
    (tmp_path / "a" / "saved" / "summary" / "features:x_1.json").write_text("{}")
    assert queue.has_summary(str(tmp_path / "a"))


def test_rotate_log(tmp_path):
    log = tmp_path / "run.log"
    assert queue.rotate_log(str(log)) is None
    for k in (1, 2):
        log.write_text(f"try {k}")
        assert queue.rotate_log(str(log)) == f"{log}.{k}"
    assert (tmp_path / "run.log.1").read_text() == "try 1" and not log.exists()


# ---------------------------------------------------------------------------------------------------
# JSON metadata and command lines with awkward strings

def test_metadata_and_command_survive_awkward_strings(tmp_path):
    job = make_job(tmp_path, 0, extra=AWKWARD)
    job.meta = {"variant": 'v"1\t\n', "flags": AWKWARD}
    job.env = {"NOTE": "a 'b' \"c\"\n"}
    queue.write_meta(job)
    meta = json.loads(Path(job.run_dir, "job.json").read_text())
    assert meta["variant"] == 'v"1\t\n' and meta["flags"] == AWKWARD and meta["command"] == job.command
    assert meta["env"] == job.env and meta["device"] == CPU
    line = Path(job.run_dir, "command.txt").read_text()
    words = shlex.split(line)
    assert words[:3] == ["cd", job.workdir, "&&"] and words[3:] == ["env", "NOTE=a 'b' \"c\"\n", *job.command]
    # the command line, run by bash, hands the job exactly these arguments
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(Path(job.run_dir, "summary_x.json")))["argv"] == AWKWARD


def test_ablate_passes_awkward_flags_and_writes_json_metadata(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "label-6way.npz").write_bytes(b"")
    fake = tmp_path / "fakepy"            # stands in for the runs' python: records its argv as a run summary
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
                    "os.makedirs(out, exist_ok=True)\n"
                    "json.dump({'argv': sys.argv[1:]}, open(os.path.join(out, 'summary_fake.json'), 'w'))\n")
    fake.chmod(0o755)
    for k in ("GPUS", "SEEDS", "EXTRA", "THREADS", "ROBUST_EVAL", "OUT_DIR", "FOLDS", "EPOCHS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PYTHON", str(fake))
    monkeypatch.setenv("GPUS", "cpu")
    monkeypatch.setenv("SEEDS", "4")
    monkeypatch.setenv("EXTRA", """--note 'a "quoted" word'""")
    monkeypatch.setattr(experiments, "check_import", lambda python, workdir: None)
    out = tmp_path / "abl"
    rc = experiments.ablate_main(["--standalone", str(data), "--out", str(out), "--only", "v2_no_recon", "--",
                                  *AWKWARD])
    assert rc == 1      # the fake's summaries are not real run summaries: nothing to summarize
    run = out / "v2_no_recon" / "seed4"
    argv = json.load(open(run / "summary_fake.json"))["argv"]
    k = argv.index("--note")
    assert argv[k + 1] == 'a "quoted" word' and argv[k + 2:] == AWKWARD + ["--recon_weight", "0"]
    meta = json.loads((run / "variant.json").read_text())
    assert (meta["variant"], meta["model"], meta["seed"], meta["order"]) == ("v2_no_recon", "attention_robust_v2", 4, 3)
    assert meta["flags"] == ["--recon_weight", "0"] and meta["command"][1:] == argv
    capsys.readouterr()


def test_seeds_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MERBENCH_ROOT", raising=False)
    assert experiments.seeds_main(["attention_robust_v2", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: MERBENCH_ROOT is not set")
    assert experiments.seeds_main(["attention_robust_v2", "--only", "x"]) == 2      # no grid to filter
    assert "unknown option --only" in capsys.readouterr().err
    assert experiments.ablate_main(["--only", "v2_full,nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# SLURM

def slurm_jobs(tmp_path, n=2):
    jobs = [make_job(tmp_path, k, extra=AWKWARD) for k in range(n)]
    for j in jobs:
        j.device = "0"
    return jobs


def test_slurm_script_text(tmp_path):
    opts = slurm.SlurmOptions(partition="gpuq", time="01:00:00", gpus=2, cpus=8, mem="32G", account="lab",
                              max_parallel="3", extra=["--constraint=a100"])
    text = slurm.array_script("exp", slurm_jobs(tmp_path, 3), str(tmp_path), opts)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in ("--job-name=mp-exp", "--array=0-2%3", "--time=01:00:00", "--cpus-per-task=8",
                     f"--output={tmp_path}/slurm-logs/%A_%a.out", "--gres=gpu:2", "--partition=gpuq",
                     "--account=lab", "--mem=32G", "--constraint=a100"):
        assert f"#SBATCH {expected}" in lines
    assert sum(line.startswith("#SBATCH") for line in lines) == 10
    assert "set -euo pipefail" in lines and "finished already" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    cpu = slurm.array_script("exp", slurm_jobs(tmp_path, 1), str(tmp_path), slurm.SlurmOptions(gpus=0), finished=None)
    assert "--gres" not in cpu and "#SBATCH --array=0-0" in cpu and "finished already" not in cpu


def test_slurm_task_runs_its_job_once_and_keeps_the_old_log(tmp_path):
    jobs = slurm_jobs(tmp_path, 2)
    script = slurm.write_script(str(tmp_path / "a.sbatch"), slurm.array_script("exp", jobs, str(tmp_path),
                                                                               slurm.SlurmOptions()))
    Path(jobs[1].log).write_text("an earlier attempt")
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1")
    for expected in ("", "finished already"):
        proc = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
        assert proc.returncode == 0 and expected in proc.stdout, proc.stderr
    assert json.load(open(Path(jobs[1].run_dir, "summary_x.json")))["argv"] == AWKWARD   # exact arguments
    assert Path(jobs[1].log + ".1").read_text() == "an earlier attempt"
    assert "working on" in Path(jobs[1].log).read_text()
    assert not queue.has_summary(jobs[0].run_dir)                   # task 1 ran job 1 only
    proc = subprocess.run(["bash", script], env=dict(env, SLURM_ARRAY_TASK_ID="7"), capture_output=True, text=True)
    assert proc.returncode == 2 and "no job 7" in proc.stderr


def test_slurm_options_from_env():
    opts = slurm.SlurmOptions.from_env({"SLURM_GPUS": "0", "SLURM_CPUS": "16", "SLURM_PARTITION": "p"})
    assert (opts.gpus, opts.cpus, opts.device, opts.time) == (0, 16, CPU, "04:00:00")
    assert opts.submit_flags() == ["--partition", "p"] and slurm.SlurmOptions.from_env({}).device == "0"
    with pytest.raises(LaunchError, match="SLURM_GPUS must be"):
        slurm.SlurmOptions.from_env({"SLURM_GPUS": "two"})


def test_submit_without_sbatch_prints_the_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))      # no sbatch here
    said = []
    assert slurm.submit(str(tmp_path / "x.sbatch"), "exp", slurm.SlurmOptions(partition="p"),
                        then=["python", "-m", "merbench_plugins", "summarize", "o"], say=said.append) == slurm.NO_SBATCH
    text = "\n".join(said)
    assert "sbatch not found" in text and "jid=$(sbatch --parsable" in text
    assert "--dependency=afterany:$jid" in text and "--partition p" in text and "summarize o" in text


def test_submit_with_sbatch(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    sbatch = tmp_path / "sbatch"
    sbatch.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {calls}\necho "77;cluster"\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    said = []
    assert slurm.submit("/x/a.sbatch", "exp", slurm.SlurmOptions(), then=["echo", "a b"],
                        say=said.append) == slurm.SUBMITTED
    first, second = calls.read_text().splitlines()
    assert first == "--parsable /x/a.sbatch" and "--dependency=afterany:77 " in second
    assert second.endswith("--wrap echo 'a b'") and "submitted array job 77" in said


def test_pool_script_substitutes_the_task_id(tmp_path):
    opts = slurm.SlurmOptions(time="", cpus=0, gpus=0, extra=["--partition=gpu"])
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1:])", "it's", slurm.TASK_ID]
    text = slurm.pool_script("pool", argv, str(tmp_path), f"{tmp_path}/w_%a.log", opts, tasks=3)
    lines = text.splitlines()
    assert [x for x in lines if x.startswith("#SBATCH")] == [
        "#SBATCH --job-name=pool", "#SBATCH --array=0-2", f"#SBATCH --output={tmp_path}/w_%a.log",
        "#SBATCH --partition=gpu"]                                   # no time, CPUs or GPUs asked for
    proc = subprocess.run(["bash", "-c", text], env=dict(os.environ, SLURM_ARRAY_TASK_ID="2"),
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "[\"it's\", '2']"
    assert "--array" not in slurm.pool_script("one", argv, ".", "o.log", opts)


def test_submit_then_script(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    (tmp_path / "sbatch").write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {calls}\necho 5\n')
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    said = []
    assert slurm.submit("/a.sbatch", "x", slurm.SlurmOptions(partition="p"), then_script="/r.sbatch",
                        what="worker array", say=said.append) == slurm.SUBMITTED
    assert calls.read_text().splitlines() == ["--parsable /a.sbatch", "--parsable --dependency=afterany:5 /r.sbatch"]
    assert said[0] == "submitted worker array 5"
    (tmp_path / "sbatch").write_text("#!/usr/bin/env bash\necho 'no partition' >&2; exit 1\n")
    assert slurm.submit("/a.sbatch", "x", slurm.SlurmOptions(), say=said.append) == slurm.REFUSED
    assert "no partition" in said[-1]


def test_workers_without_results_ticks_and_a_stubborn_job_is_killed(tmp_path):
    worker = make_job(tmp_path, 0, pause=0.5)
    worker.command = [sys.executable, "-c", "import time; print('worked'); time.sleep(0.5)"]
    worker.meta_name, worker.log_name = None, "worker_0.log"
    ticks = []
    assert queue.run_local([worker], finished=None, on_tick=lambda: ticks.append(1), tick=0.1,
                           out=open(os.devnull, "w")) == []
    assert len(ticks) >= 3 and "worked" in Path(worker.run_dir, "worker_0.log").read_text()
    assert not Path(worker.run_dir, "job.json").exists()            # no metadata for a shared folder

    stubborn = make_job(tmp_path, 1)
    stubborn.command = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                              "print('ready', flush=True); time.sleep(60)"]
    q = queue.Queue([stubborn], finished=None, grace=0.5, out=open(os.devnull, "w"))
    t = threading.Thread(target=q.run_slot, args=([stubborn],))
    t.start()
    while "ready" not in (Path(stubborn.log).read_text() if Path(stubborn.log).exists() else ""):
        time.sleep(0.05)
    start = time.time()
    q.stop()                                                        # SIGTERM ignored: SIGKILL after 0.5 s
    t.join(10)
    assert not t.is_alive() and time.time() - start < 5 and q.failed[0][1] == -9


def test_a_job_past_its_time_limit_is_killed(tmp_path):
    job = make_job(tmp_path, 0)
    job.command, job.timeout = [sys.executable, "-c", "import time; time.sleep(30)"], 0.5
    start = time.time()
    (_, rc), = queue.run_local([job], finished=None, out=open(os.devnull, "w"))
    assert rc == -9 and time.time() - start < 10 and "time limit" in Path(job.log).read_text()


# ---------------------------------------------------------------------------------------------------
# parallel seeds: one job per variant carrying its unfinished seeds

# stands in for the runner: one summary per seed, in --out with {seed} filled (as `train --seeds` writes)
FAKE_SEEDS_RUNNER = """import json, os, sys
a = sys.argv[1:]
seeds = a[a.index('--seeds') + 1].split(',') if '--seeds' in a else [a[a.index('--seed') + 1]]
for s in seeds:
    out = a[a.index('--out') + 1].replace('{seed}', s)
    os.makedirs(out, exist_ok=True)
    json.dump({'argv': a, 'seed': int(s)}, open(os.path.join(out, 'summary_fake.json'), 'w'))
"""


def parallel_seeds_setup(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "label-6way.npz").write_bytes(b"")
    fake = tmp_path / "fakepy"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_SEEDS_RUNNER)
    fake.chmod(0o755)
    for k in ("GPUS", "SEEDS", "EXTRA", "THREADS", "ROBUST_EVAL", "OUT_DIR", "FOLDS", "EPOCHS", "PARALLEL_SEEDS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PYTHON", str(fake))
    monkeypatch.setenv("GPUS", "cpu")
    monkeypatch.setenv("SEEDS", "0 1 2")
    monkeypatch.setenv("PARALLEL_SEEDS", "1")
    monkeypatch.setattr(experiments, "check_import", lambda python, workdir: None)
    return data


def test_parallel_seeds_one_job_per_variant_then_resume_trains_only_unfinished_seeds(tmp_path, monkeypatch, capsys):
    data = parallel_seeds_setup(tmp_path, monkeypatch)
    out = tmp_path / "abl"
    argv = ["--standalone", str(data), "--out", str(out), "--only", "v2_full,v2_no_recon"]
    assert experiments.ablate_main(argv) == 1       # the fake's summaries are not real ones: nothing to summarize
    text = capsys.readouterr().out
    assert "2 jobs = 2 variant(s) x 3 seed(s)" in text and text.count("start ") == 2
    for variant in ("v2_full", "v2_no_recon"):
        job = json.loads((out / variant / "parallel_seeds" / "job.json").read_text())
        assert job["seeds"] == [0, 1, 2] and job["command"][job["command"].index("--seeds") + 1] == "0,1,2"
        assert "--parallel_seeds" in job["command"]
        assert job["command"][job["command"].index("--out") + 1] == str(out / variant / "seed{seed}")
        for seed in (0, 1, 2):
            run = out / variant / f"seed{seed}"
            assert json.loads((run / "summary_fake.json").read_text())["seed"] == seed
            meta = json.loads((run / "variant.json").read_text())     # what summarize groups by
            assert (meta["variant"], meta["seed"]) == (variant, seed)
    listed = (out / "v2_full" / "parallel_seeds" / experiments.SEED_DIRS).read_text().splitlines()
    assert listed == [str(out / "v2_full" / f"seed{seed}") for seed in (0, 1, 2)]
    # resume: seeds 1 and 2 of v2_full unfinished -> one job with just those; v2_no_recon: seed 2 alone
    for variant, seeds in (("v2_full", (1, 2)), ("v2_no_recon", (2,))):
        for seed in seeds:
            (out / variant / f"seed{seed}" / "summary_fake.json").unlink()
    assert experiments.ablate_main(argv + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    run_lines = [line for line in text.splitlines() if "] run " in line]
    assert len(run_lines) == 2 and text.count("] skip ") == 3
    assert "--seeds 1,2 --parallel_seeds" in run_lines[0] and "seed0" not in run_lines[0]
    assert "--seed 2 " in run_lines[1] and "--seeds" not in run_lines[1]
    monkeypatch.setenv("PARALLEL_SEEDS", "0")           # off: one job per unfinished seed
    assert experiments.ablate_main(argv + ["--dry-run"]) == 0
    assert capsys.readouterr().out.count("] run ") == 3


def test_parallel_seeds_flag_and_bad_env(tmp_path, monkeypatch, capsys):
    data = parallel_seeds_setup(tmp_path, monkeypatch)
    monkeypatch.delenv("PARALLEL_SEEDS")
    argv = ["attention_robust_v2", "--standalone", str(data), "--out", str(tmp_path / "o"), "--dry-run"]
    assert experiments.seeds_main(argv + ["--parallel-seeds"]) == 0
    assert "seeds=0,1,2" in capsys.readouterr().out
    monkeypatch.setenv("PARALLEL_SEEDS", "yes")
    assert experiments.seeds_main(argv) == 2
    assert "PARALLEL_SEEDS must be 1" in capsys.readouterr().err


def test_slurm_task_of_parallel_seeds_is_finished_only_when_every_seed_is(tmp_path, monkeypatch, capsys):
    data = parallel_seeds_setup(tmp_path, monkeypatch)
    argv = ["attention_robust_v2", "--standalone", str(data), "--out", str(tmp_path / "o"), "--slurm", "--dry-run"]
    assert experiments.seeds_main(argv) == 0
    assert experiments.FINISHED in capsys.readouterr().out
    job = tmp_path / "v" / "parallel_seeds"
    job.mkdir(parents=True)
    seeds = [tmp_path / "v" / f"seed{s}" for s in (1, 2)]
    (job / experiments.SEED_DIRS).write_text("".join(f"{d}\n" for d in seeds))

    def finished(folder):
        test = f'set -euo pipefail; DIR={shlex.quote(str(folder))}; if {experiments.FINISHED}; then echo y; else echo n; fi'
        return subprocess.run(["bash", "-c", test], capture_output=True, text=True, check=True).stdout.strip() == "y"

    assert not finished(job)
    for k, d in enumerate(seeds):
        d.mkdir()
        (d / "summary_x.json").write_text("{}")
        assert finished(job) == (k == 1)
    assert finished(seeds[0]) and not finished(tmp_path / "elsewhere")      # a per-seed task: its own summary


# ---------------------------------------------------------------------------------------------------
# processes: jobs die with the launcher (signals, kill -9), a run folder has one live owner, a rerun
# never trains a seed twice

REPO = Path(__file__).resolve().parents[1]

# stands in for the runs' python (PYTHON=...): `-c ...` is the launcher's import check; a run writes its
# pid (and, FAKE_CHILD=1, starts a grandchild and writes its pid too), sleeps FAKE_SLEEP_<seed> seconds,
# then writes a run summary summarize reads
FAKE_RUNNER = """import json, os, subprocess, sys, time
a = sys.argv[1:]
if a[:1] == ['-c']:
    sys.exit(0)
out, seed = a[a.index('--out') + 1], int(a[a.index('--seed') + 1])
os.makedirs(out, exist_ok=True)
pids = [os.getpid()]
if os.environ.get('FAKE_CHILD'):
    pids.append(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']).pid)
with open(os.path.join(out, 'pids'), 'w') as f:
    f.write(' '.join(map(str, pids)))
time.sleep(float(os.environ.get(f'FAKE_SLEEP_{seed}', '0')))
json.dump({'model': 'attention', 'seed': seed, 'tests': {'test1': {'f1': 0.1 * seed}}},
          open(os.path.join(out, 'summary_attention_x.json'), 'w'))
"""


def alive(pid: int) -> bool:
    """The process runs (a zombie nobody reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def wait_for(condition, timeout=20.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def run_pids(folder: Path):
    wait_for(lambda: (folder / "pids").exists() and (folder / "pids").read_text().strip())
    return [int(p) for p in (folder / "pids").read_text().split()]


def default_stop_signals():
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.fixture
def seeds_cli(tmp_path):
    """``python -m merbench_plugins seeds attention --standalone DATA --out OUT`` as a process, with the fake
    runner: (start(**env) -> Popen, OUT)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "label-6way.npz").write_bytes(b"")
    fake = tmp_path / "fakepy"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_RUNNER)
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("EXTRA", "THREADS", "ROBUST_EVAL", "OUT_DIR", "FOLDS",
                                                            "EPOCHS", "PARALLEL_SEEDS", "JOBS")}
    env.update(PYTHON=str(fake), GPUS="cpu", SEEDS="0 1 2", PYTHONPATH=str(REPO))

    def start(**extra):
        # as from a terminal: a suite run under nohup or as a background job inherits SIGHUP / SIGINT ignored,
        # which the launcher rightly keeps ignored (nohup asked for it), so the signal tests would test nothing
        return subprocess.Popen([sys.executable, "-m", "merbench_plugins", "seeds", "attention", "--standalone",
                                 str(data), "--out", str(out)], env=dict(env, **extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
    yield start, out
    for pids in out.glob("*/*/pids"):                # a failed test leaves no job running
        for pid in map(int, pids.read_text().split()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("poll", [False, True], ids=["prctl", "poll"])
def test_kill_9_of_the_launcher_kills_its_job(tmp_path, poll):
    """tether.py: Linux's parent-death signal, or (elsewhere; forced here) a watcher that polls the parent."""
    pid_file = tmp_path / "pids"
    job = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                 "time.sleep(60)"]
    launcher = subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys, time; subprocess.Popen("
                                 "[sys.executable, '-I', sys.argv[1], str(os.getpid())] + sys.argv[2:], "
                                 "start_new_session=True); time.sleep(60)",
                                 queue.TETHER, *(["--poll"] if poll else []), *job])
    wait_for(lambda: pid_file.exists() and pid_file.read_text())
    pid = int(pid_file.read_text())
    assert alive(pid)
    launcher.kill()                                     # kill -9 of the launcher alone
    launcher.wait()
    wait_for(lambda: not alive(pid), timeout=5)


@pytest.mark.parametrize("poll", [False, True], ids=["prctl", "poll"])
def test_tether_passes_on_the_job_exit_status(poll):
    def rc(code):
        return subprocess.run([sys.executable, "-I", queue.TETHER, str(os.getpid()), *(["--poll"] if poll else []),
                               sys.executable, "-c", code]).returncode
    assert rc("raise SystemExit(3)") == 3
    assert rc("import os, signal; os.kill(os.getpid(), signal.SIGTERM)") == -signal.SIGTERM
    assert subprocess.run([sys.executable, "-I", queue.TETHER, str(os.getpid()), "no-such-program-x"],
                          capture_output=True, text=True).returncode == 127


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_to_the_launcher_stops_its_job_and_what_the_job_started(seeds_cli, sig):
    start, out = seeds_cli
    launcher = start(FAKE_SLEEP_0="60", FAKE_CHILD="1")
    job, grandchild = run_pids(out / "attention" / "seed0")
    launcher.send_signal(sig)
    _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 130 and "interrupted: rerun the same command to resume" in err
    wait_for(lambda: not alive(job) and not alive(grandchild), timeout=5)     # the job's whole process group
    assert not (out / "attention" / "seed1").exists()                        # nothing after the stop


def test_kill_9_of_the_seeds_launcher_then_rerun_trains_each_seed_once(seeds_cli):
    """The issue's row: the orphan dies with the launcher; the rerun trains seed 1 once; summary seeds 0 1 2."""
    start, out = seeds_cli
    launcher = start(FAKE_SLEEP_1="60")             # seed 1 trains for a minute
    seed1 = out / "attention" / "seed1"
    job, = run_pids(seed1)
    launcher.kill()                                 # kill -9 of the launcher alone
    launcher.wait()
    wait_for(lambda: not alive(job), timeout=5)     # its job goes with it
    rerun = start()
    stdout, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert "[1/3] skip attention" in stdout and [line.split()[:3] for line in stdout.splitlines()
                                                 if line.startswith("start ")] == [["start", "attention", "seed=1"],
                                                                                   ["start", "attention", "seed=2"]]
    assert sorted(os.listdir(seed1)) == ["command.txt", "pids", "run.log", "run.log.1", "summary_attention_x.json",
                                         "variant.json"]           # the killed attempt's log kept, one summary
    row = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| attention"))
    assert [c.strip() for c in row.split("|")[3:5]] == ["3", "0 1 2"]
    assert "run summaries" not in err


def test_a_run_folder_another_live_process_holds_is_skipped_then_trained_once_it_is_free(seeds_cli):
    start, out = seeds_cli
    held = out / "attention" / "seed1"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from merbench_plugins import runlock; "
                               "runlock.claim(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(held)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "held"
        launcher = start()
        stdout, err = launcher.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert launcher.returncode == 1
    skip = next(line for line in stdout.splitlines() if line.startswith("skip  attention"))
    assert skip.split()[:3] == ["skip", "attention", "seed=1"]
    assert f" another live process trains {held} (pid {holder.pid} on " in skip
    assert "1 job(s) not run: another live process trains them" in err
    assert os.listdir(held) == [".run.lock"]          # not touched: no log, no metadata, no result
    assert launcher.returncode == 1 and "| attention | attention | 2    | 0 2   |" in stdout
    rerun = start()                                    # the holder is gone (killed): seed 1 is trained now
    stdout, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert "| attention | attention | 3    | 0 1 2 |" in stdout


def test_two_launchers_on_one_folder_train_each_seed_once(seeds_cli):
    """The second launcher skips what the first trains, and the first skips (or finds finished) what the second
    took meanwhile: the run folder is locked from the launcher's check until its job exits."""
    start, out = seeds_cli
    first = start(SEEDS="0 1", FAKE_SLEEP_0="2", FAKE_SLEEP_1="3")     # the second starts within 5 s
    run_pids(out / "attention" / "seed0")
    second = start(SEEDS="0 1", FAKE_SLEEP_1="1")
    (out1, _), (out2, err2) = first.communicate(timeout=60), second.communicate(timeout=60)
    starts = [line.split()[2] for line in (out1 + out2).splitlines() if line.startswith("start ")]
    assert sorted(starts) == ["seed=0", "seed=1"], out1 + out2
    assert "skip  attention" in out2 and second.returncode == 1 and "1 job(s) not run" in err2
    for seed in (0, 1):
        assert len(list((out / "attention" / f"seed{seed}").glob("summary_*.json"))) == 1


@pytest.mark.parametrize("command", ["seeds", "ablate", "bench-robust", "search"])
def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, command):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out"
    data = tmp_path / "data"
    data.mkdir()
    (data / "label-6way.npz").write_bytes(b"")
    argv = {"seeds": ["attention", "--standalone", str(data)], "ablate": ["--standalone", str(data)],
            "bench-robust": [], "search": ["--model", "attention", "--data", str(data), "--trials", "1"]}[command]
    proc = subprocess.run([sys.executable, "-m", "merbench_plugins", command, *argv, "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO),
                                                                                 GPUS="cpu"))
    assert proc.returncode == 2
    flag = "--out (or OUT_DIR)" if command in ("seeds", "ablate") else "--out"
    assert proc.stderr.strip() == (f"error: cannot write to the output folder {out} ({tmp_path / 'afile'} is a file); "
                                   f"choose another {flag} or make it writable")
    assert sorted(os.listdir(tmp_path)) == ["afile", "data"]


def test_summarize_counts_a_seed_found_twice_once(tmp_path, capsys):
    from merbench_plugins.evaluate import summarize
    for k, (folder, seed, f1) in enumerate([("seed0", 0, 0.2), ("seed1", 1, 0.9), ("seed1", 1, 0.4), ("seed2", 2, 0.6)]):
        path = tmp_path / "v" / folder / f"summary_attention_{k}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": "attention", "seed": seed, "tests": {"test1": {"f1": f1}}}))
        os.utime(path, (1000 + k, 1000 + k))           # the k-th written k-th
    assert summarize.main([str(tmp_path), "--metrics", "f1"]) == 0
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("| attention"))
    assert [c.strip() for c in row.split("|")[3:6]] == ["3", "0 1 2", "0.4000 ± 0.2000"]    # mean of 0.2 0.4 0.6
    ignored, kept = (tmp_path / "v" / "seed1" / f"summary_attention_{k}.json" for k in (1, 2))
    assert (f"warning: group 'attention': seed 1 has 2 run summaries; counted once, the newest {kept} "
            f"(ignored: {ignored})") in captured.err
    assert f"Note: group 'attention': seed 1 has 2 run summaries" in (tmp_path / "summary.md").read_text()
