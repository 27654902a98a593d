"""The robustness recipe (issue 21): one helper, applied outside any model by both training loops, and
inside our models; missing detection beyond exact zeros."""
import pytest
import torch
import torch.nn as nn

from conftest import model_args
from merbench_plugins.modules.masking import RobustRecipe, presence_mask
from merbench_plugins.registry import create_model
from merbench_plugins.train import engine, parallel

KEYS = ("audios", "texts", "videos")


def batch_of(n=64, dims=(12, 20, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, d, generator=g) + 1.0 for k, d in zip(KEYS, dims)}


def test_presence_counts_constant_vectors_and_explicit_masks_as_missing():
    batch = batch_of(4)
    batch["audios"][0] = 0.0                       # MERBench's missing
    batch["texts"][1] = -1.0                       # missing written as a constant fill
    batch["videos"][2] = 1e-8
    present = presence_mask(batch)
    assert present.tolist() == [[False, True, True], [True, False, True], [True, True, False], [True, True, True]]
    batch["masks"] = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    assert presence_mask(batch)[3].tolist() == [False, True, True]
    frames = torch.randn(2, 5, 6)
    frames[0] = 3.0                                 # every frame constant
    frames[1, :2] = 0.0                             # front padding, real frames after it
    assert presence_mask({"audios": frames, "texts": frames, "videos": frames})[:, 0].tolist() == [False, True]


def test_recipe_outside_the_model_corrupts_one_modality_and_drops_proper_subsets():
    torch.manual_seed(0)
    batch = batch_of(2000)
    out = RobustRecipe(corrupt=1.0, dropout=0.0).train()(batch)
    changed = torch.stack([(out[k] != batch[k]).any(1) for k in KEYS], 1)
    assert changed.sum(1).le(1).all()                                   # one modality per sample at most
    assert changed.sum(1).eq(1).float().mean() > 0.99                   # (dropdims may keep all 8 video dims)
    out = RobustRecipe(corrupt=0.0, dropout=1.0).train()(batch)
    kept = presence_mask(out)
    assert kept.any(1).all() and (kept.sum(1) < 3).all()                # dropped = zeros, never all
    assert all(torch.equal(out[k][kept[:, m]], batch[k][kept[:, m]]) for m, k in enumerate(KEYS))
    assert (kept.sum(1) == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)
    off = RobustRecipe(corrupt=1.0, dropout=1.0).eval()(batch)           # evaluation: nothing changes
    assert all(torch.equal(off[k], batch[k]) for k in KEYS)


def test_our_models_run_the_same_recipe_inside():
    v2 = create_model("attention_robust_v2", model_args())
    assert isinstance(v2.recipe, RobustRecipe) and v2.recipe.corrupt == v2.cfg.corrupt_aug
    opts = engine.TrainOptions(recipe=(0.3, 0.3, 4.0))
    assert engine.training_recipe(v2, opts) is None                     # never twice
    attention = create_model("attention", model_args())
    recipe = engine.training_recipe(attention, opts)
    assert isinstance(recipe, RobustRecipe) and recipe.training and recipe.modality_dropout.p == 0.3
    assert engine.training_recipe(attention, engine.TrainOptions()) is None


class Recorder(nn.Module):
    """A linear model that keeps every batch it sees."""

    def __init__(self):
        super().__init__()
        self.grad_clip = -1
        self.fc = nn.Linear(40, 6)
        self.fc_val = nn.Linear(40, 1)
        self.seen = []

    def forward(self, batch):
        x = torch.cat([batch[k] for k in KEYS], 1)
        if not torch._C._functorch.is_batchedtensor(x):
            self.seen.append((self.training, presence_mask(batch)))
        return x, self.fc(x), self.fc_val(x), torch.zeros(())


def loader(n=64, bs=16):
    batch = batch_of(n)
    emos, vals = torch.arange(n) % 6, torch.zeros(n)
    return [({k: v[i:i + bs] for k, v in batch.items()}, emos[i:i + bs], vals[i:i + bs],
             [f"s{j}" for j in range(i, i + bs)]) for i in range(0, n, bs)]


def test_sequential_loop_applies_the_recipe_to_training_batches_only():
    from merbench_plugins.evaluate.metrics import mer_results
    torch.manual_seed(0)
    model = Recorder()
    opts = engine.TrainOptions(epochs=1, recipe=(0.0, 1.0, 4.0), show_progress=False, early_stop=0)
    engine.train_fold(lambda: model, loader(), loader(), [loader()], opts, torch.device("cpu"), mer_results)
    train = torch.cat([p for t, p in model.seen if t])
    evaluated = torch.cat([p for t, p in model.seen if not t])
    assert (train.sum(1) < 3).all() and evaluated.all()


def test_fold_parallel_step_applies_the_recipe_per_fold():
    """Same folds, same weights: the stacked step's losses change with the recipe on, not with it idle."""
    batch = {k: v.unsqueeze(0).expand(2, *v.shape).contiguous() for k, v in batch_of(32).items()}
    emos, vals = torch.zeros(2, 32, dtype=torch.long), torch.zeros(2, 32)

    def losses(recipe):
        opts = engine.TrainOptions(epochs=1, recipe=recipe, show_progress=False)
        fp = parallel.FoldParallel(lambda: create_model("attention", model_args(hidden_dim=8, dropout=0.0)), [0, 1],
                                   opts, torch.device("cpu"))
        torch.manual_seed(0)
        return fp.train_step(batch, emos, vals, eager=True)[0], fp.recipe

    plain, none = losses(None)
    idle, _ = losses((0.0, 0.0, 4.0))
    dropped, recipe = losses((0.0, 1.0, 4.0))
    assert none is None and isinstance(recipe, RobustRecipe)
    assert torch.allclose(plain, idle) and not torch.allclose(plain, dropped)


def test_recipe_flags_are_checked_and_recorded(tiny_data, capsys):
    from merbench_plugins.train import runner
    flags = dict(robust_recipe=True, recipe_corrupt=0.3, recipe_dropout=1.5, recipe_strength=4.0)
    with pytest.raises(ValueError, match="recipe_dropout"):
        engine.TrainOptions(recipe=engine.recipe_of(flags))
    assert engine.recipe_of(dict(flags, recipe_dropout=0.5)) == (0.3, 0.5, 4.0)
    assert engine.recipe_of(dict(flags, robust_recipe=False)) is None
    argv = [str(tiny_data), "--model", "attention", "--robust_recipe", "--recipe_dropout", "0.5"]
    config = runner.resolve(runner.build_parser(), argv)[0]
    assert config.training.recipe == (0.3, 0.5, 4.0) and config.source["training.recipe"] == "flag"
    record = config.protocol_record()
    assert record["robust_recipe"] is True and record["recipe_dropout"] == 0.5
    assert runner.resolve(runner.build_parser(), argv[:3])[0].protocol_record()["robust_recipe"] is False
    # an impossible value is refused before any data is read, the flag named
    assert runner.main(argv[:3] + ["--robust_recipe", "--recipe_strength", "0.5", "--epochs", "1"]) == 2
    assert "--recipe_strength" in capsys.readouterr().err
