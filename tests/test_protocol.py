"""Training protocols: ours (AdamW, schedule, early stop, probability averaging) and MERBench's
main-release.py (Adam with coupled L2, constant rate, every epoch, logit averaging)."""
import numpy as np
import pytest
import torch

from merbench_plugins.evaluate import metrics
from merbench_plugins.evaluate.metrics import mer_results
from merbench_plugins.train import engine


def one_step_on_zero_loss(kind, lr=0.01, wd=0.1):
    """A parameter at 1.0 with no loss gradient: only the weight decay moves it."""
    p = torch.nn.Parameter(torch.ones(1))
    opt = engine.make_optimizer([p], engine.TrainOptions(lr=lr, weight_decay=wd, optimizer=kind))
    p.grad = torch.zeros(1)
    opt.step()
    return opt, float(p.detach())


def test_adam_couples_l2_into_the_gradient_and_adamw_decouples_it():
    opt, moved = one_step_on_zero_loss("adam")
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 0.1
    # coupled: grad = wd * p, normalised by Adam -> a full lr step
    assert moved == pytest.approx(1 - 0.01, abs=1e-6)
    opt, moved = one_step_on_zero_loss("adamw")
    assert type(opt) is torch.optim.AdamW
    assert moved == pytest.approx(1 - 0.01 * 0.1, abs=1e-7)  # decoupled: p -= lr * wd * p
    with pytest.raises(ValueError, match="adamw or adam"):
        one_step_on_zero_loss("sgd")


def fold(logits):
    logits = np.asarray(logits, dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return engine.FoldResult(best_epoch=1, best_metric=0.0, eval_results={},
                             test_results=[dict(emologits=logits, emoprobs=probs, emolabels=np.array([1]))])


def test_logit_averaging_differs_from_probability_averaging():
    # fold 2 rules class 2 out by a large logit margin: its probability mass goes to class 0 (probs
    # pick 0), while the logit mean [0.9, 1.0, -5.0] picks class 1, the label
    folds = [fold([[0.0, 2.0, 0.0]]), fold([[1.8, 0.0, -10.0]])]
    by_probs, _ = metrics.average_folds(folds, 0, mer_results, "probs")
    by_logits, _ = metrics.average_folds(folds, 0, mer_results, "logits")
    mean_probs = np.mean([f.test_results[0]["emoprobs"] for f in folds], axis=0)
    np.testing.assert_allclose(by_probs["emoprobs"], mean_probs, rtol=1e-6)
    mean_logits = np.array([[0.9, 1.0, -5.0]])
    np.testing.assert_allclose(by_logits["emoprobs"], np.exp(mean_logits) / np.exp(mean_logits).sum(), rtol=1e-5)
    assert by_logits["emoacc"] == 1.0 and by_probs["emoacc"] == 0.0
    with pytest.raises(ValueError, match="probs or logits"):
        metrics.average_folds(folds, 0, mer_results, "median")


def test_saved_predictions_and_condition_rows_average_like_the_headline_score():
    # the npz predictions and the per-condition tables must follow the protocol's averaging too,
    # or a merbench-protocol run's 'all' row would disagree with its own headline F1
    from merbench_plugins.evaluate import conditions
    folds = [fold([[0.0, 2.0, 0.0]]), fold([[1.8, 0.0, -10.0]])]
    for average in ("probs", "logits"):
        headline, _ = metrics.average_folds(folds, 0, mer_results, average)
        tests = [dict(f.test_results[0], names=["s0"]) for f in folds]
        saved = conditions.fold_average(tests, average)
        np.testing.assert_allclose(saved["emoprobs"], headline["emoprobs"], rtol=1e-6)


def resolved(*argv, runner="merbench"):
    """The RunConfig of a command line: main-robust.py's (``--model attention_robust_v2 --dataset MER2023`` added)
    or the standalone runner's."""
    from merbench_plugins.train import merbench_runner, runner as standalone
    if runner == "merbench":
        return merbench_runner.resolve(merbench_runner.build_parser(),
                                       ["--model", "attention_robust_v2", "--dataset", "MER2023", *argv])[0]
    return standalone.resolve(standalone.build_parser(), list(argv))[0]


def test_protocol_flags_resolve_to_train_options():
    from merbench_plugins.train.run_config import ConfigError
    mer = resolved("--protocol", "merbench", "--l2", "0.001").training
    assert (mer.optimizer, mer.scheduler, mer.early_stop, mer.average, mer.weight_decay) == \
        ("adam", "none", 0, "logits", 0.001)
    ours = resolved().training
    assert (ours.optimizer, ours.scheduler, ours.early_stop, ours.average) == ("adamw", "cosine", 20, "probs")
    assert resolved("data", runner="standalone").training.early_stop == 12
    assert resolved("--scheduler", "step", "--early_stop", "5").training.scheduler == "step"
    assert resolved("--protocol", "merbench", "--scheduler", "none").training.scheduler == "none"
    for flag in (["--scheduler", "cosine"], ["--early_stop", "20"]):
        with pytest.raises(ConfigError, match="drop --"):
            resolved("--protocol", "merbench", *flag)
    cfg = resolved("--protocol", "merbench")
    record = cfg.protocol_record()
    assert record["protocol"] == "merbench" and record["average"] == "logits" and record["optimizer"] == "adam"
    assert cfg.source["training.optimizer"] == "protocol:merbench" and cfg.source["training.weight_decay"] == "default"


class Worsening(torch.nn.Module):
    """Learns nothing useful: logits are a free bias; eval metric varies but training never stops early."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(3))
        self.grad_clip = -1

    def forward(self, batch):
        x = batch["x"]                                                     # [B, 1]
        logits = x * 0 + self.bias                                         # [B, 3]
        return x, logits, torch.zeros(len(x), 1), torch.zeros(())


def test_merbench_protocol_runs_every_epoch_at_a_constant_rate(monkeypatch):
    made = []
    real = engine.make_optimizer
    monkeypatch.setattr(engine, "make_optimizer", lambda params, opts: made.append(real(params, opts)) or made[-1])
    g = torch.Generator().manual_seed(0)
    train = [({"x": torch.randn(8, 1, generator=g)}, torch.randint(0, 3, (8,), generator=g), torch.zeros(8), ["a"] * 8)
             for _ in range(3)]
    evals = [({"x": torch.randn(8, 1)}, torch.zeros(8, dtype=torch.long), torch.zeros(8), ["e"] * 8)]
    opts = engine.TrainOptions(epochs=7, lr=0.05, weight_decay=0.01, optimizer="adam", scheduler="none",
                               early_stop=0, average="logits", output_dim1=3, output_dim2=0, metric_name="emo",
                               show_progress=False)
    fold = engine.train_fold(Worsening, train, evals, [evals], opts, torch.device("cpu"), mer_results)
    assert type(made[0]) is torch.optim.Adam and made[0].param_groups[0]["weight_decay"] == 0.01
    assert len(fold.history) == 7                                          # no early stop
    assert {h["lr"] for h in fold.history} == {0.05}                       # no schedule
    metrics = [h["eval_metric"] for h in fold.history]
    assert fold.best_epoch == int(np.argmax(metrics)) + 1                  # main-release.py's best_index
    assert fold.test_results[0]["emologits"].shape == (8, 3)               # raw logits kept for averaging
