"""The robustness benchmark (issue 21): one family table split into three disjoint groups, presets that
only draw from their groups, corruptions applied to the signal before the feature extractor."""
import json

import numpy as np
import pytest

from merbench_plugins.data import benchmark
from merbench_plugins.modules import corruptions
from merbench_plugins.modules.masking import CORRUPTION_KINDS

SMALL = (12, 20, 8)


def test_groups_are_disjoint_and_cover_the_table():
    groups = [set(corruptions.families(g)) for g in corruptions.GROUPS]
    assert all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1:])
    assert set().union(*groups) == set(corruptions.FAMILIES)
    assert all(len(g) >= 4 for g in groups)
    # the held-out groups each have signal-level families (acting before the extractor)
    for g in ("validation-held-out", "test-held-out"):
        assert any(corruptions.FAMILIES[k].level == "signal" for k in corruptions.families(g))


def test_the_augmentation_draws_only_train_seen_families():
    assert tuple(CORRUPTION_KINDS) == corruptions.families("train-seen")


def test_every_family_has_variants_and_an_implementation():
    assert set(benchmark.VARIANTS) == set(corruptions.FAMILIES)
    rng = np.random.default_rng(0)
    s, x = rng.normal(size=(5, benchmark.SIGNAL_LEN)), rng.normal(size=(5, 30)) + 1.0
    ctx = dict(std=1.0, mean=np.full(30, 0.5), perm=rng.permutation(30), others=rng.normal(size=(5, 30)))
    for kind, family in corruptions.FAMILIES.items():
        for variant in benchmark.VARIANTS[kind]:
            out = (benchmark.corrupt_signal(rng, kind, s, variant, s[::-1]) if family.level == "signal"
                   else benchmark.corrupt_features(rng, kind, x, variant, ctx))
            assert out.shape == (s if family.level == "signal" else x).shape and np.isfinite(out).all()
            assert not np.allclose(out, s if family.level == "signal" else x), kind


