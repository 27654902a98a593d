"""Robustness levers (issues 12 and 21): modality dropout subsets, corruption augmentation, fusion weights that
fall for a corrupted modality at default settings, MRG-Net's count-independent fusion, per-condition reporting."""
import numpy as np
import pytest
import torch

from conftest import model_args
from merbench_plugins.modules.masking import corrupt_inputs, random_subset, ModalityDropout
from merbench_plugins.registry import create_model
from merbench_plugins.evaluate import conditions
from merbench_plugins.evaluate.metrics import mer_results


def test_random_subset_is_a_non_empty_proper_subset_and_often_single():
    torch.manual_seed(0)
    present = torch.rand(6000, 3) > 0.2
    kept = random_subset(present)
    assert not (kept & ~present).any() and kept[present.any(1)].any(1).all()
    full = present.all(1)
    assert (kept[full].sum(1) < 3).all()
    single = (kept[full].sum(1) == 1).float().mean().item()
    assert 0.45 < single < 0.55                           # uniform over the 6 proper subsets: 3 are singles
    two = present.sum(1) == 2
    assert (kept[two].sum(1) == 1).all()
    one = present.sum(1) <= 1
    assert torch.equal(kept[one], present[one])


def test_modality_dropout_acts_from_the_first_step_without_set_epoch():
    torch.manual_seed(0)
    drop = ModalityDropout(p=0.5).train()                 # nobody calls set_epoch (main-release.py)
    present = torch.ones(4000, 3, dtype=torch.bool)
    changed = (drop(present) != present).any(1).float().mean().item()
    assert 0.45 < changed < 0.55
    assert torch.equal(drop.eval()(present), present)


@pytest.mark.parametrize("shape", [(3000, 12), (3000, 5, 12)])
def test_corruption_never_hits_every_modality_and_only_present_ones(shape):
    torch.manual_seed(0)
    present = torch.rand(shape[0], 3) > 0.3
    inputs = [torch.randn(*shape) * present[:, m].view(-1, *[1] * (len(shape) - 1)) for m in range(3)]
    if len(shape) == 3:
        inputs = [x * (torch.arange(shape[1]) >= 2).view(1, -1, 1) for x in inputs]   # front padding
    out, which = corrupt_inputs(inputs, present, p=1.0, strength=4.0)
    assert not (which & ~present).any()                                              # only present ones
    assert not (which.sum(1) >= present.sum(1)).logical_and(present.sum(1) > 0).logical_and(which.any(1)).any()
    assert (which.sum(1) == (present.sum(1) >= 2).long()).all()                      # one per eligible sample
    changed = torch.stack([(o != x).flatten(1).any(1) for o, x in zip(out, inputs)], 1)
    assert not (changed & ~which).any()                                              # others untouched
    if len(shape) == 3:                                                               # padding stays zero
        assert all((o[:, :2] == 0).all() for o in out)


def _corrupt_one_by_copies(x, kind, strength):
    """The kinds' definitions, one corrupted copy of x per kind, gathered by kind: the reference, drawing what
    corrupt_one draws in its order (uniforms [3, B], then the normal values shaped like x)."""
    import math
    from merbench_plugins.modules.masking import _per_sample, frame_mask
    b = x.shape[0]
    u = [_per_sample(v, x) for v in torch.rand(3, b, dtype=x.dtype)]
    g = torch.randn_like(x)
    valid = frame_mask(x).unsqueeze(-1).to(x.dtype) if x.dim() == 3 else 1.0
    std = _per_sample(x.flatten(1).std(dim=1), x)
    noise = x + (0.5 + (strength - 0.5) * u[0]) * std * g * valid
    fraction = 0.3 + 0.6 * u[1]
    decide = g if x.dim() == 2 else g[:, :1]
    normal_cdf = 0.5 * (1 + torch.erf(decide / math.sqrt(2)))
    dropped = x * (normal_cdf >= fraction).to(x.dtype)           # kept with probability 1 - fraction
    gain = x * torch.exp((2 * u[2] - 1) * math.log(max(strength, 1.0)))
    out = torch.stack([noise, dropped, gain, x.roll(1, dims=0)])
    return out.gather(0, _per_sample(kind, x).expand_as(x).unsqueeze(0)).squeeze(0)


