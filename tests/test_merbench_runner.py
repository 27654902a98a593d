"""main-robust.py end to end inside an installed MERBench-shaped tree, on generated features."""
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from merbench_plugins.installer import cli as install_cli
from merbench_plugins.train.merbench_runner import masked_calculate_results
from conftest import DETERMINISTIC_FLAGS

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "merbench_tree"


@pytest.fixture
def installed_tree(tmp_path, tiny_data):
    root = tmp_path / "MERBench"
    shutil.copytree(FIXTURE, root)
    assert install_cli.main([str(root)]) == 0
    return root


def main_robust(root, tiny_data, *extra):
    env = dict(os.environ, MERBENCH_FIXTURE_DATA=str(tiny_data), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "main-robust.py", "--dataset", "MER2023", "--gpu", "-1", "--epochs", "2", "--quiet",
           "--threads", "1", *extra]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("model,feat", [("attention_robust_v2", "UTT"), ("attention_robust_v4", "FRA"), ("mrg_net", "FRA")])
def test_main_robust_trains_our_model_and_writes_merbench_results(installed_tree, tiny_data, model, feat):
    feat_type = "utt" if feat == "UTT" else "frm_unalign"
    proc = main_robust(installed_tree, tiny_data, "--model", model, "--feat_type", feat_type,
                       "--audio_feature", f"chinese-hubert-large-{feat}", "--text_feature", f"Baichuan-13B-Base-{feat}",
                       "--video_feature", f"clip-vit-large-patch14-{feat}", "--hidden_dim", "32", "--savemodel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(os.path.basename(p) for p in glob.glob(str(installed_tree / "saved-trimodal" / "result" / "*.npz")))
    assert [r.split("_")[0] for r in results] == ["cv", "test1", "test2", "test3"]
    assert f"_model:{model}+{feat_type}+None_f1:" in results[1]
    assert "_val:nan_" in results[3]                 # test3 has no valence: not scored against -10
    summary = json.load(open(glob.glob(str(installed_tree / "saved-trimodal" / "summary" / "*.json"))[0]))
    assert summary["settings"]["hidden_dim"] == 32
    assert len(summary["folds"]) == 5 and all(os.path.isfile(f["checkpoint"]) for f in summary["folds"])
    args = np.load(glob.glob(str(installed_tree / "saved-trimodal" / "result" / "test1_*.npz"))[0],
                   allow_pickle=True)["args"].item()
    assert args.model == model and args.audio_dim == 12
    assert "fold-parallel: the 5 folds" in proc.stdout          # on by default for our models


def test_main_robust_trains_merbench_own_model(installed_tree, tiny_data):
    proc = main_robust(installed_tree, tiny_data, "--model", "attention", "--feat_type", "utt",
                       "--audio_feature", "chinese-hubert-large-UTT", "--text_feature", "Baichuan-13B-Base-UTT",
                       "--video_feature", "clip-vit-large-patch14-UTT")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(glob.glob(str(installed_tree / "saved-trimodal" / "result" / "test*_*model:attention+utt*.npz"))) == 3
    # MERBench's own model: trained fold-parallel, or sequentially with a note saying why; never silently
    assert "fold-parallel: the 5 folds" in proc.stdout or "not fold-parallel (" in proc.stdout


UTT_FEATURES = ["--feat_type", "utt", "--audio_feature", "chinese-hubert-large-UTT", "--text_feature",
                 "Baichuan-13B-Base-UTT", "--video_feature", "clip-vit-large-patch14-UTT"]
DETERMINISTIC = DETERMINISTIC_FLAGS


def merbench_summary(save_root):
    paths = glob.glob(str(save_root) + "-trimodal/summary/*.json")
    assert len(paths) == 1, paths
    return json.load(open(paths[0]))


def test_main_robust_parallel_seeds_equal_separate_runs(installed_tree, tiny_data, tmp_path):
    """--seeds 3,8 --parallel_seeds: MERBench's dataloader splits each seed's folds as a --seed run would,
    and each seed's summary and result files equal its own run's (a model without randomness)."""
    flags = ["--model", "attention_robust_v2", *UTT_FEATURES, "--hidden_dim", "16", "--early_stop", "0", *DETERMINISTIC]
    proc = main_robust(installed_tree, tiny_data, *flags, "--seeds", "3,8", "--parallel_seeds",
                       "--save_root", str(tmp_path / "stacked" / "seed{seed}" / "saved"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parallel seeds: seeds 3,8 of attention_robust_v2 trained at once (2 seeds x 5 folds" in proc.stdout
    for seed in (3, 8):
        proc = main_robust(installed_tree, tiny_data, *flags, "--seed", str(seed),
                           "--save_root", str(tmp_path / f"alone{seed}" / "saved"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        stacked = merbench_summary(tmp_path / "stacked" / f"seed{seed}" / "saved")
        alone = merbench_summary(tmp_path / f"alone{seed}" / "saved")
        assert stacked["seed"] == alone["seed"] == seed and stacked["settings"] == alone["settings"]
        for a, b in zip(stacked["folds"], alone["folds"]):
            np.testing.assert_allclose([h["train_loss"] for h in a["history"]], [h["train_loss"] for h in b["history"]],
                                       rtol=1e-4)
            assert a["best_epoch"] == b["best_epoch"]
        assert stacked["tests"]["test1"]["f1"] == pytest.approx(alone["tests"]["test1"]["f1"], abs=1e-6)
        results = glob.glob(str(tmp_path / "stacked" / f"seed{seed}" / "saved-trimodal" / "result" / "*.npz"))
        assert sorted(os.path.basename(r).split("_")[0] for r in results) == ["cv", "test1", "test2", "test3"]


def test_main_robust_parallel_seeds_fallback_says_so(installed_tree, tiny_data, tmp_path):
    """--no_fold_parallel: the seeds run one after another, with a note; --select_on corrupted stacks them
    (each fold validates on its clean + corrupted copy as device rows)."""
    proc = main_robust(installed_tree, tiny_data, "--model", "attention_robust_v2", *UTT_FEATURES, "--hidden_dim",
                       "16", "--epochs", "1", "--no_fold_parallel", "--seeds", "0,1", "--parallel_seeds",
                       "--save_root", str(tmp_path / "s{seed}" / "saved"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training seeds 0,1 one after another, not as one stacked model (--no_fold_parallel" in proc.stdout
    assert [merbench_summary(tmp_path / f"s{seed}" / "saved")["seed"] for seed in (0, 1)] == [0, 1]
    proc = main_robust(installed_tree, tiny_data, "--model", "attention_robust_v2", *UTT_FEATURES, "--hidden_dim",
                       "16", "--epochs", "1", "--select_on", "corrupted", "--seeds", "0,1", "--parallel_seeds",
                       "--save_root", str(tmp_path / "c{seed}" / "saved"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parallel seeds: seeds 0,1 of attention_robust_v2 trained at once" in proc.stdout
    assert merbench_summary(tmp_path / "c1" / "saved")["seed"] == 1


def test_main_robust_help_and_outside_merbench(installed_tree, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(installed_tree / "main-robust.py"), "--help"], cwd=installed_tree,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "--use_proxy_attention" in proc.stdout and "--hyper_path" in proc.stdout
    proc = subprocess.run([sys.executable, str(installed_tree / "main-robust.py"), "--model", "attention_robust_v2",
                           "--dataset", "MER2023"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "run main-robust.py from the MERBench root" in proc.stderr


def test_masked_calculate_results_drops_unknown_valence():
    seen = {}

    def calc(emo_probs, emo_labels, val_preds, val_labels):
        seen["vals"] = np.asarray(val_labels)
        mse = float(np.mean((np.asarray(val_preds) - np.asarray(val_labels)) ** 2))
        return {"valmse": mse}, f"f1:0.5000_acc:0.5000_val:{mse:.4f}"

    calc_masked = masked_calculate_results(calc)
    res, text = calc_masked([], [], [1.0, 2.0, 5.0], [1.0, -10.0, 3.0])
    assert list(seen["vals"]) == [1.0, 3.0] and res["valmse"] == 2.0
    res, text = calc_masked([], [], [1.0, 2.0], [-10.0, -10.0])
    assert np.isnan(res["valmse"]) and text.endswith("val:nan")


def test_main_robust_robust_eval(installed_tree, tiny_data):
    proc = main_robust(installed_tree, tiny_data, "--model", "attention_robust_v2", "--feat_type", "utt",
                       "--audio_feature", "chinese-hubert-large-UTT", "--text_feature", "Baichuan-13B-Base-UTT",
                       "--video_feature", "clip-vit-large-patch14-UTT", "--epochs", "1", "--robust_eval",
                       "--robust_kinds", "subset")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(glob.glob(str(installed_tree / "saved-trimodal" / "summary" / "*.json"))[0]))
    rows = summary["robust"]
    assert len(rows) == 3 * 7                                   # 3 test sets x 7 subsets
    full = [r for r in rows if r["test"] == "test1" and r["condition"] == "ATV"][0]
    assert abs(full["f1"] - summary["tests"]["test1"]["f1"]) < 1e-9
    assert glob.glob(str(installed_tree / "saved-trimodal" / "robust" / "*.csv"))


def test_main_robust_ravdess_scores_each_actor_fold_on_its_own_test_set(installed_tree, tmp_path):
    from test_ravdess import _write_cache
    cache = _write_cache(str(tmp_path / "ravdess_cache"))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RAVDESS_CACHE=cache)
    cmd = [sys.executable, "main-robust.py", "--dataset", "RAVDESS", "--model", "ravdess_av", "--gpu", "-1",
           "--epochs", "1", "--quiet", "--threads", "1", "--batch_size", "8", "--ravdess_folds", "3",
           "--resnet_width", "8", "--hidden_dim", "16", "--num_frames", "2"]
    proc = subprocess.run(cmd, cwd=installed_tree, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(glob.glob(str(installed_tree / "saved-others" / "summary" / "*.json"))[0]))
    assert len(summary["folds"]) == 3 and all(f["test"] is not None for f in summary["folds"])
    mean_f1 = np.mean([f["test"]["f1"] for f in summary["folds"]])
    assert summary["tests"]["test"]["f1"] == pytest.approx(mean_f1) and "uar" in summary["tests"]["test"]
    results = glob.glob(str(installed_tree / "saved-others" / "result" / "test1_*_uar:*.npz"))
    assert len(results) == 1
