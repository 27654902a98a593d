"""train_v2.sh, train_v4.sh, run_ablation.sh and `python -m merbench_plugins summarize`.

The scheduler, resume and SLURM tests use a fake `python` (a bash script that writes a summary JSON
from its --seed) so they take a second; one tiny real standalone ablation checks the whole path.
"""
import csv
import glob
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from merbench_plugins.__main__ import main as cli
from merbench_plugins.installer import cli as install_cli
from merbench_plugins.evaluate import summarize

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "merbench_tree"
SCRIPTS = ["train_v2.sh", "train_v4.sh", "run_ablation.sh"]
GRID = {  # variant -> (model, the flags that turn its component off)
    "attention": ("attention", []),
    "v2_full": ("attention_robust_v2", []),
    "v2_no_vae": ("attention_robust_v2", ["--no_vae"]),
    "v2_no_recon": ("attention_robust_v2", ["--recon_weight", "0"]),
    "v2_no_cross_kl": ("attention_robust_v2", ["--cross_kl_weight", "0"]),
    "v2_no_proxy_attention": ("attention_robust_v2", ["--no_proxy_attention"]),
    "v2_no_modality_dropout": ("attention_robust_v2", ["--no_modality_dropout"]),
    "v2_no_uncertainty_fusion": ("attention_robust_v2", ["--no_uncertainty_fusion"]),
    "v4_full": ("attention_robust_v4", []),
    "v4_no_contrastive": ("attention_robust_v4", ["--no_contrastive"]),
    "v4_no_gated_fusion": ("attention_robust_v4", ["--no_gated_fusion"]),
    "v4_no_focal_smoothing": ("attention_robust_v4", ["--focal_gamma", "0", "--label_smoothing", "0"]),
}
JOB_LINE = re.compile(r"^\[(\d+)/(\d+)\] (run|skip) +(\S+) +seed=(\d+) +(?:(\S+) +cd (\S+) && (.*))?")
SETTINGS = ("MERBENCH_ROOT", "GPUS", "JOBS", "THREADS", "SEEDS", "DATASET", "FEAT_TYPE", "AUDIO_FEATURE",
            "TEXT_FEATURE", "VIDEO_FEATURE", "EPOCHS", "FOLDS", "EXTRA", "ROBUST_EVAL", "OUT_DIR", "PYTHON")


def script_env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and not k.startswith("SLURM_")}
    env.update(PYTHON=sys.executable, REAL_PYTHON=sys.executable, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_script(name, *args, timeout=240, **env):
    return subprocess.run(["bash", str(REPO / name), *map(str, args)], cwd=REPO, env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def jobs(stdout):
    """[(status, variant, seed, device, workdir, argv)] from the plan lines."""
    out = []
    for line in stdout.splitlines():
        m = JOB_LINE.match(line)
        if m:
            _, _, status, variant, seed, device, workdir, cmd = m.groups()
            out.append((status, variant, int(seed), device, workdir, shlex.split(cmd) if cmd else None))
    return out


def flag(argv, name):
    return argv[len(argv) - 1 - argv[::-1].index(name) + 1]   # the last one wins, as in argparse


FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for python: forwards `-m merbench_plugins summarize`, fakes a training run otherwise
if [[ "${1:-}" == -c || "${1:-}" == -m && "${3:-}" == summarize ]]; then exec "$REAL_PYTHON" "$@"; fi
out="" seed="" dev="" model=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out|--save_root) out="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --device|--gpu) dev="$2"; shift ;;
    --model) model="$2"; shift ;;
  esac
  shift
done
echo "start $dev $seed $(date +%s.%N)" >> "$FAKE_LOG"
sleep 0.3
echo "end $dev $seed $(date +%s.%N)" >> "$FAKE_LOG"
if [[ " ${FAKE_FAIL:-} " == *" $seed "* ]]; then echo "boom (seed $seed)" >&2; exit 3; fi
mkdir -p "$out"
printf '{"model": "%s", "seed": %s, "cv": {"f1": 0.%s}, "tests": {"test1": {"f1": 0.%s, "acc": 0.5}}}\n' \
  "$model" "$seed" "$seed" "$seed" > "$out/summary_${model}_fake.json"
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_python(tmp_path):
    return executable(tmp_path / "fakepy", FAKE_PYTHON), tmp_path / "fake.log"


