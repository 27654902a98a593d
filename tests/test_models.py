"""Every registered feature model: forward + backward on utt and frames, every parameter gets a gradient."""
import pytest
import torch

from merbench_plugins import create_model, get_model_entry, list_models
from conftest import model_args, random_batch

FEATURE_MODELS = [n for n in list_models() if get_model_entry(n).dataset == "feat"]


@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_forward_backward_every_parameter_gets_gradient(name, feat_type):
    torch.manual_seed(0)
    model = create_model(name, model_args(feat_type))
    model.train()
    if hasattr(model, "set_epoch"):
        model.set_epoch(5)
    batch = random_batch(feat_type=feat_type)
    features, emos, vals, interloss = model(batch)
    assert emos.shape == (6, 6) and vals.shape == (6, 1) and features.shape[0] == 6
    assert interloss.dim() == 0 and torch.isfinite(interloss)
    (emos.sum() + vals.sum() + interloss).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"no (finite) gradient for {missing}"
    assert hasattr(model, "grad_clip")


@pytest.mark.parametrize("feat_type", ["utt", "frm_align"])
@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_eval_deterministic_and_finite_with_missing_modalities(name, feat_type):
    torch.manual_seed(0)
    model = create_model(name, model_args(feat_type)).eval()
    batch = random_batch(feat_type=feat_type)
    batch["texts"][0] = 0                       # sample 0: text missing
    batch["audios"][1] = 0
    batch["videos"][1] = 0                      # sample 1: only text
    for k in batch:
        batch[k][2] = 0                         # sample 2: nothing at all
    with torch.no_grad():
        out1, out2 = model(batch), model(batch)
    for a, b in zip(out1, out2):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_no_output_heads(name):
    """output_dim1=0 / output_dim2=0 (datasets without classes or valence) still work."""
    model = create_model(name, model_args("utt", output_dim1=0, output_dim2=1))
    _, emos, vals, _ = model(random_batch())
    assert emos.shape == (6, 0) and vals.shape == (6, 1)


def test_unknown_model_lists_known_ones():
    with pytest.raises(KeyError, match="attention_robust_v2"):
        get_model_entry("no_such_model")
