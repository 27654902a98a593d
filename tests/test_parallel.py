"""Fold-parallel training (train/parallel.py) against the sequential loop it replaces."""
import glob
import json

import numpy as np
import pytest
import torch

from merbench_plugins import registry, runtime
from merbench_plugins.__main__ import main as cli
from merbench_plugins.data.merbench_layout import FeatureDataset, SplitLoader
from merbench_plugins.data.synthetic import feature_name
from merbench_plugins.evaluate.metrics import mer_results
from merbench_plugins.train import engine, parallel
from merbench_plugins.train.runner import fold_indices

from conftest import DETERMINISTIC_V2, model_args

pytestmark = pytest.mark.skipif(parallel.functional_api() is None, reason="needs torch.func or functorch")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def train_split(tiny_data):
    names = [feature_name(m) for m in range(3)]
    return FeatureDataset(str(tiny_data), *names, feat_type="utt").load("train")


def build(**overrides):
    args = model_args(**overrides)
    return lambda: registry.create_model("attention_robust_v2", args)


def opts(**kw):
    kw = dict(dict(epochs=4, early_stop=0, show_progress=False, lr=3e-3), **kw)
    return engine.TrainOptions(**kw)


def run_parallel(split, splits, seeds, o, make=None, **kw):
    return parallel.train_folds(make or build(), parallel.DeviceData.from_split(split, CPU), splits,
                                [parallel.DeviceData.from_split(split, CPU)], o, CPU, mer_results, seeds=seeds,
                                batch_size=8, **kw)


DETERMINISTIC = DETERMINISTIC_V2


def test_deterministic_model_follows_the_sequential_trajectory(train_split):
    """No randomness in the model: the stacked folds see the sequential folds' init and batches, so they
    walk the same path (train loss, eval metric and test predictions per epoch, to float precision)."""
    splits = fold_indices(len(train_split), 3, 0)
    o = opts()
    par = run_parallel(train_split, splits, [10, 11, 12], o, make=build(**DETERMINISTIC))
    for k, (tr, ev) in enumerate(splits):
        runtime.seed_everything(10 + k)
        seq = engine.train_fold(build(**DETERMINISTIC), SplitLoader(train_split.subset(tr), 8, shuffle=True, seed=10 + k),
                                SplitLoader(train_split.subset(ev), 8), [SplitLoader(train_split, 8)], o, CPU,
                                mer_results)
        assert [h["train_loss"] for h in par[k].history] == pytest.approx([h["train_loss"] for h in seq.history], rel=1e-4)
        assert [h["eval_metric"] for h in par[k].history] == pytest.approx([h["eval_metric"] for h in seq.history], abs=1e-4)
        assert [h["lr"] for h in par[k].history] == pytest.approx([h["lr"] for h in seq.history])
        assert par[k].best_epoch == seq.best_epoch
        np.testing.assert_allclose(par[k].test_results[0]["emologits"], seq.test_results[0]["emologits"], atol=1e-4)


def test_changing_fold_two_leaves_fold_one_unchanged(train_split):
    """Dropout, modality dropout and VAE noise on: fold 1's trajectory does not depend on fold 2's data or seed."""
    splits = fold_indices(len(train_split), 3, 0)
    o = opts(epochs=3)
    base = run_parallel(train_split, splits, [5, 6, 7], o, rng_seed=1)
    other = [splits[0], (splits[1][0][::-1][:-3], splits[1][1]), splits[2]]   # fold 2: other data, order, size
    changed = run_parallel(train_split, other, [5, 99, 7], o, rng_seed=1)
    assert [h["train_loss"] for h in base[0].history] == [h["train_loss"] for h in changed[0].history]
    assert [h["eval_metric"] for h in base[0].history] == [h["eval_metric"] for h in changed[0].history]
    assert [h["train_loss"] for h in base[1].history] != [h["train_loss"] for h in changed[1].history]


