"""Robustness levers (issue 12): modality dropout subsets, corruption augmentation, the reliability
head's fusion weights, MRG-Net's count-independent fusion, per-condition reporting."""
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
    """The first formulation of corrupt_one (four corrupted copies, stacked, gathered): the reference."""
    import math
    from merbench_plugins.modules.masking import _per_sample, frame_mask
    b = x.shape[0]
    valid = frame_mask(x).unsqueeze(-1).to(x.dtype) if x.dim() == 3 else 1.0
    u = lambda: _per_sample(torch.rand(b, dtype=x.dtype), x)  # noqa: E731
    std = _per_sample(x.flatten(1).std(dim=1), x)
    noise = x + (0.5 + (strength - 0.5) * u()) * std * torch.randn_like(x) * valid
    drop_dims = x.shape[-1:] if x.dim() == 2 else (1, x.shape[-1])
    dropped = x * (torch.rand((b,) + tuple(drop_dims)) >= 0.3 + 0.6 * u()).to(x.dtype)
    gain = x * torch.exp((2 * u() - 1) * math.log(max(strength, 1.0)))
    out = torch.stack([noise, dropped, gain, x.roll(1, dims=0)])
    return out.gather(0, _per_sample(kind, x).expand_as(x).unsqueeze(0)).squeeze(0)


@pytest.mark.parametrize("shape", [(64, 12), (64, 5, 12)])
def test_fused_corruption_equals_the_four_copy_formulation(shape):
    """One pass (x * scale + coef * noise) gives the same values from the same draws as four copies, so
    runs (and the published corruption-benchmark numbers) are unchanged; inactive samples come back as is."""
    from merbench_plugins.modules.masking import corrupt_one
    x = torch.randn(*shape)
    if len(shape) == 3:
        x[:, :2] = 0                                                                    # front padding
    kind = torch.arange(shape[0]) % 4
    torch.manual_seed(3)
    ref = _corrupt_one_by_copies(x, kind, 4.0)
    torch.manual_seed(3)
    got = corrupt_one(x, kind, 4.0)
    assert torch.equal(got, ref)
    active = torch.rand(shape[0]) < 0.5
    torch.manual_seed(3)
    part = corrupt_one(x, kind, 4.0, active=active)
    assert torch.equal(part[active], ref[active]) and torch.equal(part[~active], x[~active])
    assert torch.equal(got[kind == 3], x.roll(1, 0)[kind == 3])                         # swap
    dropped = got[kind == 1]
    assert ((dropped == 0) | (dropped == x[kind == 1])).all()                           # dropdims: zeros only


def test_augmentation_acts_only_in_training():
    torch.manual_seed(0)
    model = create_model("attention_robust_v2", model_args(corrupt_aug=1.0, use_modality_dropout=False))
    batch = {k: torch.randn(8, d) for k, d in (("audios", 12), ("texts", 20), ("videos", 8))}
    model.eval()
    assert torch.equal(model(batch)[1], model(batch)[1]) and not model.last_corrupted.any()
    model.train()
    model(batch)
    assert model.last_corrupted.sum(1).eq(1).all()


def _trained_v2(steps=300, seed=0):
    """A tiny V2 trained on 3 informative modalities with corruption augmentation."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dims, protos = (12, 20, 8), [torch.randn(6, d, generator=g) * 2 for d in (12, 20, 8)]
    model = create_model("attention_robust_v2", model_args(corrupt_aug=0.5, hidden_dim=32, reliability_weight=0.5))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch(n, gen):
        y = torch.randint(0, 6, (n,), generator=gen)
        x = {k: protos[m][y] + torch.randn(n, dims[m], generator=gen)
             for m, k in enumerate(("audios", "texts", "videos"))}
        return x, y

    model.train()
    for _ in range(steps):
        x, y = batch(64, g)
        _, logits, _, inter = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + inter
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), batch


def test_fusion_weight_of_a_corrupted_modality_drops():
    """A noisy modality's fusion weight falls to a fraction of its clean weight. (Over training seeds 0-4 the
    per-modality fraction ranged 0.06-0.67: one 300-step run is noisy, so the bar is on their mean.)"""
    model, batch = _trained_v2()
    x, _ = batch(256, torch.Generator().manual_seed(99))
    ratios = []
    with torch.no_grad():
        model(x)
        clean = model.last_fusion_weights.mean(0)
        for m, key in enumerate(("audios", "texts", "videos")):
            noisy = dict(x)
            noisy[key] = x[key] + 4 * x[key].std() * torch.randn_like(x[key])
            model(noisy)
            ratios.append(float(model.last_fusion_weights.mean(0)[m] / clean[m]))
    assert max(ratios) < 0.8 and sum(ratios) / 3 < 0.6, ratios


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
    assert bench_robust.main(["--out", str(tmp_path / "b"), "--seeds", "0,1", "--settings", "mild", "--train", "60",
                              "--epochs", "1", "--jobs", "2", "--only", "V2", "--readme", str(readme),
                              "--hidden_dim", "16", "--folds", "2"]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("rest\n")
    assert "| V2 " in text and "±" in text and "noise_all" in text and "test2 F1 vs attention" in text


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
    argv = ["--out", str(tmp_path / "b"), "--seeds", "0", "--settings", "mild", "--train", "40", "--epochs", "1",
            "--only", "attention", "--jobs", "1", "--no_such_flag"]
    assert bench_robust.main(argv) == 1
    run = tmp_path / "b" / "mild" / "attention" / "seed0"
    assert "--no_such_flag" in (run / "run.log").read_text() and (run / "job.json").exists()
    assert "runs failed" in capsys.readouterr().err
    assert bench_robust.main(argv) == 1 and (run / "run.log.1").exists()
    with pytest.raises(SystemExit):
        bench_robust.main(argv[:-1] + ["--gpus", "zero"])