@pytest.mark.parametrize("dense", [False, True], ids=["cpu-eager", "fixed-shape"])
@pytest.mark.parametrize("shape", [(64, 12), (64, 5, 12)])
def test_corruption_equals_the_four_copy_formulation(shape, dense, monkeypatch):
    """Both paths (only the corrupted samples on CPU; every sample in one fixed-shape expression under vmap
    and on accelerators) give each kind's definition from the same draws; inactive samples come back as is."""
    from merbench_plugins.modules import masking
    if dense:
        monkeypatch.setattr(masking, "eager_on_cpu", lambda t: False)
    x = torch.randn(*shape)
    if len(shape) == 3:
        x[:, :2] = 0                                                                    # front padding
    kind = torch.arange(shape[0]) % 4
    torch.manual_seed(3)
    ref = _corrupt_one_by_copies(x, kind, 4.0)
    torch.manual_seed(3)
    got = masking.corrupt_one(x, kind, 4.0)
    # the dropdims threshold goes through erfinv, the reference through erf: a draw within rounding of the
    # threshold may fall either side
    torch.testing.assert_close(got[kind != 1], ref[kind != 1], rtol=1e-5, atol=1e-5)
    assert (got[kind == 1] != ref[kind == 1]).float().mean() < 0.01
    active = torch.rand(shape[0]) < 0.5
    torch.manual_seed(3)
    part = masking.corrupt_one(x, kind, 4.0, active=active)
    torch.manual_seed(3)
    assert torch.equal(part[active], masking.corrupt_one(x, kind, 4.0)[active]) and torch.equal(part[~active], x[~active])
    assert torch.equal(got[kind == 3], x.roll(1, 0)[kind == 3])                         # swap
    dropped = got[kind == 1]
    assert ((dropped == 0) | (dropped == x[kind == 1])).all()                           # dropdims: zeros only


def test_corruption_kinds_have_their_declared_distributions():
    """One shared normal draw serves gauss (noise) and dropdims (mask): the noise's scale is U(0.5, 4) x the
    sample's std, dropdims zeroes a U(0.3, 0.9) fraction (mean 0.6), gain stays within x1/4 .. x4."""
    from merbench_plugins.modules.masking import corrupt_one
    torch.manual_seed(0)
    x = torch.randn(4000, 400) * torch.rand(4000, 1).add(0.5)
    kind = torch.arange(4000) % 4
    out = corrupt_one(x, kind, 4.0)
    scale = ((out - x)[kind == 0].std(dim=1) / x[kind == 0].std(dim=1))
    assert 0.42 < scale.min() and scale.max() < 4.4 and abs(scale.mean() - 2.25) < 0.05    # sample std of 400 draws: +-4 %
    zeroed = (out[kind == 1] == 0).float().mean(dim=1)
    assert 0.25 < zeroed.min() and zeroed.max() < 0.95 and abs(zeroed.mean() - 0.6) < 0.01
    ratio = (out[kind == 2] / x[kind == 2])
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)            # one gain per sample
    assert 0.249 < ratio[:, 0].min() and ratio[:, 0].max() < 4.01


def test_shared_draw_on_cpu_fills_only_the_rows_that_use_it():
    from merbench_plugins.modules.masking import _shared_draw
    torch.manual_seed(0)
    needed = torch.arange(10) % 3 == 0
    draw = _shared_draw([torch.zeros(10, 7), torch.zeros(10, 20), torch.zeros(10, 5)], needed)
    assert draw.shape == (10, 20)
    assert (draw[~needed] == 0).all() and (draw[needed] != 0).all()
    assert _shared_draw([torch.zeros(10, 7), torch.zeros(10, 3, 7)], needed) is None       # ranks differ


def test_augmentation_acts_only_in_training():
    torch.manual_seed(0)
    model = create_model("attention_robust_v2", model_args(corrupt_aug=1.0, use_modality_dropout=False))
    batch = {k: torch.randn(8, d) for k, d in (("audios", 12), ("texts", 20), ("videos", 8))}
    model.eval()
    assert torch.equal(model(batch)[1], model(batch)[1]) and not model.last_corrupted.any()
    model.train()
    model(batch)
    assert model.last_corrupted.sum(1).eq(1).all()


