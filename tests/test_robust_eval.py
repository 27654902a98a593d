"""Robust evaluation: one row per condition, the full-modality rows equal the plain test score."""
import csv
import glob
import json

import pytest
import torch

from merbench_plugins.__main__ import main as cli
from merbench_plugins.evaluate import robust_eval
from merbench_plugins.evaluate.robust_eval import Condition, SUBSETS, all_conditions, apply_condition
from conftest import random_batch


def test_conditions_cover_subsets_rates_and_noise():
    conds = all_conditions()
    assert [c.value for c in conds if c.kind == "subset"] == list(SUBSETS)
    assert [c.value for c in conds if c.kind == "missing"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert 0.0 in [c.value for c in conds if c.kind == "noise"]


def names_of(n, prefix="s"):
    return [f"{prefix}{i}" for i in range(n)]


def test_apply_condition_zeroes_absent_modalities_and_keeps_one():
    batch, names = random_batch(batch=200), names_of(200)
    out = apply_condition(batch, Condition("subset", "AV"), names, 0, {})
    assert out["texts"].abs().sum() == 0 and torch.equal(out["audios"], batch["audios"])
    assert out["masks"].tolist()[0] == [True, False, True]
    out = apply_condition(batch, Condition("missing", 0.9), names, 0, {})
    assert out["masks"].any(1).all()                          # never all three gone
    assert 0.6 < 1 - out["masks"].float().mean() < 0.7       # ~0.9 dropped, minus the rescued ones
    again = apply_condition(batch, Condition("missing", 0.9), names, 0, {})
    assert torch.equal(out["masks"], again["masks"])         # fixed seed: identical for every model
    stds = {k: 1.0 for k in ("audios", "texts", "videos")}
    batch["videos"][:3] = 0
    noisy = apply_condition(batch, Condition("noise", 1.0), names, 0, stds)
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
    ckpt = torch.load(glob.glob(str(out / "models" / "*.pt"))[0], map_location="cpu", weights_only=False)
    assert set(ckpt["feature_std"]) == {"audios", "texts", "videos"} and min(ckpt["feature_std"].values()) > 0
    # the separate CLI on the saved checkpoints, another batch size and only two kinds: the same inputs, the same rows
    assert cli(["robust-eval", str(tiny_data), "--checkpoints", str(out / "models" / "*.pt"), "--kinds",
                "missing,noise", "--tests", "test2", "--batch_size", "7", "--out", str(tmp_path / "re")]) == 0
    again = list(csv.DictReader(open(glob.glob(str(tmp_path / "re" / "*.csv"))[0])))
    assert len(again) == 10 + 5
    mine = {(r["kind"], r["condition"]): r for r in rows if r["test"] == "test2"}
    for r in again:
        ref = mine[(r["kind"], float(r["condition"]))]
        assert float(r["f1"]) == pytest.approx(ref["f1"], abs=1e-6), r
        assert float(r["missing_effective"]) == ref["missing_effective"]


def test_robust_eval_cli_errors(tmp_path, capsys):
    assert cli(["robust-eval", str(tmp_path), "--checkpoints", str(tmp_path / "none*.pt")]) == 2
    assert "no checkpoint matches" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 16: the same inputs for everyone

class Recorder(torch.nn.Module):
    """A fixed linear scorer that keeps every input batch it sees."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(40, 6)
        torch.nn.init.normal_(self.w.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.w.bias)
        self.seen = []

    def forward(self, batch):
        self.seen.append({k: v.clone() for k, v in batch.items()})
        x = torch.cat([batch["audios"], batch["texts"], batch["videos"]], -1)
        return None, self.w(x), x.mean(-1), None


def loader(batch, names, size, order=None):
    """MERBench-style batches (batch, emos, vals, names) of ``size`` samples, in ``order``."""
    order = list(range(len(names))) if order is None else order
    emos, vals = torch.arange(len(names)) % 6, torch.linspace(-1, 1, len(names))
    return [({k: v[order[i:i + size]] for k, v in batch.items()}, emos[order[i:i + size]], vals[order[i:i + size]],
             [names[j] for j in order[i:i + size]]) for i in range(0, len(names), size)]


def by_name(seen, key):
    return {n: row for b in seen for n, row in zip(b["names"], b[key])}


def test_masks_and_noise_are_invariant_to_batch_size_order_and_kinds():
    """`train --robust_eval` (batch 32, all kinds) and `robust-eval` (batch 7, reversed, two kinds) see the same inputs."""
    data, names = random_batch(batch=60, seed=1), names_of(60)
    stds = robust_eval.feature_std(loader(data, names, 60))
    runs = []
    for size, order, kinds in ((32, None, ("subset", "missing", "noise")), (7, list(range(59, -1, -1)), ("missing", "noise"))):
        model, batches = Recorder(), loader(data, names, size, order)
        conds = all_conditions(kinds)
        rows = robust_eval.robust_evaluate([model], {"test": batches}, "cpu", stds=stds, conditions=conds, progress=False)
        order_names = [n for bt in batches for n in bt[3]]
        seen = {c: model.seen[i * len(batches):(i + 1) * len(batches)] for i, c in enumerate(conds)}
        runs.append((rows, seen, order_names))
    (rows_a, seen_a, names_a), (rows_b, seen_b, names_b) = runs
    for cond in seen_b:
        for key in ("masks", "audios", "videos"):
            a = dict(zip(names_a, torch.cat([b[key] for b in seen_a[cond]])))
            b = dict(zip(names_b, torch.cat([b[key] for b in seen_b[cond]])))
            assert all(torch.equal(a[n], b[n]) for n in names), (cond, key)
        ra = next(r for r in rows_a if (r["kind"], r["condition"]) == (cond.kind, cond.value))
        rb = next(r for r in rows_b if (r["kind"], r["condition"]) == (cond.kind, cond.value))
        assert ra["f1"] == pytest.approx(rb["f1"], abs=1e-9) and ra["missing_effective"] == rb["missing_effective"]
    assert 0.3 < next(r for r in rows_a if (r["kind"], r["condition"]) == ("missing", 0.5))["missing_effective"] < 0.6


def test_no_sample_loses_every_modality_and_effective_rate_is_reported():
    data, names = random_batch(batch=300, seed=2), names_of(300)
    data["audios"][:100] = 0                   # native gaps: a third lacks audio, another third text and video
    data["texts"][100:200] = 0
    data["videos"][100:200] = 0
    rows = robust_eval.robust_evaluate([Recorder()], {"test2": loader(data, names, 50)}, "cpu", stds={},
                                       conditions=all_conditions(("missing",)), progress=False)
    assert all(r["no_modality"] == 0 for r in rows)
    effective = [r["missing_effective"] for r in rows]            # native gaps + drops, at most 2 of 3 per sample
    assert effective == sorted(effective) and effective[-1] <= 2 / 3
    assert rows[0]["missing_effective"] == pytest.approx((100 + 200) / 900, abs=1e-4)   # rate 0: the native gaps
    model = Recorder()
    robust_eval.robust_evaluate([model], {"t": loader(data, names, 300)}, "cpu", stds={}, progress=False,
                                conditions=[Condition("missing", 0.9)])
    present = model.seen[0]["masks"]
    assert present.any(1).all() and not present[100:200, 1:].any()      # kept what the data has, nothing else


def test_noise_is_scaled_by_the_training_statistics_for_every_test_set():
    clean, names = random_batch(batch=200, seed=3), names_of(200)
    loud = {k: 10 * v for k, v in clean.items()}                   # a test set ten times louder than train
    stds = {"audios": 1.0, "texts": 2.0, "videos": 0.5}             # the training split's
    added = {}
    for name, data in (("quiet", clean), ("loud", loud)):
        model = Recorder()
        robust_eval.robust_evaluate([model], {name: loader(data, names, 200)}, "cpu", stds=stds, progress=False,
                                    conditions=[Condition("noise", 0.5)])
        added[name] = {k: float((model.seen[0][k] - data[k]).std()) for k in stds}
    for k, std in stds.items():
        assert added["quiet"][k] == pytest.approx(0.5 * std, rel=0.1)
        assert added["loud"][k] == pytest.approx(added["quiet"][k], rel=1e-6)
    with pytest.raises(ValueError, match="training split"):
        robust_eval.robust_evaluate([Recorder()], {"t": loader(clean, names, 50)}, "cpu", progress=False,
                                    conditions=[Condition("noise", 0.5)])


def test_amp_scores_robust_rows_like_the_plain_test(monkeypatch):
    used = []
    real = robust_eval.autocast
    monkeypatch.setattr(robust_eval, "autocast", lambda device, enabled: used.append(enabled) or real(device, enabled))
    data, names = random_batch(batch=20), names_of(20)
    robust_eval.robust_evaluate([Recorder()], {"t": loader(data, names, 10)}, "cpu", stds={}, progress=False,
                                conditions=[Condition("subset", "ATV")], amp=True)
    assert used == [True, True]                                    # both batches under the training autocast
