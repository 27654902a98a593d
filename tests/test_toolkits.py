"""main-robust.py in the newer MERTools toolkits (MER2024, MER2025/2026 Track 1), and a trained model to a
challenge file: `predict`, `ensemble`, `submit` (fixture trees: tests/fixtures/toolkits, laid over
tests/fixtures/merbench_tree)."""
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from merbench_plugins.evaluate import predictions
from merbench_plugins.installer import cli as install_cli
from merbench_plugins.train import release_flags
from test_installer import MIRROR, snapshot

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# each newer toolkit keeps the older one's loaders, as upstream's do
LAYERS = {"MER2024": ["MER2024"], "MER2025": ["MER2024", "MER2025_Track1"],
          "MER2026": ["MER2024", "MER2025_Track1", "MER2026_Track1"]}
FEATURES = {"UTT": ["--feat_type", "utt", "--audio_feature", "chinese-hubert-large-UTT", "--text_feature",
                    "Baichuan-13B-Base-UTT", "--video_feature", "clip-vit-large-patch14-UTT"],
            "FRA": ["--feat_type", "frm_unalign", "--audio_feature", "chinese-hubert-large-FRA", "--text_feature",
                    "Baichuan-13B-Base-FRA", "--video_feature", "clip-vit-large-patch14-FRA"]}


@pytest.fixture(scope="session")
def track1_data(tmp_path_factory):
    """MER2025/2026 Track 1's files (synth --layout track1): train + test1 with placeholder labels, candidates."""
    from merbench_plugins.data.synthetic import generate
    root = tmp_path_factory.mktemp("track1")
    generate(str(root), n_train=60, n_test=24, dims=(12, 20, 8), seed=1, layout="track1")
    return root


def toolkit_tree(tmp_path, toolkit):
    root = tmp_path / toolkit
    shutil.copytree(FIXTURES / "merbench_tree", root)
    for layer in LAYERS[toolkit]:
        for src in (FIXTURES / "toolkits" / layer).rglob("*"):
            if src.is_file():
                dst = root / src.relative_to(FIXTURES / "toolkits" / layer)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    return root


