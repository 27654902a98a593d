"""--compile trains right: torch.compile (inductor) gradients equal the eager ones under vmap with our randomness.

The bug this guards against (docs/inductor_vmap_dropout.md): inductor returned zero gradients through
``F.dropout`` under ``vmap(randomness="different")`` when corruption-style draws and a reconstruction
shared the graph, so compiled fold-parallel runs did not learn. ``fallback_random`` makes inductor draw
eager's random numbers, so compiled and eager gradients can be compared value for value.

The cheap test (always run, ~20-60 s of compilation on a CPU) compiles the pattern of the bug built from
our own modules; the per-model tests compile whole V2 / V4 / MRG-Net fold-parallel steps (minutes each on
a CPU) and run only with MERBENCH_PLUGINS_COMPILE_TESTS=1.
"""
import os

import pytest
import torch

from merbench_plugins import registry
from merbench_plugins.modules.dropout import dropout
from merbench_plugins.modules.masking import corrupt_inputs
from merbench_plugins.train import engine, parallel

from conftest import model_args

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile") or parallel.functional_api() is None,
                                reason="needs torch.compile and torch.func")
MODEL_TESTS = os.environ.get("MERBENCH_PLUGINS_COMPILE_TESTS") == "1"


@pytest.fixture
def eager_random():
    """Inductor draws eager's random numbers (and compiles afresh: no cached graph from another test)."""
    import torch._inductor.config as inductor_config
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):     # (monkeypatch's undo deletes a config entry)
        yield
    torch._dynamo.reset()


def eager_and_compiled(fn, *args):
    """(loss, gradients w.r.t. args[0]) of fn eagerly and compiled, from the same random state."""
    out = []
    for f in (fn, torch.compile(fn, dynamic=False)):
        w = args[0].detach().clone().requires_grad_(True)
        torch.manual_seed(0)
        loss = f(w, *args[1:])
        out.append((loss.detach(), torch.autograd.grad(loss.sum(), [w])[0]))
    return out


def test_compiled_gradients_through_dropout_corruption_and_reconstruction_match_eager(eager_random):
    """The bug's pattern with our pieces: corruption augmentation, explicit-mask dropout, a tied reconstruction,
    under vmap over 3 folds. With F.dropout in place of ``dropout``, inductor's gradients came out 0."""
    def fold_loss(w, x):                                           # w [H, D], x [B, D]
        present = torch.ones(x.shape[0], 3, dtype=torch.bool)
        (xc, _, _), _ = corrupt_inputs([x, x * 0.5, x[:, :8]], present, p=1.0)
        h = torch.relu(dropout(xc, 0.3) @ w.t())                   # [B, H]
        return ((h @ w) - xc).pow(2).mean() + h.mean()

    torch.manual_seed(1)
    x, w = torch.randn(3, 16, 40), torch.randn(3, 8, 40) * 0.1
    (eager_loss, eager_grad), (comp_loss, comp_grad) = eager_and_compiled(
        parallel.functional_api()[0](fold_loss, randomness="different"), w, x)
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert eager_grad.flatten(1).norm(dim=1).min() > 0.01
    torch.testing.assert_close(comp_grad, eager_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not MODEL_TESTS, reason="compiles a whole model (minutes on a CPU): "
                                            "set MERBENCH_PLUGINS_COMPILE_TESTS=1")
@pytest.mark.parametrize("name", ["attention_robust_v2", "attention_robust_v4", "mrg_net"])
def test_compiled_fold_parallel_step_matches_eager(name, eager_random):
    """The fold-parallel training step of our models, corruption augmentation and every random draw on, one
    sample's text missing: compiled losses and gradients equal eager ones."""
    args = model_args(corrupt_aug=0.5, use_modality_dropout=True)
    fp = parallel.FoldParallel(lambda: registry.create_model(name, args), [0, 1],
                               engine.TrainOptions(epochs=1, show_progress=False), torch.device("cpu"))
    fp.template.train()
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randn(2, 8, d, generator=g) for k, d in (("audios", 12), ("texts", 20), ("videos", 8))}
    batch["texts"][:, :2] = 0
    emos, vals = torch.randint(0, 6, (2, 8), generator=g), torch.randn(2, 8, generator=g)
    results, buffers = [], []
    for fn in (fp.train_fn, torch.compile(fp.train_fn, dynamic=False)):
        torch.manual_seed(0)
        params = fp.params.trainable()
        # each run from the same buffers (the typicality statistics are updated in place by a training step)
        fixed = {n: v.clone() for n, v in fp.params.fixed_rows().items()}
        losses = fn(params, fixed, batch, emos, vals)
        results.append((losses.detach(), torch.autograd.grad(losses.sum(), list(params.values()), allow_unused=True)))
        buffers.append(fixed)
    (eager_loss, eager_grads), (comp_loss, comp_grads) = results
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for n in buffers[0]:                                             # the compiled step's buffer updates land
        torch.testing.assert_close(buffers[1][n], buffers[0][n], rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")
    running = [n for n in buffers[0] if "running_" in n]                # V2 / V4: the typicality statistics
    assert all(not torch.equal(buffers[0][n], fp.params.fixed_rows()[n]) for n in running)
    for pname, a, b in zip(fp.params.names, eager_grads, comp_grads):
        if a is None:
            assert b is None, pname
            continue
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=lambda m: f"{pname}: {m}")