def _trained_default(name, steps=150, seed=0):
    """A model with its DECLARED defaults (only the data sizes given), trained on the benchmark's generator at
    small widths; returns the model, clean held-out data and the training feature std per modality."""
    import argparse
    from merbench_plugins.data import benchmark
    torch.manual_seed(seed)
    world = benchmark.World(7, (24, 40, 16))
    rng = np.random.default_rng(seed)
    emos, _, feats, present, _ = benchmark._generate_split(rng, world, 1200)
    emos_t, x = torch.as_tensor(emos), [torch.as_tensor(f) for f in feats]
    train, test = torch.arange(1000), torch.arange(1000, 1200)
    args = argparse.Namespace(audio_dim=24, text_dim=40, video_dim=16, output_dim1=6, output_dim2=1, feat_type="utt")
    model = create_model(name, args)
    opt = torch.optim.AdamW(model.parameters(), lr=model.cfg.lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = train[torch.randint(0, len(train), (32,), generator=g)]
        _, logits, _, inter = model({k: v[idx] for k, v in zip(("audios", "texts", "videos"), x)})
        loss = torch.nn.functional.cross_entropy(logits, emos_t[idx]) + inter
        opt.zero_grad()
        loss.backward()
        opt.step()
    stds = [float(v[train][present[:1000, m]].std(0).mean()) for m, v in enumerate(x)]
    return model.eval(), {k: v[test] for k, v in zip(("audios", "texts", "videos"), x)}, stds


@pytest.mark.parametrize("name", ["attention_robust_v2", "attention_robust_v4"])
def test_fusion_weight_of_a_corrupted_modality_falls_at_default_settings(name):
    """Issue 21: trained at its defaults, under 4x std noise of a family no augmentation draws (Laplace:
    validation-held-out; Cauchy: test-held-out), on each modality in turn, that modality's mean fusion weight
    falls to at most 0.7x its clean weight."""
    model, x, stds = _trained_default(name)
    g = torch.Generator().manual_seed(1)
    laplace = torch.distributions.Laplace(0.0, 4.0 / 2 ** 0.5)
    with torch.no_grad():
        model(x)
        clean = model.last_fusion_weights.mean(0)
        for m, key in enumerate(("audios", "texts", "videos")):
            for kind in ("laplace", "cauchy"):
                noisy = dict(x)
                if kind == "laplace":
                    noise = laplace.sample(x[key].shape) * stds[m]
                else:
                    noise = 4.0 * stds[m] * torch.tan(3.14159 * (torch.rand(x[key].shape, generator=g) - 0.5))
                noisy[key] = x[key] + noise
                model(noisy)
                ratio = (model.last_fusion_weights.mean(0)[m] / clean[m]).item()
                assert ratio <= 0.7, (key, kind, ratio)


def test_mrg_fusion_scale_does_not_depend_on_the_number_of_present_modalities():
    from merbench_plugins.modules.mrg import MemoryGuidedFusion
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 16)
    present = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    mean_fusion, sum_fusion = MemoryGuidedFusion(16, 4, 4, mean=True), MemoryGuidedFusion(16, 4, 4, mean=False)
    sum_fusion.load_state_dict(mean_fusion.state_dict())
    fused_mean, _ = mean_fusion(x, present)
    fused_sum, _ = sum_fusion(x, present)
    assert torch.allclose(fused_mean * present.sum(1, keepdim=True), fused_sum, atol=1e-6)


def test_per_condition_scores_on_a_tiny_set():
    names = ["a", "b", "c", "d"]
    probs = np.eye(6)[[0, 1, 2, 2]]
    groups = {"a": "clean", "b": "clean", "c": "noise1", "d": "noise1"}
    out = conditions.per_condition(names, probs, [0, 1, 2, 3], [0.0, 0.0, 1.0, -10], [0.0, 1.0, 1.0, -10],
                                   groups, mer_results)
    assert list(out) == ["all", "clean", "noise1"]
    assert out["clean"]["f1"] == 1.0 and out["clean"]["n"] == 2 and out["clean"]["val_mse"] == 0.5
    assert out["noise1"]["f1"] == pytest.approx(1 / 3) and out["noise1"]["val_mse"] == 0.0
    assert conditions.pattern_names(np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]])) == \
        ["A+T+V", "T+V", "V", "none"]