def test_folds_draw_different_dropout_noise(train_split):
    """Identical folds (same seed, same data) still differ: vmap draws each fold's own noise."""
    tr, ev = fold_indices(len(train_split), 3, 0)[0]
    res = run_parallel(train_split, [(tr, ev), (tr, ev)], [3, 3], opts(epochs=2))
    assert res[0].history[0]["train_loss"] != res[1].history[0]["train_loss"]
    det = run_parallel(train_split, [(tr, ev), (tr, ev)], [3, 3], opts(epochs=2), make=build(**DETERMINISTIC))
    assert det[0].history[0]["train_loss"] == pytest.approx(det[1].history[0]["train_loss"], rel=1e-6)


def test_each_fold_stops_and_keeps_its_own_best_checkpoint(train_split):
    splits = fold_indices(len(train_split), 3, 0)
    o = opts(epochs=12, early_stop=2, lr=2e-2)
    res = run_parallel(train_split, splits, [0, 1, 2], o, keep_state=True)
    data = parallel.DeviceData.from_split(train_split, CPU)
    for k, r in enumerate(res):
        metrics = [h["eval_metric"] for h in r.history]
        assert r.best_metric == max(metrics) and r.best_epoch == 1 + int(np.argmax(metrics))
        assert len(r.history) == min(12, r.best_epoch + 2)            # stopped 2 epochs after its own best
        model = build()()
        model.load_state_dict(r.state_dict)                           # the best epoch's weights, not the last
        eval_res = engine.run_epoch(model, data.batches(splits[k][1], 8), o, CPU, mer_results)
        assert engine.metric_value(eval_res, o.metric_name) == pytest.approx(r.best_metric, abs=1e-5)
    assert len({len(r.history) for r in res}) > 1 or all(len(r.history) == 12 for r in res)


def test_grad_clip_and_adam_option_match_torch(train_split):
    """Per-fold clip_grad_value_ and MERBench's Adam (coupled L2): still the sequential trajectory."""
    splits = fold_indices(len(train_split), 2, 0)
    o = opts(epochs=2, optimizer="adam", weight_decay=1e-2, grad_clip=0.01, scheduler="step")
    par = run_parallel(train_split, splits, [1, 2], o, make=build(**DETERMINISTIC))
    for k, (tr, ev) in enumerate(splits):
        runtime.seed_everything(1 + k)
        seq = engine.train_fold(build(**DETERMINISTIC), SplitLoader(train_split.subset(tr), 8, shuffle=True, seed=1 + k),
                                SplitLoader(train_split.subset(ev), 8), [], o, CPU, mer_results)
        assert [h["train_loss"] for h in par[k].history] == pytest.approx([h["train_loss"] for h in seq.history], rel=1e-4)


def test_device_batches_equal_the_loaders(train_split):
    tr, _ = fold_indices(len(train_split), 3, 0)[1]
    data = parallel.DeviceData.from_split(train_split, CPU)
    mine = list(data.batches(tr, 7, shuffle=True, generator=torch.Generator().manual_seed(4)))
    theirs = list(SplitLoader(train_split.subset(tr), 7, shuffle=True, seed=4))
    assert len(mine) == len(theirs)
    for (b1, e1, v1, n1), (b2, e2, v2, n2) in zip(mine, theirs):
        assert n1 == n2 and torch.equal(e1, e2) and torch.equal(v1, v2)
        assert all(torch.equal(b1[key], b2[key]) for key in b2)


