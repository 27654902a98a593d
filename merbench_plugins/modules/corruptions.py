"""The corruption families and which of three disjoint groups each belongs to: THE table.

* ``train-seen``: the only families any training augmentation may draw (the recipe, our models'
  internal augmentation); the benchmarks also test them, reported as "seen".
* ``validation-held-out``: used by the validation preset (``synth --preset validation``), where
  defaults and designs are chosen; never drawn by any augmentation.
* ``test-held-out``: used only by the test preset (``synth --preset test``), whose tables the README
  reports; never seen by augmentation, defaults or any design decision.

``level``: ``signal`` families act on the generator's underlying per-modality signal before the
fixed nonlinear feature map (as noise is added to audio before a speech model extracts features), so
in feature space they are not additive noise; ``feature`` families act on the finished features.
Missing modalities as zero vectors are not a family: every preset has them, and modality dropout
trains for them.
"""
from collections import OrderedDict, namedtuple

GROUPS = ("train-seen", "validation-held-out", "test-held-out")

Family = namedtuple("Family", "group level description")

FAMILIES = OrderedDict([
    # train-seen: what the augmentation draws (masking.corrupt_one implements exactly these)
    ("gauss", Family("train-seen", "feature", "additive Gaussian noise, a multiple of the feature std")),
    ("dropdims", Family("train-seen", "feature", "a random fraction of the feature dimensions zeroed")),
    ("gain", Family("train-seen", "feature", "the features multiplied by a gain (x1/4 .. x4)")),
    ("swap", Family("train-seen", "feature", "another sample's features of that modality")),
    # validation-held-out: for choosing defaults and designs
    ("sig_noise", Family("validation-held-out", "signal", "Gaussian noise on the signal, before the extractor")),
    ("sig_clip", Family("validation-held-out", "signal", "the signal clipped at a fraction of its std")),
    ("laplace", Family("validation-held-out", "feature", "Laplace noise of 3x the feature std (one or all modalities)")),
    ("quant", Family("validation-held-out", "feature", "the features quantised to 2 or 3 bits (per-sample range)")),
    ("scale", Family("validation-held-out", "feature", "the features scaled by 0.2")),
    ("mean_fill", Family("validation-held-out", "feature", "missing modality written as the training mean, not zeros")),
    # test-held-out: only the test preset, never looked at while choosing anything
    ("sig_blur", Family("test-held-out", "signal", "the signal low-passed (moving average)")),
    ("sig_dropout", Family("test-held-out", "signal", "a contiguous half of the signal zeroed (time mask)")),
    ("sig_interfere", Family("test-held-out", "signal", "another sample's signal mixed in (cross-talk)")),
    ("block", Family("test-held-out", "feature", "a contiguous block of 40% of the feature dimensions zeroed")),
    ("cauchy", Family("test-held-out", "feature", "Cauchy noise (scale 1x the feature std)")),
    ("signflip", Family("test-held-out", "feature", "the signs of 10% or 30% of the features flipped")),
    ("noise_replace", Family("test-held-out", "feature", "the modality replaced by pure Gaussian noise")),
    ("permute", Family("test-held-out", "feature", "the feature dimensions permuted (a fixed permutation)")),
])


def families(group: str):
    """Names of the families in ``group`` (one of GROUPS), in table order."""
    if group not in GROUPS:
        raise ValueError(f"unknown corruption group {group!r}: use one of {', '.join(GROUPS)}")
    return tuple(name for name, f in FAMILIES.items() if f.group == group)


def group_of(name: str) -> str:
    try:
        return FAMILIES[name].group
    except KeyError:
        raise KeyError(f"unknown corruption family {name!r}: known {', '.join(FAMILIES)}") from None


# the augmentation's kinds, in the index order masking.corrupt_one uses
TRAIN_SEEN = families("train-seen")
