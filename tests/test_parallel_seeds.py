"""--seeds / --parallel_seeds: S seeds x K folds as one stacked model, each seed written as its own --seed run."""
import glob
import json
import os

import numpy as np
import pytest
import torch

from merbench_plugins.__main__ import main as cli
from merbench_plugins.train import parallel
from conftest import DETERMINISTIC_FLAGS

pytestmark = pytest.mark.skipif(parallel.functional_api() is None, reason="needs torch.func or functorch")

# no randomness in the model: the stacked and the separate runs walk the same path
DETERMINISTIC = DETERMINISTIC_FLAGS
COMMON = ["--model", "attention_robust_v2", "--quiet", "--epochs", "3", "--folds", "2", "--early_stop", "0"]


def summary(folder):
    paths = glob.glob(os.path.join(str(folder), "summary_attention_robust_v2_*.json"))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f)


def result_npz(folder, test="test1"):
    paths = glob.glob(os.path.join(str(folder), "result", f"{test}_*.npz"))
    assert len(paths) == 1, paths
    return np.load(paths[0], allow_pickle=True)


def train(data, out, *flags):
    assert cli(["train", str(data), *COMMON, "--out", str(out), *flags]) == 0


def trajectories(s):
    return [[(h["train_loss"], h["eval_metric"]) for h in f["history"]] for f in s["folds"]]


def test_stacked_seeds_equal_separate_runs(tiny_data, tmp_path, capsys):
    """Each seed of one stacked 2 x 2 run: the same folds, trajectories, test predictions and files as its own run."""
    train(tiny_data, tmp_path / "stacked" / "seed{seed}", "--seeds", "3,8", "--parallel_seeds", "--savemodel",
          *DETERMINISTIC)
    assert "parallel seeds: seeds 3,8 of attention_robust_v2 trained at once" in capsys.readouterr().out
    for seed in (3, 8):
        train(tiny_data, tmp_path / f"alone{seed}", "--seed", str(seed), "--savemodel", *DETERMINISTIC)
        stacked, alone = summary(tmp_path / "stacked" / f"seed{seed}"), summary(tmp_path / f"alone{seed}")
        assert stacked["seed"] == alone["seed"] == seed
        assert stacked["protocol"] == alone["protocol"] and stacked["settings"] == alone["settings"]
        np.testing.assert_allclose(np.array(trajectories(stacked)), np.array(trajectories(alone)), rtol=1e-4, atol=1e-5)
        assert [f["best_epoch"] for f in stacked["folds"]] == [f["best_epoch"] for f in alone["folds"]]
        for test in ("test1", "test2", "test3"):
            assert stacked["tests"][test].keys() == alone["tests"][test].keys()
            for metric, value in alone["tests"][test].items():
                assert (stacked["tests"][test][metric] is None) == (value is None)
                if value is not None:
                    assert stacked["tests"][test][metric] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True)
        a, b = result_npz(tmp_path / "stacked" / f"seed{seed}"), result_npz(tmp_path / f"alone{seed}")
        assert sorted(a.files) == sorted(b.files) and list(a["names"]) == list(b["names"])
        np.testing.assert_allclose(a["emoprobs"], b["emoprobs"], atol=1e-5)
        assert a["args"].item()["seed"] == seed
        ckpts = sorted(glob.glob(str(tmp_path / "stacked" / f"seed{seed}" / "models" / "*.pt")))
        assert len(ckpts) == 2 and len(glob.glob(str(tmp_path / "stacked" / f"seed{seed}" / "summary_*.md"))) == 1
        for k, path in enumerate(ckpts):
            ck, own = torch.load(path), torch.load(sorted(glob.glob(str(tmp_path / f"alone{seed}" / "models" / "*.pt")))[k])
            assert ck["fold"] == own["fold"] == k + 1 and ck["args"]["seed"] == seed
            for name, value in own["state_dict"].items():
                torch.testing.assert_close(ck["state_dict"][name], value, rtol=1e-3, atol=1e-4)


def test_other_seed_leaves_the_first_seed_unchanged(tiny_data, tmp_path):
    """Dropout, VAE and modality dropout on: seed 3's trajectory in a stack does not depend on the other seed."""
    for other in (8, 21):
        train(tiny_data, tmp_path / f"with{other}" / "seed{seed}", "--seeds", f"3,{other}", "--parallel_seeds")
    first = [summary(tmp_path / f"with{o}" / "seed3") for o in (8, 21)]
    assert trajectories(first[0]) == trajectories(first[1])
    assert trajectories(summary(tmp_path / "with8" / "seed8")) != trajectories(summary(tmp_path / "with21" / "seed21"))


def test_seeds_in_one_folder_keep_their_files_apart(tiny_data, tmp_path, capsys):
    """Without {seed} in --out the seeds share the folder; every file is its own (seed field, stamp)."""
    train(tiny_data, tmp_path, "--seeds", "1,2", "--parallel_seeds", "--savemodel")
    assert "put {seed} in --out" in capsys.readouterr().out
    paths = glob.glob(str(tmp_path / "summary_attention_robust_v2_*.json"))
    seeds = sorted(json.load(open(p))["seed"] for p in paths)
    assert seeds == [1, 2]
    assert len(glob.glob(str(tmp_path / "models" / "*.pt"))) == 4
    assert len(glob.glob(str(tmp_path / "result" / "test1_*.npz"))) == 2


def test_fallback_trains_the_seeds_one_after_another_and_says_so(tiny_data, tmp_path, capsys):
    """An LSTM model (vmap fails): a note, then each seed's own run."""
    assert cli(["train", str(tiny_data), "--model", "attention", "--feat_type", "frm_unalign", "--quiet", "--epochs",
                "1", "--folds", "2", "--seeds", "0,1", "--parallel_seeds", "--out", str(tmp_path / "s{seed}")]) == 0
    out = capsys.readouterr().out
    assert "training seeds 0,1 one after another, not as one stacked model" in out and "lstm" in out.lower()
    for seed in (0, 1):
        s = json.load(open(glob.glob(str(tmp_path / f"s{seed}" / "summary_attention_*.json"))[0]))
        assert s["seed"] == seed and len(s["folds"]) == 2


def test_bad_seed_lists_are_errors(tiny_data, tmp_path, capsys):
    for seeds, message in (("1,x", "comma-separated integers"), ("1,1", "twice")):
        assert cli(["train", str(tiny_data), "--seeds", seeds, "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
    assert cli(["train", str(tiny_data), "--parallel_seeds", "--out", str(tmp_path)]) == 2
    assert "--parallel_seeds needs --seeds" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())                     # refused before anything was written