def env(tiny_data, track1_data):
    return dict(os.environ, MERBENCH_FIXTURE_DATA=str(tiny_data), MERBENCH_FIXTURE_TRACK1=str(track1_data),
                PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


def main_robust(root, environ, *flags):
    cmd = [sys.executable, "main-robust.py", "--gpu", "-1", "--epochs", "2", "--quiet", "--threads", "1",
           "--hidden_dim", "16", *flags]
    return subprocess.run(cmd, cwd=root, env=environ, capture_output=True, text=True, timeout=300)


def cli(environ, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "merbench_plugins", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def summary_of(save_root):
    paths = glob.glob(str(save_root) + "/summary/*.json")
    assert len(paths) == 1, paths
    return json.load(open(paths[0]))


@pytest.mark.parametrize("toolkit", sorted(LAYERS))
def test_our_models_train_in_every_toolkit_and_uninstall_restores_it(tmp_path, tiny_data, track1_data, toolkit):
    """Before, main-robust.py stopped in the toolkit's dataloader (`args.train_snr` unknown); now it takes the
    flags of the toolkit's own main-release.py, trains V2 / V4 / MRG-Net and scores emotion only."""
    root = toolkit_tree(tmp_path, toolkit)
    original = snapshot(root)
    assert install_cli.main([str(root)]) == 0
    environ = env(tiny_data, track1_data)
    for model, feat in (("attention_robust_v2", "UTT"), ("attention_robust_v4", "FRA"), ("mrg_net", "FRA")):
        save_root = tmp_path / f"runs_{model}"
        proc = main_robust(root, environ, "--dataset", toolkit, "--model", model, *FEATURES[feat], "--epochs", "1",
                           "--save_root", str(save_root / "saved"), "--test_snr", "None")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = save_root / "saved-trimodal"            # --test_snr None parses to None (func_none_or_str): no -noise
        summary = summary_of(out)
        assert summary["metric"] == "emo" and summary["dataset"] == toolkit
        assert set(summary["tests"]) == {"test1"} and set(summary["tests"]["test1"]) == {"f1", "acc"}
        assert "val_mse" not in summary["cv"] and "| test1 f1 | test1 acc |" in proc.stdout
        assert summary["environment"]["torch"] and "git_commit" in summary["environment"]
        result = glob.glob(str(out / "result" / "test1_*.npz"))[0]
        assert "_f1:" in result and "_val:" not in result
        pred = predictions.load(result)
        assert pred.valpreds is None and pred.classes == predictions.default_classes(6)
        with np.load(result, allow_pickle=True) as npz:       # upstream's submission.py reads emo_probs
            np.testing.assert_allclose(npz["emo_probs"].sum(1), 1, rtol=1e-5)
    if toolkit != "MER2024":     # placeholders for the secret test labels: said, not scored silently
        assert "every test1 label is 'neutral'" in proc.stdout
    assert install_cli.main([str(root), "--uninstall"]) == 0
    assert snapshot(root) == original


def test_release_flags_are_read_not_run(tmp_path):
    script = tmp_path / "main-release.py"
    script.write_text(
        "import argparse, os\nfrom toolkit.utils.functions import *\nfrom toolkit.extra import half\n"
        "if __name__ == '__main__':\n    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--model', type=str, default='theirs')\n"                   # ours wins
        "    parser.add_argument('--test_snr', type=func_none_or_str, default=None, help='test snr')\n"
        "    parser.add_argument('--ratio', type=half, default=1.0)\n"
        "    parser.add_argument('--workers', type=int, default=os.cpu_count())\n"          # computed default
        "    parser.add_argument('--future_flag', action='store_true', help='a flag of a future toolkit')\n"
        "    parser.add_argument('positional')\n")
    flags = {f.options[0]: f for f in release_flags.read_release_flags(str(script))}
    assert set(flags) == {"--model", "--test_snr", "--ratio", "--workers", "--future_flag"}
    assert flags["--ratio"].kwargs["type"].modules == ["toolkit.extra", "toolkit.utils.functions"]
    assert "default" not in flags["--workers"].kwargs and flags["--workers"].kwargs["type"] is int
    from merbench_plugins.train.merbench_runner import build_parser
    parser = build_parser(str(script))
    args = parser.parse_args(["--future_flag", "--workers", "3"])
    assert args.future_flag and args.workers == 3 and args.model is None and args.test_snr is None
    assert "flags of this toolkit's main-release.py" in parser.format_help()
    assert not hasattr(build_parser(str(tmp_path / "absent.py")).parse_args([]), "future_flag")


@pytest.mark.skipif(not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists(),
                    reason="no MERTools mirror (set MERTOOLS_MIRROR to a clone of zeroQiaoba/MERTools)")
@pytest.mark.parametrize("folder", ["MERBench", "MER2024", "MER2025/MER2025_Track1", "MER2026/MER2026_Track1"])
def test_real_main_release_flags(tmp_path, folder):
    """What main-robust.py takes over from each real toolkit's main-release.py (nothing of MERBench's)."""
    proc = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{folder}/main-release.py"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    script = tmp_path / "main-release.py"
    script.write_bytes(proc.stdout)
    from merbench_plugins.train.merbench_runner import build_parser
    ours = set(build_parser(str(tmp_path / "absent.py"))._option_string_actions)
    added = set(release_flags.add_release_flags(build_parser(str(tmp_path / "absent.py")), str(script)))
    theirs = {o for f in release_flags.read_release_flags(str(script)) for o in f.options}
    assert added == theirs - ours
    if folder != "MERBench":
        assert {"--train_snr", "--test_snr", "--fusion_topn", "--fusion_modality"} <= added


def test_main_robust_help_lists_the_toolkit_flags_and_noise_runs_name_them(tmp_path, tiny_data, track1_data):
    root = toolkit_tree(tmp_path, "MER2025")
    assert install_cli.main([str(root)]) == 0
    environ = env(tiny_data, track1_data)
    proc = subprocess.run([sys.executable, "main-robust.py", "--help"], cwd=root, env=environ, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--train_snr" in proc.stdout and "--fusion_modality" in proc.stdout
    proc = main_robust(root, environ, "--dataset", "MER2025", "--model", "attention_robust_v2", *FEATURES["UTT"],
                       "--epochs", "1", "--train_snr", "None", "--test_snr", "none", "--fusion_modality", "AV")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fusion_modality='AV'" in proc.stdout and "test_snr=None" in proc.stdout


# ------------------------------------------------------------------ predict -> ensemble -> submit


@pytest.fixture(scope="module")
def trained_track1(tmp_path_factory, tiny_data, track1_data):
    """An installed MER2025 tree with two seeds of V2 trained (5 fold checkpoints each), shared by the tests below
    (each writes only files of its own)."""
    root = toolkit_tree(tmp_path_factory.mktemp("trained"), "MER2025")
    assert install_cli.main([str(root)]) == 0
    environ = env(tiny_data, track1_data)
    for seed in (1, 2):
        proc = main_robust(root, environ, "--dataset", "MER2025", "--model", "attention_robust_v2", *FEATURES["UTT"],
                           "--seed", str(seed), "--savemodel", "--save_root", f"./s{seed}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root, environ


def test_predict_ensemble_submit_track1_and_upstream_consumers(trained_track1, track1_data):
    root, environ = trained_track1
    for seed in (1, 2):
        proc = cli(environ, "predict", f"s{seed}-trimodal/model", "--merbench", ".", "--dataset", "MER2025",
                   "--out", f"preds/s{seed}", "--pseudo_threshold", "0.2", cwd=root)
        assert proc.returncode == 0, proc.stderr
        assert "5 checkpoint(s) of attention_robust_v2" in proc.stdout and "every test1 label is 'neutral'" in proc.stdout
    # predict from the checkpoints = main-robust.py's own fold-averaged result file, sample by sample
    result = predictions.load(glob.glob(str(root / "s1-trimodal" / "result" / "test1_*.npz"))[0])
    predicted = predictions.load(str(root / "preds" / "s1" / "test1.npz"))
    assert list(predicted.names) == list(result.names)
    np.testing.assert_allclose(predicted.emo_probs, result.emo_probs, atol=1e-5)
    assert predicted.eval_metric == pytest.approx(result.eval_metric) and predicted.metric_name == "emo"
    pseudo = np.load(root / "preds" / "s1" / "pseudo_test1.npz", allow_pickle=True)["train_corpus"].item()
    confident = predicted.emo_probs.max(1) >= 0.2
    assert sorted(pseudo) == sorted(predicted.names[confident])
    assert all(pseudo[n]["emo"] == c for n, c in zip(predicted.names, predicted.predicted) if n in pseudo)

    proc = cli(environ, "ensemble", "preds/s1/test1.npz", "preds/s2/test1.npz", "--weights", "3,1",
               "--out", "preds/ens/test1.npz", cwd=root)
    assert proc.returncode == 0, proc.stderr
    ens, second = predictions.load(str(root / "preds" / "ens" / "test1.npz")), predictions.load(
        str(root / "preds" / "s2" / "test1.npz"))
    np.testing.assert_allclose(ens.emo_probs, 0.75 * predicted.emo_probs + 0.25 * second.emo_probs, atol=1e-6)

    proc = cli(environ, "submit", "preds/ens/test1.npz", "--challenge", "mer2025", "--merbench", ".",
               "--out", "submission.csv", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "asserts 20000 rows" in proc.stderr and "placeholders" in proc.stderr
    rows = (root / "submission.csv").read_text().splitlines()
    candidates = (track1_data / "track_all_candidates.csv").read_text().splitlines()[1:]
    assert rows[0] == "name,discrete" and [r.split(",")[0] for r in rows[1:]] == candidates
    assert [r.split(",")[1] for r in rows[1:]] == ens.select(candidates).predicted
    # the toolkit's own submission.py (emo_probs by position) gives the same file from our npz
    for npz in ("preds/ens/test1.npz", glob.glob(str(root / "s1-trimodal" / "result" / "test1_*.npz"))[0]):
        proc = subprocess.run([sys.executable, "submission.py", "generate_submission", npz, "upstream.csv"], cwd=root,
                              env=environ, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    proc = cli(environ, "submit", glob.glob(str(root / "s1-trimodal" / "result" / "test1_*.npz"))[0], "--challenge",
               "mer2025", "--candidates", str(track1_data / "track_all_candidates.csv"), "--out", "ours.csv", cwd=root)
    assert proc.returncode == 0 and (root / "upstream.csv").read_text() == (root / "ours.csv").read_text()
    proc = subprocess.run([sys.executable, "evaluation.py", "score_calculation", str(track1_data / "track1_test_dis.csv"),
                           "submission.csv", str(len(candidates))], cwd=root, env=environ, capture_output=True, text=True)
    assert proc.returncode == 0 and 0 <= float(proc.stdout.strip()) <= 1, proc.stderr


def test_robust_eval_reads_main_robust_checkpoints(trained_track1, track1_data, tmp_path):
    """main-robust.py saves MERBench's get_models wrapper (keys 'model.*'); robust-eval used to fail loading them."""
    root, environ = trained_track1
    proc = cli(environ, "robust-eval", str(track1_data), "--checkpoints", "s1-trimodal/model/*.pt", "--kinds", "subset",
               "--out", str(tmp_path / "robust"), cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    full = [line for line in proc.stdout.splitlines() if "| subset | ATV " in line][0]
    result = predictions.load(glob.glob(str(root / "s1-trimodal" / "result" / "test1_*.npz"))[0])
    from merbench_plugins.metrics import classification_metrics
    f1 = classification_metrics(result.emolabels, result.emo_probs.argmax(1), 6)["weighted_f1"]
    assert float(full.split("|")[5]) == pytest.approx(f1, abs=1e-4)


def test_refusals_are_one_line(trained_track1, tmp_path, track1_data):
    root, environ = trained_track1
    p1 = str(tmp_path / "preds1.npz")
    assert cli(environ, "predict", "s1-trimodal/model", "--merbench", ".", "--dataset", "MER2025", "--out",
               str(tmp_path / "p1"), cwd=root).returncode == 0
    # data whose features have other dimensions than the checkpoints'
    from merbench_plugins.data.synthetic import generate
    other = tmp_path / "other"
    generate(str(other), n_train=20, n_test=10, dims=(16, 20, 8), seed=3, layout="track1", frames=False)
    proc = cli(environ, "predict", "s1-trimodal/model", "--data", str(other), cwd=root)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "chinese-hubert-large-UTT has dimension 16" in proc.stderr and "trained on dimension 12" in proc.stderr
    # checkpoints of two feature sets
    proc = main_robust(root, environ, "--dataset", "MER2025", "--model", "attention_robust_v2", *FEATURES["FRA"],
                       "--epochs", "1", "--savemodel", "--save_root", str(tmp_path / "fra"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli(environ, "predict", "s1-trimodal/model", str(tmp_path / "fra-trimodal" / "model"), "--data",
               str(track1_data), cwd=root)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "feat_type 'frm_unalign' != 'utt'" in proc.stderr
    # ensemble: different samples, different label sets
    first = str(tmp_path / "p1" / "test1.npz")
    pred = predictions.load(first)
    predictions.save(p1, pred.select(pred.names[:-1]))
    proc = cli(environ, "ensemble", first, p1, "--out", str(tmp_path / "e.npz"), cwd=root)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "1 only in the first" in proc.stderr
    from dataclasses import replace
    predictions.save(p1, replace(pred, classes=tuple(reversed(pred.classes))))
    proc = cli(environ, "ensemble", first, p1, "--out", str(tmp_path / "e.npz"), cwd=root)
    assert proc.returncode == 2 and "differ in classes" in proc.stderr and p1 in proc.stderr
    # submit: a candidate without a prediction; a label set that is not the challenge's
    predictions.save(p1, pred.select(pred.names[1:]))
    proc = cli(environ, "submit", p1, "--challenge", "mer2025", "--merbench", ".", "--out", str(tmp_path / "s.csv"),
               cwd=root)
    assert proc.returncode == 2 and "1 of 24 candidates" in proc.stderr and "have no prediction" in proc.stderr
    predictions.save(p1, replace(pred, classes=("a", "b", "c", "d", "e", "f")))
    proc = cli(environ, "submit", p1, "--challenge", "mer2025", "--candidates",
               str(track1_data / "track_all_candidates.csv"), "--out", str(tmp_path / "s.csv"), cwd=root)
    assert proc.returncode == 2 and "but mer2025 takes" in proc.stderr
    assert not (tmp_path / "s.csv").exists()


def test_standalone_checkpoints_predict_unlabelled_folder_and_mer2023_files(tiny_data, tmp_path):
    """The standalone runner's checkpoints on a folder without labels (names from the feature files), and
    MER2023's one-file-per-test-set submission from its result files."""
    environ = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = cli(environ, "train", str(tiny_data), "--model", "attention_robust_v2", "--epochs", "2", "--folds", "2",
               "--hidden_dim", "16", "--quiet", "--savemodel", "--plots", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.load(open(glob.glob(str(out / "summary_*.json"))[0]))
    per_class = summary["per_class"]["test1"]
    assert sum(map(sum, per_class["confusion"])) == 24 and set(per_class["f1"]) == set(predictions.MER2023_EMOTIONS)
    assert summary["environment"]["merbench_plugins"] and glob.glob(str(out / "result" / "*_confusion.png"))
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(tiny_data / "features", unlabelled / "features")
    proc = cli(environ, "predict", str(out / "models"), "--data", str(unlabelled), "--out", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    pred = predictions.load(str(tmp_path / "p" / "unlabelled.npz"))
    assert len(pred) == 60 + 3 * 24 and pred.emolabels is None and pred.valpreds is not None
    bad = unlabelled / "features" / "chinese-hubert-large-UTT" / "test2_00003.npy"
    np.save(bad, np.full_like(np.load(bad), np.nan))
    proc = cli(environ, "predict", str(out / "models"), "--data", str(unlabelled), "--out", str(tmp_path / "q"))
    assert proc.returncode == 2 and "chinese-hubert-large-UTT/test2_00003.npy" in proc.stderr
    proc = cli(environ, "predict", str(out / "models"), "--data", str(unlabelled), "--out", str(tmp_path / "q"),
               "--nonfinite", "missing")
    assert proc.returncode == 0 and np.isfinite(predictions.load(str(tmp_path / "q" / "unlabelled.npz")).emo_probs).all()
    results = sorted(glob.glob(str(out / "result" / "test*_*.npz")))
    proc = cli(environ, "submit", *results, "--challenge", "mer2023", "--out", str(tmp_path / "sub"))
    assert proc.returncode == 0, proc.stderr
    for k in (1, 2, 3):
        rows = (tmp_path / "sub" / f"test{k}-pred.csv").read_text().splitlines()
        assert rows[0] == "name,discrete,valence" and len(rows) == 25
        name, label, valence = rows[1].split(",")
        assert label in predictions.MER2023_EMOTIONS and np.isfinite(float(valence))