@pytest.fixture(scope="module", params=list(benchmark.PRESETS))
def generated(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    info = benchmark.generate(str(out), request.param, n_train=80, n_test=20, n_test2=400, dims=SMALL)
    return request.param, out, info


def test_presets_draw_only_their_groups(generated):
    preset, out, info = generated
    allowed = set(corruptions.families("train-seen")) | set(corruptions.families(benchmark.PRESETS[preset]["held"])) \
        | {"missing", "clean"}
    conditions = json.load(open(out / "conditions.json"))
    assert set(conditions) == {"test1", "test2", "test3"}
    test2 = conditions["test2"]
    kinds = {part.split(":")[0] for c in test2.values() for part in c.split("/", 1)[1].split("+")}
    assert kinds <= allowed
    assert {c.split("/")[0] for c in test2.values()} == {"clean", "missing", "seen", "held-out"}
    # missing at realistic rates, the strongest modality (audio) included, alone and with another
    assert {"missing/missing:A", "missing/missing:AT", "missing/missing:AV"} <= set(test2.values())
    assert set(conditions["test1"].values()) == {"clean/clean"}
    assert info["dims"] == dict(zip(("audio", "text", "video"), SMALL)) and info["preset"] == preset


def test_recorded_conditions_match_the_features(generated):
    from merbench_plugins.data.merbench_layout import FeatureDataset
    _, out, _ = generated
    ds = FeatureDataset(str(out), *[benchmark.feature_name(m) for m in range(3)], feat_type="utt")
    test2 = ds.load("test2")
    conditions = json.load(open(out / "conditions.json"))["test2"]
    zero = np.stack([(test2.features[k] == 0).all(1).numpy() for k in ("audios", "texts", "videos")], 1)
    for i, name in enumerate(test2.names):
        missing = next((p.split(":")[1] for p in conditions[name].split("/", 1)[1].split("+")
                        if p.startswith("missing:")), "")
        for m, c in enumerate("ATV"):
            # at these tiny widths dropping 80% of the dims can zero a modality: that is recorded too
            assert zero[i, m] == (c in missing) or f"dropdims:{c}" in conditions[name], conditions[name]


def test_mean_fill_writes_the_training_mean_not_zeros(tmp_path):
    from merbench_plugins.data.merbench_layout import FeatureDataset
    benchmark.generate(str(tmp_path), "validation", n_train=80, n_test=10, n_test2=300, dims=SMALL)
    ds = FeatureDataset(str(tmp_path), *[benchmark.feature_name(m) for m in range(3)], feat_type="utt")
    train, test2 = ds.load("train"), ds.load("test2")
    conditions = json.load(open(tmp_path / "conditions.json"))["test2"]
    filled = [(i, c.split(":")[-1]) for i, c in enumerate(conditions[n] for n in test2.names) if "mean_fill" in c]
    assert filled
    for i, letter in filled:
        key = ("audios", "texts", "videos")["ATV".index(letter)]
        x, real = test2.features[key][i], train.features[key]
        mean = real[(real != 0).any(1)].mean(0)
        assert (x != 0).any() and np.allclose(x.numpy(), mean.numpy(), atol=1e-4)


def test_signal_corruption_acts_before_the_nonlinear_extractor():
    """Noise added to the signal is not additive noise on the features: doubling the signal noise does not
    double the feature change (the extractor is nonlinear), and the change depends on the sample."""
    world = benchmark.World(3, SMALL)
    rng = np.random.default_rng(0)
    s = world.signal(rng, 0, np.zeros(200, dtype=int), np.zeros(200), np.zeros(200, dtype=int))
    noise = benchmark.corrupt_signal(rng, "sig_noise", s, 2.0, None) - s
    w1, b1, w2, b2, _ = world.maps[0]
    features = lambda sig: benchmark._gelu(sig @ w1 + b1) @ w2 + b2  # noqa: E731
    delta, delta2 = features(s + noise) - features(s), features(s + 2 * noise) - features(s)
    assert not np.allclose(delta2, 2 * delta, rtol=0.05, atol=1e-3)
    # the same signal noise moves two different samples' features differently
    shifted = features(s[::-1] + noise) - features(s[::-1])
    assert not np.allclose(shifted, delta, rtol=0.05, atol=1e-3)


def test_presets_use_different_worlds():
    worlds = [benchmark.World(spec["world_seed"], SMALL, spec.get("amplitude", benchmark.CLASS_AMPLITUDE))
              for spec in benchmark.PRESETS.values()]
    for i, a in enumerate(worlds):
        for b in worlds[i + 1:]:
            assert not np.allclose(a.protos[0], b.protos[0]) and not np.allclose(a.maps[0][2], b.maps[0][2])


def test_weak_presets_pair_the_choosing_and_reporting_presets_with_weaker_single_modalities():
    p = benchmark.PRESETS
    for weak, strong in (("validation-weak", "validation"), ("test-weak", "test")):
        assert p[weak]["held"] == p[strong]["held"] and p[weak]["mix"] == p[strong]["mix"]
        assert all(w < s for w, s in zip(p[weak]["amplitude"], benchmark.CLASS_AMPLITUDE))
    # the class signal of a world scales with its amplitude: same seed, same prototypes' shape
    strong, weak = benchmark.World(7, SMALL), benchmark.World(7, SMALL, benchmark.WEAK_CLASS_AMPLITUDE)
    for m in range(3):
        ratio = benchmark.WEAK_CLASS_AMPLITUDE[m] / benchmark.CLASS_AMPLITUDE[m]
        assert np.allclose(weak.protos[m], ratio * strong.protos[m])


def test_condition_rows_split_seen_held_out_and_missing():
    from merbench_plugins.evaluate.bench_robust import condition_rows
    assert condition_rows("held-out/missing:A+cauchy:T") == ["part: held-out", "held-out: cauchy", "held-out: on T"]
    assert condition_rows("missing/missing:AT") == ["part: missing", "only V left"]
    assert condition_rows("missing/missing:V") == ["part: missing", "missing: V"]
    assert condition_rows("seen/gauss:ATV") == ["part: seen", "seen: gauss", "seen: on all"]