@pytest.fixture(scope="module")
def installed_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("merbench") / "MERBench"
    shutil.copytree(FIXTURE, root)
    assert install_cli.main([str(root)]) == 0
    return root


# ---------------------------------------------------------------------------------------------------
# syntax, help, dry runs

@pytest.mark.parametrize("name", SCRIPTS + ["scripts/common.sh", "scripts/train_one_model.sh"])
def test_bash_syntax(name):
    proc = subprocess.run(["bash", "-n", str(REPO / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    proc = run_script(name, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")
    for word in ("MERBENCH_ROOT", "GPUS", "SEEDS", "--dry-run", "--standalone", "ROBUST_EVAL"):
        assert word in proc.stdout
    if name == "run_ablation.sh":
        assert all(v in proc.stdout for v in GRID) and "--slurm" in proc.stdout


def test_ablation_dry_run_lists_the_grid(tiny_data, tmp_path):
    out = tmp_path / "abl"
    proc = run_script("run_ablation.sh", "--dry-run", "--standalone", tiny_data, "--out", out, "--", "--batch_size",
                      "8", "--recon_weight", "0.3", GPUS="0,1", SEEDS="0 1 2", ROBUST_EVAL=1, EXTRA="--kl_weight 0.02")
    assert proc.returncode == 0, proc.stderr
    listed = jobs(proc.stdout)
    assert len(listed) == len(GRID) * 3
    assert sorted((v, s) for _, v, s, *_ in listed) == sorted((v, s) for v in GRID for s in range(3))
    for k, (status, variant, seed, device, workdir, argv) in enumerate(listed):
        model, off = GRID[variant]
        assert status == "run" and argv[1:4] == ["-m", "merbench_plugins", "train"]
        assert flag(argv, "--model") == model and flag(argv, "--seed") == str(seed)
        assert flag(argv, "--out") == str(out / variant / f"seed{seed}")
        assert device == f"gpu:{k % 2}" and flag(argv, "--device") == f"cuda:{k % 2}"   # round-robin
        assert argv[-1] == "--robust_eval"
        assert argv[len(argv) - 1 - len(off):-1] == off                     # the variant's flags come last ...
        assert flag(argv, "--kl_weight") == "0.02" and flag(argv, "--batch_size") == "8"
        if variant == "v2_no_recon":
            assert flag(argv, "--recon_weight") == "0"                      # ... and win over the user's
    assert not out.exists()                                                 # a dry run writes nothing


def test_ablation_only_filter_and_unknown_variant(tiny_data, tmp_path):
    proc = run_script("run_ablation.sh", "-n", "--standalone", tiny_data, "--out", tmp_path / "a",
                      "--only", "v4_no_gated_fusion,attention", SEEDS="3,4", GPUS="cpu")
    assert proc.returncode == 0, proc.stderr
    listed = jobs(proc.stdout)
    assert [(v, s, d) for _, v, s, d, *_ in listed] == [("attention", 3, "cpu"), ("attention", 4, "cpu"),
                                                         ("v4_no_gated_fusion", 3, "cpu"),
                                                         ("v4_no_gated_fusion", 4, "cpu")]
    assert flag(listed[2][5], "--device") == "cpu" and "--no_gated_fusion" in listed[2][5]
    proc = run_script("run_ablation.sh", "-n", "--standalone", tiny_data, "--only", "v2_full,v9")
    assert proc.returncode == 2 and "unknown variant 'v9'" in proc.stderr


@pytest.mark.parametrize("name,model,feat_type,gpus,devices", [
    ("train_v2.sh", "attention_robust_v2", "utt", "0,1", ["0", "1", "0"]),
    ("train_v4.sh", "attention_robust_v4", "frm_unalign", "", ["-1", "-1", "-1"]),
])
def test_train_scripts_dry_run_in_merbench(installed_tree, tmp_path, name, model, feat_type, gpus, devices):
    proc = run_script(name, "--dry-run", "--out", tmp_path / "runs", "--", "--batch_size", "16",
                      MERBENCH_ROOT=installed_tree, GPUS=gpus, SEEDS="5 6 7", FEAT_TYPE=feat_type, EPOCHS=3)
    assert proc.returncode == 0, proc.stderr
    listed = jobs(proc.stdout)
    assert [s for _, _, s, *_ in listed] == [5, 6, 7]
    level = "UTT" if feat_type == "utt" else "FRA"
    for (_, variant, seed, _, workdir, argv), gpu in zip(listed, devices):
        assert variant == model and workdir == str(installed_tree) and argv[1] == "main-robust.py"
        assert flag(argv, "--model") == model and flag(argv, "--gpu") == gpu and flag(argv, "--seed") == str(seed)
        assert flag(argv, "--dataset") == "MER2023" and flag(argv, "--feat_type") == feat_type
        assert flag(argv, "--audio_feature") == f"chinese-hubert-large-{level}"
        assert flag(argv, "--text_feature") == f"Baichuan-13B-Base-{level}"
        assert flag(argv, "--video_feature") == f"clip-vit-large-patch14-{level}"
        assert flag(argv, "--epochs") == "3" and argv[-2:] == ["--batch_size", "16"]
        assert flag(argv, "--save_root") == str(tmp_path / "runs" / model / f"seed{seed}" / "saved")
    assert not (tmp_path / "runs").exists()


def test_ablation_dry_run_in_merbench(installed_tree, tmp_path):
    proc = run_script("run_ablation.sh", "-n", "--out", tmp_path / "abl", MERBENCH_ROOT=installed_tree, SEEDS="0",
                      GPUS="0,1,2")
    assert proc.returncode == 0, proc.stderr
    listed = jobs(proc.stdout)
    assert [v for _, v, *_ in listed] == list(GRID)
    for k, (_, variant, _, device, workdir, argv) in enumerate(listed):
        assert workdir == str(installed_tree) and argv[1] == "main-robust.py" and device == f"gpu:{k % 3}"
        model, off = GRID[variant]
        assert flag(argv, "--model") == model and argv[len(argv) - len(off):] == off


def test_standalone_needs_an_importable_package(tiny_data, tmp_path):
    broken = executable(tmp_path / "py", "#!/usr/bin/env bash\necho 'No module named merbench_plugins' >&2; exit 1\n")
    proc = run_script("run_ablation.sh", "-n", "--standalone", tiny_data, PYTHON=broken)
    assert proc.returncode == 2 and "cannot import merbench_plugins" in proc.stderr and "pip install" in proc.stderr


@pytest.mark.parametrize("case", ["unset", "missing", "not_merbench", "not_installed"])
@pytest.mark.parametrize("name", SCRIPTS)
def test_missing_merbench_is_a_clear_error(tmp_path, name, case):
    env = {}
    if case == "missing":
        env["MERBENCH_ROOT"] = tmp_path / "nowhere"
    elif case == "not_merbench":
        env["MERBENCH_ROOT"] = tmp_path
    elif case == "not_installed":
        shutil.copytree(FIXTURE, tmp_path / "MERBench")
        env["MERBENCH_ROOT"] = tmp_path / "MERBench"
    proc = run_script(name, "--out", tmp_path / "runs", **env)
    assert proc.returncode != 0 and proc.stdout == ""
    expected = {"unset": "MERBENCH_ROOT is not set", "missing": "MERBench not found",
                "not_merbench": "is not a MERBench checkout", "not_installed": "merbench-plugins is not installed"}
    assert proc.stderr.startswith("error: ") and expected[case] in proc.stderr.splitlines()[0]
    assert ("install.py" if case == "not_installed" else "--standalone DATA_DIR") in proc.stderr   # says how to fix
    assert not (tmp_path / "runs").exists()


def test_bad_settings_are_clear_errors(tiny_data, tmp_path):
    for env, args, message in [
        ({}, ["--standalone", tmp_path / "none"], "data folder not found"),
        ({"SEEDS": "1 x"}, ["--standalone", tiny_data], "SEEDS must be non-negative integers"),
        ({"GPUS": "0,a"}, ["--standalone", tiny_data], "GPUS must be comma-separated GPU ids"),
        ({"FEAT_TYPE": "frames"}, ["--standalone", tiny_data], "FEAT_TYPE must be"),
        ({}, ["--bogus"], "unknown option --bogus"),
    ]:
        proc = run_script("run_ablation.sh", "-n", *args, **env)
        assert proc.returncode == 2 and message in proc.stderr, (env, args, proc.stderr)


# ---------------------------------------------------------------------------------------------------
# scheduling, failures, resume, SLURM (fake python)

def intervals(log: Path):
    """device -> [(start, end)] from the fake's log."""
    spans, open_ = {}, {}
    for line in log.read_text().splitlines():
        kind, device, seed, t = line.split()
        if kind == "start":
            open_[(device, seed)] = float(t)
        else:
            spans.setdefault(device, []).append((open_.pop((device, seed)), float(t)))
    return spans


def test_one_job_per_gpu_failures_reported_and_resumed(tmp_path, tiny_data, fake_python):
    fake, log = fake_python
    out = tmp_path / "abl"
    env = dict(PYTHON=fake, FAKE_LOG=log, GPUS="0,1", SEEDS="1 2 3")
    proc = run_script("run_ablation.sh", "--standalone", tiny_data, "--out", out, "--only", "v2_full,v4_full",
                      FAKE_FAIL="3", **env)
    assert proc.returncode == 1
    assert "2 job(s) failed" in proc.stderr and proc.stdout.count("FAIL ") == 2 and "boom (seed 3)" in proc.stdout
    spans = intervals(log)
    assert sorted(spans) == ["cuda:0", "cuda:1"] and [len(v) for v in spans.values()] == [3, 3]
    for device, ss in spans.items():                    # one job at a time on each GPU
        ss.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(ss, ss[1:])), (device, ss)
    meta = json.loads((out / "v4_full" / "seed2" / "variant.json").read_text())
    assert meta["variant"] == "v4_full" and meta["seed"] == 2 and meta["model"] == "attention_robust_v4"

    log.unlink()
    proc = run_script("run_ablation.sh", "--standalone", tiny_data, "--out", out, "--only", "v2_full,v4_full", **env)
    assert proc.returncode == 0, proc.stderr
    listed = jobs(proc.stdout)
    assert sorted((v, s) for st, v, s, *_ in listed if st == "run") == [("v2_full", 3), ("v4_full", 3)]
    assert sum(st == "skip" for st, *_ in listed) == 4
    assert len(log.read_text().splitlines()) == 4       # only the two crashed runs trained again
    assert (out / "v2_full" / "seed3" / "run.log.1").read_text().strip() == "boom (seed 3)"
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["variant"], r["runs"], r["seeds"]) for r in rows] == [("v2_full", "3", "1 2 3"),
                                                                     ("v4_full", "3", "1 2 3")]
    assert float(rows[0]["test1_f1_mean"]) == pytest.approx(0.2)           # seeds 1, 2, 3 -> f1 0.1, 0.2, 0.3
    assert float(rows[0]["test1_f1_std"]) == pytest.approx(0.1)
    assert "0.2000 ± 0.1000" in (out / "summary.md").read_text()


def test_slurm_array_script_and_submission(tmp_path, tiny_data, fake_python):
    fake, _ = fake_python
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"
    executable(bin_dir / "sbatch", f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {calls}\necho 4242\n')
    out = tmp_path / "abl"
    proc = run_script("run_ablation.sh", "--slurm", "--standalone", tiny_data, "--out", out, "--only",
                      "attention,v4_no_contrastive", PYTHON=fake, SEEDS="0 1", SLURM_PARTITION="gpuq",
                      SLURM_TIME="02:00:00", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert proc.returncode == 0, proc.stderr
    script = Path(glob.glob(str(out / "slurm_run_ablation_*.sbatch"))[0])
    text = script.read_text()
    for line in ("#SBATCH --array=0-3", "#SBATCH --partition=gpuq", "#SBATCH --time=02:00:00", "#SBATCH --gres=gpu:1"):
        assert line in text.splitlines()
    assert len(re.findall(r"^  \d\) .* --device cuda:0 ", text, re.M)) == 4 and "--no_contrastive ;;" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    first, second = calls.read_text().splitlines()
    assert first == f"--parsable {script}"
    assert "--dependency=afterany:4242" in second and "summarize" in second and "--partition gpuq" in second
    assert (out / "attention" / "seed1" / "variant.json").is_file()   # summarize groups the runs by it

    # a task runs its job (here: the fake) and, once finished, is a no-op
    task_env = script_env(SLURM_ARRAY_TASK_ID="3", FAKE_LOG=tmp_path / "fake.log")
    for expected in ("", "finished already"):
        proc = subprocess.run(["bash", str(script)], env=task_env, capture_output=True, text=True)
        assert proc.returncode == 0 and expected in proc.stdout
    assert glob.glob(str(out / "v4_no_contrastive" / "seed1" / "summary_*.json"))


# ---------------------------------------------------------------------------------------------------
# the real thing: a tiny standalone ablation, then a rerun that skips everything

@pytest.fixture(scope="module")
def tiny_ablation(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "abl"
    args = ["--standalone", tiny_data, "--out", out, "--only", "attention,v2_no_vae", "--", "--threads", "1", "--quiet"]
    env = dict(GPUS="cpu", JOBS=2, SEEDS="1 2", EPOCHS=2, FOLDS=2)
    return out, args, env, run_script("run_ablation.sh", *args, **env)


def test_tiny_standalone_ablation_summary(tiny_ablation):
    out, _, _, proc = tiny_ablation
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(glob.glob(str(out / "*" / "seed*" / "summary_*.json")))
    assert len(runs) == 4
    by_variant = {}
    for path in runs:
        by_variant.setdefault(Path(path).parts[-3], []).append(json.load(open(path)))
    assert all(s["settings"]["use_vae"] is False for s in by_variant["v2_no_vae"])   # the flag reached the model
    assert all(len(s["folds"]) == 2 for ss in by_variant.values() for s in ss)
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert list(rows) == ["attention", "v2_no_vae"]                 # in the grid's order
    for variant, row in rows.items():
        assert (row["model"], row["runs"], row["seeds"]) == (GRID[variant][0], "2", "1 2")
        for test in ("test1", "test2"):
            values = [s["tests"][test]["f1"] for s in by_variant[variant]]
            assert float(row[f"{test}_f1_mean"]) == pytest.approx(sum(values) / 2)
            assert float(row[f"{test}_f1_std"]) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    md = (out / "summary.md").read_text()
    table_rows = [line for line in md.splitlines() if line.startswith("| attention") or line.startswith("| v2_no_vae")]
    assert len(table_rows) == 2 and all(" ± " in line for line in table_rows)
    assert md.split("\n\n", 1)[1].strip() in proc.stdout                        # the table is printed
    assert glob.glob(str(out / "summary_*.csv")) and glob.glob(str(out / "summary_*.md"))
    assert all((out / v / f"seed{s}" / "run.log").is_file() for v in rows for s in (1, 2))


def test_rerun_skips_finished_runs(tiny_ablation):
    out, args, env, first = tiny_ablation
    assert first.returncode == 0
    before = {p: os.path.getmtime(p) for p in glob.glob(str(out / "**" / "*.json"), recursive=True)}
    copies = set(glob.glob(str(out / "summary_*.md")))
    proc = run_script("run_ablation.sh", *args, **env)
    assert proc.returncode == 0, proc.stderr
    assert [st for st, *_ in jobs(proc.stdout)] == ["skip"] * 4
    assert "all 4 jobs finished already (skipped)" in proc.stdout and "start " not in proc.stdout
    after = {p: os.path.getmtime(p) for p in glob.glob(str(out / "**" / "*.json"), recursive=True)}
    assert after == before                                            # no new or rewritten run summary
    new_copies = set(glob.glob(str(out / "summary_*.md")))
    assert copies < new_copies                                        # earlier summaries are kept


# ---------------------------------------------------------------------------------------------------
# summarize on hand-made runs

def write_run(folder: Path, model, seed, f1, acc=0.5, name="summary_x.json"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"model": model, "seed": seed, "cv": {"f1": f1 / 2},
                                           "tests": {"test1": {"f1": f1, "acc": acc, "val_mse": None},
                                                     "test2": {"f1": f1 + 0.1, "acc": acc}}}))


def test_summarize_groups_means_and_stds(tmp_path, capsys):
    write_run(tmp_path / "b_var" / "seed0", "attention_robust_v2", 0, 0.5)
    write_run(tmp_path / "b_var" / "seed1", "attention_robust_v2", 1, 0.7, acc=0.7)
    (tmp_path / "b_var" / "variant.json").write_text(json.dumps({"variant": "v2_no_vae", "order": 0}))
    write_run(tmp_path / "a_var" / "seed0" / "saved-trimodal" / "summary", "attention_robust_v2", 0, 0.2,
              name="features:x_dataset:MER2023_1.json")                                   # MERBench layout
    (tmp_path / "a_var" / "variant.txt").write_text("v2_full\n")                         # no order: last
    (tmp_path / "notes.json").write_text('{"not": "a run"}')
    (tmp_path / "broken.json").write_text("{")
    assert cli(["summarize", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    assert "skipping" in printed.err and "broken.json" in printed.err
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [(r["variant"], r["runs"], r["seeds"]) for r in rows] == [("v2_no_vae", "2", "0 1"), ("v2_full", "1", "0")]
    no_vae = rows[0]
    assert float(no_vae["test1_f1_mean"]) == pytest.approx(0.6)
    assert float(no_vae["test1_f1_std"]) == pytest.approx(0.1414213562)       # sample std of 0.5, 0.7
    assert float(no_vae["test2_f1_mean"]) == pytest.approx(0.7) and float(no_vae["cv_f1_mean"]) == pytest.approx(0.3)
    assert rows[1]["test1_f1_std"] == ""                                       # one run: no std
    assert not any(k.startswith("test1_val_mse") for k in rows[0])             # all-empty columns dropped
    md = (tmp_path / "summary.md").read_text()
    assert "| v2_no_vae | attention_robust_v2 | 2    | 0 1   |" in md and "0.6000 ± 0.1414" in md
    assert "| v2_full   | attention_robust_v2 | 1    | 0     | 0.1000 " in md

    assert cli(["summarize", str(tmp_path), "--group-by", "model", "--tests", "test1", "--metrics", "f1"]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [(r["model"], r["runs"]) for r in rows] == [("attention_robust_v2", "3")]
    assert list(rows[0]) == ["model", "runs", "seeds", "test1_f1_mean", "test1_f1_std"]
    assert float(rows[0]["test1_f1_mean"]) == pytest.approx((0.5 + 0.7 + 0.2) / 3)
    assert len(glob.glob(str(tmp_path / "summary_*.csv"))) == 2                # both runs' copies kept


def test_summarize_with_nothing_to_summarize(tmp_path, capsys):
    (tmp_path / "x.json").write_text("[]")
    assert cli(["summarize", str(tmp_path)]) == 2
    assert "no run summaries" in capsys.readouterr().err
    assert cli(["summarize", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "summary.csv").exists()


def test_mean_std():
    assert summarize.mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(2 ** 0.5), 2)
    assert summarize.mean_std([None, float("nan")]) == (None, None, 0)
    assert summarize.format_cell(0.5, None) == "0.5000" and summarize.format_cell(None, None) == "-"


def test_summarize_never_averages_different_settings_as_seeds(tmp_path, capsys):
    """A search folder holds differently tuned trials and seed re-runs: only seeds of one configuration pool."""
    def run(folder, seed, f1, hidden, epochs=2):
        folder.mkdir(parents=True)
        (folder / "summary_m_1.json").write_text(json.dumps({
            "model": "m", "seed": seed, "dataset": "MER2023", "features": ["a", "t", "v"], "feat_type": "utt",
            "settings": {"hidden_dim": hidden, "dropout": 0.1}, "protocol": {"epochs": epochs},
            "cv": {"f1": f1}, "tests": {"test1": {"f1": f1}}}))
    run(tmp_path / "trials" / "t0", 42, 0.2, 64)
    run(tmp_path / "trials" / "t1", 42, 0.8, 128)
    run(tmp_path / "best" / "s43", 43, 0.6, 128)
    run(tmp_path / "best" / "s44", 44, 0.4, 128)
    run(tmp_path / "other", 45, 0.9, 128, epochs=5)
    assert cli(["summarize", str(tmp_path), "--tests", "test1", "--metrics", "f1"]) == 0
    err = capsys.readouterr().err
    assert "3 different configurations" in err and "protocol.epochs, settings.hidden_dim" in err
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert set(rows) == {"m [epochs=2, hidden_dim=64]", "m [epochs=2, hidden_dim=128]", "m [epochs=5, hidden_dim=128]"}
    tuned = rows["m [epochs=2, hidden_dim=128]"]
    assert (tuned["runs"], tuned["seeds"]) == ("3", "42 43 44")
    assert float(tuned["test1_f1_mean"]) == pytest.approx(0.6) and float(tuned["test1_f1_std"]) == pytest.approx(0.2)
