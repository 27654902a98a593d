"""Training protocols: ours (AdamW, schedule, early stop, probability averaging) and MERBench's
main-release.py (Adam with coupled L2, constant rate, every epoch, logit averaging)."""
import numpy as np
import pytest
import torch

from merbench_plugins.train import engine
from merbench_plugins.train.metrics import mer_results


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
    by_probs, _ = engine.average_folds(folds, 0, mer_results, "probs")
    by_logits, _ = engine.average_folds(folds, 0, mer_results, "logits")
    mean_probs = np.mean([f.test_results[0]["emoprobs"] for f in folds], axis=0)
    np.testing.assert_allclose(by_probs["emoprobs"], mean_probs, rtol=1e-6)
    mean_logits = np.array([[0.9, 1.0, -5.0]])
    np.testing.assert_allclose(by_logits["emoprobs"], np.exp(mean_logits) / np.exp(mean_logits).sum(), rtol=1e-5)
    assert by_logits["emoacc"] == 1.0 and by_probs["emoacc"] == 0.0
    with pytest.raises(ValueError, match="probs or logits"):
        engine.average_folds(folds, 0, mer_results, "median")
