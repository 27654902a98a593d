"""Robust evaluation: one row per condition, the full-modality rows equal the plain test score."""
import glob
import json

import pytest
import torch

from merbench_plugins.__main__ import main as cli
from merbench_plugins.train.robust_eval import Condition, SUBSETS, all_conditions, apply_condition
from conftest import random_batch


def test_conditions_cover_subsets_rates_and_noise():
    conds = all_conditions()
    assert [c.value for c in conds if c.kind == "subset"] == list(SUBSETS)
    assert [c.value for c in conds if c.kind == "missing"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert 0.0 in [c.value for c in conds if c.kind == "noise"]


def test_apply_condition_zeroes_absent_modalities_and_keeps_one():
    batch = random_batch(batch=200)
    out = apply_condition(batch, Condition("subset", "AV"), torch.Generator().manual_seed(0), {})
    assert out["texts"].abs().sum() == 0 and torch.equal(out["audios"], batch["audios"])
    assert out["masks"].tolist()[0] == [True, False, True]
    g = torch.Generator().manual_seed(0)
    out = apply_condition(batch, Condition("missing", 0.9), g, {})
    assert out["masks"].any(1).all()                          # never all three gone
    assert 0.6 < 1 - out["masks"].float().mean() < 0.7       # ~0.9 dropped, minus the rescued ones
    again = apply_condition(batch, Condition("missing", 0.9), torch.Generator().manual_seed(0), {})
    assert torch.equal(out["masks"], again["masks"])         # fixed seed: identical for every model
    stds = {k: 1.0 for k in ("audios", "texts", "videos")}
    batch["videos"][:3] = 0
    noisy = apply_condition(batch, Condition("noise", 1.0), torch.Generator().manual_seed(0), stds)
    assert noisy["videos"][:3].abs().sum() == 0               # missing stays missing under noise
    assert not torch.equal(noisy["audios"], batch["audios"])


def test_runner_robust_eval_rows_and_full_modality_equals_plain(tiny_data, tmp_path):
    out = tmp_path / "runs"
    assert cli(["train", str(tiny_data), "--model", "attention_robust_v2", "--epochs", "2", "--folds", "2", "--quiet",
                "--robust_eval", "--savemodel", "--out", str(out)]) == 0
    s = json.load(open(glob.glob(str(out / "summary_attention_robust_v2_*.json"))[0]))
    rows = s["robust"]
    n_conds = len(all_conditions())
    assert len(rows) == 3 * n_conds
    for test in ("test1", "test2", "test3"):
        plain = s["tests"][test]
        for kind, value in (("subset", "ATV"), ("missing", 0.0), ("noise", 0.0)):
            row = [r for r in rows if r["test"] == test and r["kind"] == kind and r["condition"] == value][0]
            assert row["f1"] == pytest.approx(plain["f1"], abs=1e-12)
            assert row.get("val_mse") == plain.get("val_mse") or row["val_mse"] == pytest.approx(plain["val_mse"])
    assert glob.glob(str(out / "robust" / "robust_*.csv")) and glob.glob(str(out / "robust" / "robust_*.md"))
    pytest.importorskip("matplotlib")
    assert glob.glob(str(out / "robust" / "robust_*.png"))
    # the separate CLI on the saved checkpoints reproduces the same numbers
    assert cli(["robust-eval", str(tiny_data), "--checkpoints", str(out / "models" / "*.pt"), "--kinds", "subset",
                "--tests", "test2", "--out", str(tmp_path / "re")]) == 0
    csv = open(glob.glob(str(tmp_path / "re" / "*.csv"))[0]).read().splitlines()
    assert len(csv) == 1 + 7
    again = {line.split(",")[3]: float(line.split(",")[4]) for line in csv[1:]}
    for r in rows:
        if r["test"] == "test2" and r["kind"] == "subset":
            assert again[r["condition"]] == pytest.approx(r["f1"], abs=1e-4)


def test_robust_eval_cli_errors(tmp_path, capsys):
    assert cli(["robust-eval", str(tmp_path), "--checkpoints", str(tmp_path / "none*.pt")]) == 2
    assert "no checkpoint matches" in capsys.readouterr().err