def test_bench_robust_writes_mean_std_tables_into_the_readme(tmp_path):
    from merbench_plugins.evaluate import bench_robust
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench_robust.MARKERS[0]}\nold\n{bench_robust.MARKERS[1]}\nrest\n")
    assert bench_robust.main(["--out", str(tmp_path / "b"), "--preset", "validation", "--seeds", "0,1", "--train", "60",
                              "--test", "20", "--test2", "80", "--dims", "12,20,8", "--epochs", "1", "--jobs", "2",
                              "--only", "attention,attention + recipe", "--readme", str(readme),
                              "--hidden_dim", "16", "--folds", "2"]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("rest\n")
    assert "| attention + recipe " in text and "±" in text and "held-out vs attention" in text
    assert "validation-held-out" in text
    assert "part: held-out" not in text          # the per-condition table goes to --md only
    md = (tmp_path / "b" / "bench_robust_validation.md").read_text()
    assert "| attention + recipe " in md and "part: held-out" in md


def test_robust_eval_noise1_corrupts_one_modality_only():
    from merbench_plugins.evaluate import robust_eval
    conds = robust_eval.all_conditions(["noise1"])
    assert [c.value for c in conds][:3] == ["Ax2", "Tx2", "Vx2"] and len(conds) == 6
    batch = {k: torch.randn(5, d) for k, d in (("audios", 4), ("texts", 6), ("videos", 3))}
    out = robust_eval.apply_condition(batch, robust_eval.Condition("noise1", "Tx4"), [f"s{i}" for i in range(5)], 0,
                                      {k: 1.0 for k in batch})
    assert torch.equal(out["audios"], batch["audios"]) and torch.equal(out["videos"], batch["videos"])
    assert not torch.equal(out["texts"], batch["texts"]) and out["masks"].all()


def test_corrupted_validation_is_deterministic_per_seed_and_keeps_the_clean_fold():
    from merbench_plugins.train import selection
    g = torch.Generator().manual_seed(0)
    loader = [({k: torch.randn(8, d, generator=g) for k, d in (("audios", 4), ("texts", 6), ("videos", 3))},
               torch.zeros(8), torch.zeros(8), [f"s{i}_{j}" for j in range(8)]) for i in range(3)]
    a, b, c = (selection.corrupted_validation(loader, s) for s in (1, 1, 2))
    assert len(a) == 6 and all(x[0] is y[0] for x, y in zip(a[:3], loader))       # clean half untouched
    same = all(torch.equal(x[0][k], y[0][k]) for x, y in zip(a, b) for k in ("audios", "texts", "videos"))
    differ = any(not torch.equal(x[0][k], y[0][k]) for x, y in zip(a[3:], c[3:]) for k in ("audios", "texts", "videos"))
    assert same and differ
    from merbench_plugins.modules.masking import presence_mask
    present = torch.cat([presence_mask(x[0]) for x in a[3:]])
    assert present.any(1).all() and (~present).any()                                # some lost, none lost all
    assert selection.eval_loader(loader, "clean", 0) is loader
    with pytest.raises(ValueError, match="select_on"):
        selection.eval_loader(loader, "noisy", 0)


def test_bench_robust_runs_on_the_launcher_queue_and_fails_loudly(tmp_path, capsys):
    # a run that fails (here: a flag the runner refuses) makes the command exit 1, keeps its log, and
    # a rerun retries it (the old log is kept as run.log.1) instead of skipping it as finished
    from merbench_plugins.evaluate import bench_robust
    argv = ["--out", str(tmp_path / "b"), "--seeds", "0", "--train", "40", "--test", "10", "--test2", "20",
            "--dims", "6,8,4", "--epochs", "1", "--only", "attention", "--jobs", "1", "--no_such_flag"]
    assert bench_robust.main(argv) == 1
    run = tmp_path / "b" / "validation" / "attention" / "seed0"
    assert "--no_such_flag" in (run / "run.log").read_text() and (run / "job.json").exists()
    assert "runs failed" in capsys.readouterr().err
    assert bench_robust.main(argv) == 1 and (run / "run.log.1").exists()
    with pytest.raises(SystemExit):
        bench_robust.main(argv[:-1] + ["--gpus", "zero"])