def test_device_data_from_a_merbench_dataset_equals_its_dataloader():
    """main-robust.py builds the device tensors through MERBench's own collater."""
    from torch.utils.data import DataLoader

    class Toy(torch.utils.data.Dataset):
        def __init__(self):
            g = np.random.RandomState(0)
            self.items = [dict(audio=g.randn(3, 4), text=g.randn(3, 5), video=g.randn(3, 2), emo=i % 3,
                               val=float(i), name=f"s{i}") for i in range(11)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

        def collater(self, xs):
            batch = {k + "s": torch.FloatTensor(np.array([x[k] for x in xs])) for k in ("audio", "text", "video")}
            return (batch, torch.LongTensor([x["emo"] for x in xs]), torch.FloatTensor([x["val"] for x in xs]),
                    [x["name"] for x in xs])

    ds = Toy()
    data = parallel.DeviceData.from_dataset(ds, CPU)
    for (b1, e1, v1, n1), (b2, e2, v2, n2) in zip(data.batches(range(len(ds)), 4),
                                                  DataLoader(ds, batch_size=4, collate_fn=ds.collater)):
        assert n1 == n2 and torch.equal(e1, e2) and torch.equal(v1, v2)
        assert all(torch.equal(b1[k], b2[k]) for k in b2)


def test_runner_fallback_says_so_and_still_trains(tiny_data, tmp_path, capsys):
    """An LSTM (no vmap batching rule): the runner logs the fallback and trains the folds sequentially."""
    assert cli(["train", str(tiny_data), "--model", "attention", "--feat_type", "frm_unalign", "--quiet",
                "--epochs", "1", "--folds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training the 2 folds one after another, not fold-parallel" in out and "lstm" in out.lower()
    assert json.load(open(glob.glob(str(tmp_path / "summary_attention_*.json"))[0]))["tests"]["test1"]["f1"] >= 0


def test_runner_parallel_and_sequential_agree(tiny_data, tmp_path):
    """Both paths of the runner on a tiny set: same protocol, metrics within training noise."""
    scores = {}
    for flag in ([], ["--no_fold_parallel"]):
        out = tmp_path / (flag[0] if flag else "par")
        assert cli(["train", str(tiny_data), "--model", "attention_robust_v2", "--quiet", "--epochs", "3", "--folds",
                    "2", "--out", str(out), "--savemodel"] + flag) == 0
        s = json.load(open(glob.glob(str(out / "summary_attention_robust_v2_*.json"))[0]))
        scores[bool(flag)] = s["tests"]["test1"]["f1"]
        assert len(glob.glob(str(out / "models" / "*.pt"))) == 2
    assert abs(scores[True] - scores[False]) < 0.25


def test_runner_selects_on_corrupted_validation_fold_parallel(tiny_data, tmp_path, capsys):
    assert cli(["train", str(tiny_data), "--model", "attention_robust_v2", "--epochs", "2", "--folds", "2",
                "--select_on", "corrupted", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fold-parallel: the 2 folds of attention_robust_v2 trained at once" in out and "one after another" not in out
    summary = json.load(open(glob.glob(str(tmp_path / "summary_attention_robust_v2_*.json"))[0]))
    assert summary["protocol"]["select_on"] == "corrupted"


def test_fold_scaler_skips_and_backs_off_only_the_overflowing_fold():
    scaler = parallel.FoldScaler(3, CPU, True, init_scale=8.0, growth_interval=2)
    true_grad = torch.randn(3, 10)
    grad = true_grad * 8.0
    grad[1, 4] = float("inf")                                          # fold 2 overflowed in fp16
    bias = torch.ones(3, 2) * 8.0                                      # a second parameter, finite everywhere
    assert scaler.unscale([grad, bias], None, [0, 1, 2]) == [0, 2]
    torch.testing.assert_close(grad[[0, 2]], true_grad[[0, 2]])
    assert bias.tolist() == [[1.0, 1.0]] * 3
    assert scaler.scales.tolist() == [8.0, 4.0, 8.0] and scaler.skipped == [0, 1, 0]
    assert scaler.unscale([torch.ones(3, 10)], None, [0, 2]) == [0, 2]  # a second finite step in a row: growth
    assert scaler.scales.tolist() == [16.0, 4.0, 16.0]
    rows = torch.tensor([[4.0], [float("nan")]])                       # a step of folds 2 and 3 only (rows [1, 2])
    assert scaler.unscale([rows], [1, 2], [1, 2]) == [1] and rows[0].item() == 1.0
    assert scaler.scales.tolist() == [16.0, 4.0, 8.0]
    losses = torch.ones(3)
    assert scaler.scale(torch.ones(2), [1, 2]).tolist() == [4.0, 8.0]
    off = parallel.FoldScaler(3, CPU, False)
    assert off.scale(losses, None) is losses and off.unscale([grad], None, [0, 1]) == [0, 1]


def test_loss_scaling_leaves_the_trajectory_unchanged(train_split):
    """Per-fold fp16 loss scaling (forced on, in fp32): power-of-two scales unscale exactly, so the folds walk
    the unscaled path; this is the path fp16 --amp takes on GPUs without bf16 (no sequential fallback)."""
    splits = fold_indices(len(train_split), 2, 0)
    o = opts(epochs=2, grad_clip=0.05)
    plain = run_parallel(train_split, splits, [1, 2], o, make=build(**DETERMINISTIC))
    scaled = run_parallel(train_split, splits, [1, 2], o, make=build(**DETERMINISTIC), loss_scaling=True)
    for a, b in zip(plain, scaled):
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-5)
        np.testing.assert_allclose(a.test_results[0]["emologits"], b.test_results[0]["emologits"], atol=1e-5)


def test_corrupted_selection_follows_the_sequential_loop(train_split):
    """--select_on corrupted, fold-parallel: each fold validates on its clean + corrupted copy (the sequential
    eval loader's batches as device rows), so selection, history and test predictions match the sequential loop."""
    from merbench_plugins.train import selection
    splits = fold_indices(len(train_split), 2, 0)
    o = opts(epochs=3)
    evals = [parallel.DeviceData.from_batches(
        selection.eval_loader(SplitLoader(train_split.subset(ev), 8), "corrupted", 4 + k), CPU)
        for k, (_, ev) in enumerate(splits)]
    assert len(evals[0]) == 2 * len(splits[0][1]) and evals[0].names[-1].endswith("#corrupted")
    par = run_parallel(train_split, splits, [4, 5], o, make=build(**DETERMINISTIC), evals=evals)
    for k, (tr, ev) in enumerate(splits):
        runtime.seed_everything(4 + k)
        seq = engine.train_fold(build(**DETERMINISTIC), SplitLoader(train_split.subset(tr), 8, shuffle=True, seed=4 + k),
                                selection.eval_loader(SplitLoader(train_split.subset(ev), 8), "corrupted", 4 + k),
                                [SplitLoader(train_split, 8)], o, CPU, mer_results)
        assert [h["eval_metric"] for h in par[k].history] == pytest.approx([h["eval_metric"] for h in seq.history], abs=1e-4)
        assert par[k].eval_results["names"] == seq.eval_results["names"]
        assert par[k].best_epoch == seq.best_epoch


def test_compiled_step_sees_one_shape_only(train_split, monkeypatch):
    """--compile: the compiled step gets the full stack at the run's batch size every time (folds that stopped
    stay in the stack, unstepped); the probe, short last batches and single-fold steps run eagerly."""
    shapes = []

    def fake_compiled(fn):
        def call(params, fixed, batch, emos, vals):
            shapes.append((next(iter(params.values())).shape[0], emos.shape))
            return fn(params, fixed, batch, emos, vals)
        return call
    monkeypatch.setattr(parallel, "compiled", fake_compiled)
    splits = fold_indices(len(train_split), 3, 0)
    splits = [(tr[:-3], ev) if k == 1 else (tr, ev) for k, (tr, ev) in enumerate(splits)]   # short last batches
    o = opts(epochs=8, early_stop=1, lr=2e-2)
    res = run_parallel(train_split, splits, [0, 1, 2], o, compile=True)
    assert len({len(r.history) for r in res}) > 1                      # folds stopped at different epochs
    assert shapes and set(shapes) == {(3, torch.Size([3, 8]))}



class BatchNormModel(torch.nn.Module):
    """A MERBench-style model with buffers: BatchNorm over the concatenated inputs."""

    def __init__(self):
        super().__init__()
        self.grad_clip = -1
        self.norm = torch.nn.BatchNorm1d(40)
        self.fc_out_1, self.fc_out_2 = torch.nn.Linear(40, 6), torch.nn.Linear(40, 1)

    def forward(self, batch):
        x = self.norm(torch.cat([batch["audios"], batch["texts"], batch["videos"]], dim=1))
        return x, self.fc_out_1(x), self.fc_out_2(x), torch.zeros(())


def test_batchnorm_buffers_follow_the_sequential_folds(train_split):
    """Buffers are stacked and snapshotted like weights: running statistics, eval losses, the best checkpoint
    (weights and buffers) and test predictions equal the sequential folds', also after a fold stopped early
    (the others' buffer updates are kept) and without the probe step moving any statistic."""
    splits = fold_indices(len(train_split), 3, 0)
    o = opts(epochs=5, early_stop=2, lr=3e-2)
    par = run_parallel(train_split, splits, [0, 1, 2], o, make=BatchNormModel, keep_state=True)
    assert len({len(r.history) for r in par}) > 1                      # folds stopped at different epochs
    for k, (tr, ev) in enumerate(splits):
        runtime.seed_everything(k)
        seq = engine.train_fold(BatchNormModel, SplitLoader(train_split.subset(tr), 8, shuffle=True, seed=k),
                                SplitLoader(train_split.subset(ev), 8), [SplitLoader(train_split, 8)], o, CPU,
                                mer_results, keep_state=True)
        assert [h["eval_loss"] for h in par[k].history] == pytest.approx([h["eval_loss"] for h in seq.history], rel=1e-5)
        assert par[k].best_epoch == seq.best_epoch and len(par[k].history) == len(seq.history)
        for key in ("norm.running_mean", "norm.running_var", "norm.num_batches_tracked"):
            torch.testing.assert_close(par[k].state_dict[key], seq.state_dict[key], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(par[k].test_results[0]["emologits"], seq.test_results[0]["emologits"], atol=1e-5)


def test_eval_loss_is_a_mean_over_samples_in_both_paths(train_split):
    """One eval_loss definition: the task loss over every validation sample at once, in the sequential loop
    (batches of 8 over 20 samples: a mean of batch means would differ) and in the stacked one."""
    splits = fold_indices(len(train_split), 3, 0)
    o = opts(epochs=2)
    par = run_parallel(train_split, splits, [3, 4, 5], o, make=build(**DETERMINISTIC))
    data = parallel.DeviceData.from_split(train_split, CPU)
    for k, (tr, ev) in enumerate(splits):
        runtime.seed_everything(3 + k)
        seq = engine.train_fold(build(**DETERMINISTIC), SplitLoader(train_split.subset(tr), 8, shuffle=True, seed=3 + k),
                                SplitLoader(train_split.subset(ev), 8), [], o, CPU, mer_results, keep_state=True)
        assert [h["eval_loss"] for h in par[k].history] == pytest.approx([h["eval_loss"] for h in seq.history], rel=1e-5)
        model = build(**DETERMINISTIC)()
        model.load_state_dict(seq.state_dict)
        whole = engine.run_epoch(model, data.batches(ev, len(ev)), o, CPU, mer_results)["loss"]   # one batch
        assert engine.run_epoch(model, data.batches(ev, 8), o, CPU, mer_results)["loss"] == pytest.approx(whole, rel=1e-5)


def test_a_nan_fold_stops_training_at_once_and_is_named(train_split, monkeypatch):
    """Non-finite input in fold 2's first batch: the run stops before any update, naming the fold, the epoch,
    the sample and the cause; finite inputs with a diverging step get the learning-rate advice instead."""
    splits = fold_indices(len(train_split), 3, 0)
    first = torch.as_tensor(splits[1][0])[torch.randperm(len(splits[1][0]), generator=torch.Generator().manual_seed(11))][0]
    bad = train_split.subset(range(len(train_split)))
    bad.features = {k: v.clone() for k, v in bad.features.items()}
    bad.features["texts"][first, 3] = float("nan")
    updates = []
    original = parallel.StackedAdam.step
    monkeypatch.setattr(parallel.StackedAdam, "step", lambda self, *a, **kw: updates.append(1) or original(self, *a, **kw))
    with pytest.raises(FloatingPointError) as err:
        run_parallel(bad, splits, [10, 11, 12], opts(epochs=2), make=build(**DETERMINISTIC))
    message = str(err.value)
    assert "fold 2" in message and "epoch 1" in message and not updates
    assert train_split.names[int(first)] in message and "non-finite input features" in message
    with pytest.raises(FloatingPointError, match="inputs are finite.*lower --lr"):
        run_parallel(train_split, splits, [10, 11, 12], opts(epochs=2, lr=1e38), make=build(**DETERMINISTIC))
    with pytest.raises(FloatingPointError, match=r"fold 1/1, epoch 1 .*non-finite input features"):
        engine.train_fold(build(**DETERMINISTIC), SplitLoader(bad.subset(splits[1][0]), 8), SplitLoader(bad, 8), [],
                          opts(epochs=1), CPU, mer_results, desc="fold 1/1")
