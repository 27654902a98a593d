"""Properties of the building blocks and of the V2/V4 switches."""

import pytest
import torch
import torch.nn.functional as F

from merbench_plugins import create_model
from merbench_plugins.modules.fusion import GatedUncertaintyFusion, UncertaintyWeightedFusion
from merbench_plugins.modules.losses import (FocalLabelSmoothingLoss, FocalLoss, LabelSmoothingCrossEntropy,
                                             ModalityContrastiveLoss, kl_to_prior, masked_mse, pairwise_kl)
from merbench_plugins.modules.encoders import InputProjection
from merbench_plugins.modules.masking import ModalityDropout, frame_mask, masked_softmax, presence_mask, valid_first
from conftest import model_args, random_batch


def test_presence_mask_zero_inputs_and_explicit_masks():
    batch = random_batch(batch=4)
    batch["texts"][1] = 0
    assert presence_mask(batch).tolist()[1] == [True, False, True]
    batch["masks"] = torch.tensor([[1, 1, 0]] * 4)
    assert presence_mask(batch)[:, 2].sum() == 0


def test_frame_mask_marks_front_padding():
    x = torch.randn(2, 5, 3)
    x[0, :2] = 0
    assert frame_mask(x).tolist() == [[False, False, True, True, True], [True] * 5]


def test_masked_softmax_exact_zero_and_nan_free_gradient():
    logits = torch.randn(3, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    w = masked_softmax(logits, mask)
    assert w[0, 1] == 0 and torch.equal(w[1], torch.zeros(3))
    assert torch.allclose(w[[0, 2]].sum(1), torch.ones(2))
    w.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_modality_dropout_never_removes_all_and_follows_warmup():
    torch.manual_seed(0)
    drop = ModalityDropout(p=0.9, warmup=10, mode="independent").train()
    present = torch.rand(4000, 3) > 0.3
    present[0] = False
    for epoch, expected in [(0, 0.0), (5, 0.45), (10, 0.9), (30, 0.9)]:
        drop.set_epoch(epoch)
        assert drop.rate == pytest.approx(expected)
        keep = drop(present)
        assert not (keep & ~present).any()                          # never adds a modality
        assert keep[present.any(1)].any(1).all()                    # never removes every one
    drop.set_epoch(10)
    keep = drop(present)
    full = present.all(1)
    # with 3 present and p=0.9, a modality survives w.p. ~0.1 (plus rescues): far below 1
    assert keep[full].float().mean() < 0.5
    assert torch.equal(drop.eval()(present), present)              # identity in eval


def test_kl_zero_when_posterior_is_prior():
    mu, logvar = torch.zeros(4, 3, 8), torch.zeros(4, 3, 8)
    assert torch.allclose(kl_to_prior(mu, logvar), torch.zeros(4, 3))
    assert kl_to_prior(torch.ones(1, 8), torch.zeros(1, 8)).item() == pytest.approx(0.5)
    assert pairwise_kl(mu, logvar, torch.ones(4, 3, dtype=torch.bool)).item() == 0
    mu2 = torch.randn(4, 3, 8)
    only_one = torch.tensor([[1, 0, 0]] * 4, dtype=torch.bool)      # no present pair -> no cross-KL
    assert pairwise_kl(mu2, logvar, only_one).item() == 0
    assert pairwise_kl(mu2, logvar, torch.ones(4, 3, dtype=torch.bool)).item() > 0


def test_masked_mse_skips_unknown_valence():
    pred, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, -10.0, 1.0])
    assert masked_mse(pred, target).item() == pytest.approx(2.0)
    assert masked_mse(pred, torch.full((3,), -10.0)).item() == 0


@pytest.mark.parametrize("fusion", [UncertaintyWeightedFusion(), GatedUncertaintyFusion(8)])
def test_fusion_missing_modality_gets_zero_weight_and_no_influence(fusion):
    torch.manual_seed(0)
    fusion.eval()
    tokens, logvar = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    mask = torch.tensor([[1, 0, 1]] * 5, dtype=torch.bool)
    fused, w = fusion(tokens, logvar, mask)
    assert torch.all(w[:, 1] == 0)
    assert torch.allclose(w.sum(1), torch.ones(5))
    garbage = tokens.clone()
    garbage[:, 1] = float("nan")
    logvar2 = logvar.clone()
    logvar2[:, 1] = 1e3
    fused2, w2 = fusion(garbage, logvar2, mask)
    assert torch.allclose(fused, fused2) and torch.allclose(w, w2)


def test_uncertainty_fusion_prefers_confident_modality():
    tokens = torch.randn(2, 3, 4)
    logvar = torch.stack([torch.full((2, 4), -2.0), torch.full((2, 4), 2.0), torch.zeros(2, 4)], dim=1)
    _, w = UncertaintyWeightedFusion()(tokens, logvar, torch.ones(2, 3, dtype=torch.bool))
    assert (w[:, 0] > w[:, 2]).all() and (w[:, 2] > w[:, 1]).all()


@pytest.mark.parametrize("name", ["attention_robust_v2", "attention_robust_v4"])
@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
def test_model_output_ignores_missing_modality_input(name, feat_type):
    torch.manual_seed(0)
    model = create_model(name, model_args(feat_type)).eval()
    batch = random_batch(feat_type=feat_type)
    batch["masks"] = torch.tensor([[1, 0, 1]] * 6)
    other = dict(batch, texts=torch.randn_like(batch["texts"]) * 100)
    with torch.no_grad():
        out, out_other = model(batch), model(other)
    assert not model.last_kept[:, 1].any()          # text is not fused; by default its latent is imagined instead
    for a, b in zip(out, out_other):
        assert torch.allclose(a, b, atol=1e-6)
    no_imagination = create_model(name, model_args(feat_type, imagine=False)).eval()
    with torch.no_grad():
        no_imagination(batch)
    assert torch.all(no_imagination.last_fusion_weights[:, 1] == 0)


def test_v2_dropout_reaches_the_fusion():
    """The seed dropped z but fused mu; here a dropped modality must get zero fusion weight."""
    torch.manual_seed(0)
    model = create_model("attention_robust_v2", model_args(use_modality_dropout=True, modality_dropout=0.9,
                                                           modality_dropout_warmup=0, imagine=False)).train()
    model(random_batch(batch=64))
    w = model.last_fusion_weights
    assert (w == 0).any(1).float().mean() > 0.5          # most samples had a modality dropped from the fusion
    assert ((w > 0).sum(1) >= 1).all()
    assert torch.equal(w > 0, model.last_kept)


def components(model):
    return {n.split(".")[0] for n, _ in list(model.named_parameters()) + list(model.named_buffers())}


@pytest.mark.parametrize("flag,module", [
    ({"use_proxy_attention": False}, "proxy_attention"),
    ({"recon_weight": 0.0}, "decoders"),
    ({"use_contrastive": False}, "contrastive"),
    ({"typicality_weight": 0.0}, "typicality"),
    ({"imagine": False}, "imagination"),
    ({"unimodal_weight": 0.0, "agreement_weight": 0.0}, "experts"),
])
def test_flags_remove_their_component(flag, module):
    full = create_model("attention_robust_v4", model_args())
    ablated = create_model("attention_robust_v4", model_args(**flag))
    assert module in components(full) and module not in components(ablated)


def test_no_vae_is_deterministic_and_has_no_kl():
    model = create_model("attention_robust_v2", model_args(use_vae=False, recon_weight=0.0, typicality_weight=0.0,
                                                           unimodal_weight=0.0, agreement_weight=0.0,
                                                           use_modality_dropout=False, imagine=False)).train()
    assert model.encoder.to_stats.out_features == 16                     # mu only, no log-variance head
    torch.manual_seed(1)
    batch = random_batch()
    a = model(batch)
    assert a[3].item() == 0.0                                # no KL, no cross-KL, no reconstruction
    model.eval()
    assert torch.allclose(model(batch)[0], model(batch)[0])


def test_no_modality_dropout_keeps_everything():
    model = create_model("attention_robust_v2", model_args(use_modality_dropout=False)).train()
    model.set_epoch(100)
    model(random_batch(batch=32))
    assert (model.last_fusion_weights > 0).all()


def test_v4_with_new_flags_off_is_v2():
    # recon_mode: V4 keeps full reconstruction where V2 now reconstructs a subset (each chosen on validation)
    off = dict(use_contrastive=False, use_gated_fusion=False, focal_gamma=0.0, label_smoothing=0.0,
               improved_encoder=False, recon_mode="subset")
    torch.manual_seed(0)
    v2 = create_model("attention_robust_v2", model_args())
    torch.manual_seed(0)
    v4 = create_model("attention_robust_v4", model_args(**off))
    assert v2.state_dict().keys() == v4.state_dict().keys()
    assert all(torch.equal(v2.state_dict()[k], v4.state_dict()[k]) for k in v2.state_dict())
    batch = random_batch()
    v2.train(), v4.train()
    torch.manual_seed(3)
    out2 = v2(batch)
    torch.manual_seed(3)
    out4 = v4(batch)
    for a, b in zip(out2, out4):
        assert torch.allclose(a, b)
    logits, y = torch.randn(6, 6), torch.randint(0, 6, (6,))
    assert torch.allclose(v4.classification_loss()(logits, y), F.cross_entropy(logits, y))


def test_focal_gamma0_and_smoothing0_equal_ce():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(FocalLoss(gamma=0)(logits, y), ce)
    assert torch.allclose(LabelSmoothingCrossEntropy(smoothing=0)(logits, y), ce)
    assert torch.allclose(FocalLabelSmoothingLoss(0, 0)(logits, y), ce)
    w = torch.rand(5)
    assert torch.allclose(FocalLoss(0, class_weights=w)(logits, y), F.cross_entropy(logits, y, weight=w))
    # focusing lowers the loss of easy (confident, correct) samples the most
    easy = torch.zeros(1, 5)
    easy[0, 0] = 8.0
    assert FocalLoss(2.0)(easy, torch.tensor([0])) < 1e-3 * F.cross_entropy(easy, torch.tensor([0]))
    # smoothing penalises over-confidence
    assert LabelSmoothingCrossEntropy(0.1)(easy, torch.tensor([0])) > F.cross_entropy(easy, torch.tensor([0]))


def test_contrastive_prefers_aligned_pairs_and_ignores_missing():
    torch.manual_seed(0)
    loss = ModalityContrastiveLoss(hidden_dim=8, proj_dim=8)
    base = torch.randn(32, 1, 8)
    aligned = base.repeat(1, 3, 1) + 0.01 * torch.randn(32, 3, 8)
    shuffled = aligned.clone()
    shuffled[:, 1] = aligned[torch.randperm(32), 1]
    shuffled[:, 2] = aligned[torch.randperm(32), 2]
    # identical projection heads so that "aligned" really is aligned after projection
    with torch.no_grad():
        for layer in (loss.proj[0], loss.proj[2]):
            layer.weight[1:] = layer.weight[0]
            layer.bias[1:] = layer.bias[0]
    mask = torch.ones(32, 3, dtype=torch.bool)
    assert loss(aligned, mask) < loss(shuffled, mask)
    # a missing side takes no part: garbage in a masked modality changes nothing
    mask[:, 2] = False
    garbage = aligned.clone()
    garbage[:, 2] = torch.randn(32, 8) * 100
    assert torch.allclose(loss(aligned, mask), loss(garbage, mask))
    mask[:] = False
    out = loss(aligned.requires_grad_(), mask)
    out.backward()
    assert out.item() == 0 and torch.isfinite(aligned.grad).all()


def test_gated_fusion_weights_sum_to_one_over_present():
    torch.manual_seed(0)
    fusion = GatedUncertaintyFusion(8, gate_alpha=0.3, learnable_alpha=True)
    mask = torch.rand(50, 3) > 0.4
    mask[:, 0] |= ~mask.any(1)
    _, w = fusion(torch.randn(50, 3, 8), torch.randn(50, 3, 8), mask)
    assert torch.allclose(w.sum(1), torch.ones(50), atol=1e-6)
    assert torch.all(w[~mask] == 0)
    assert float(fusion.alpha) == pytest.approx(0.3, abs=1e-4)


def test_improved_encoder_starts_at_unit_variance():
    model = create_model("attention_robust_v4", model_args(improved_encoder=True)).train()
    batch = random_batch()
    *_, logvar = model.encoder([batch[k] for k in ("audios", "texts", "videos")])
    assert torch.equal(logvar, torch.zeros_like(logvar))


def gaussian_kl(mu1, logvar1, mu2, logvar2):
    """Reference KL(N1 || N2) of diagonal Gaussians, averaged over the last dim."""
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2).pow(2)) / logvar2.exp() - 1.0).mean(dim=-1)


def test_pairwise_kl_matches_the_two_directed_kls():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    mask = torch.ones(5, 3, dtype=torch.bool)
    ref = torch.stack([0.5 * (gaussian_kl(mu[:, a], logvar[:, a], mu[:, b], logvar[:, b])
                              + gaussian_kl(mu[:, b], logvar[:, b], mu[:, a], logvar[:, a]))
                       for a, b in ((0, 1), (0, 2), (1, 2))], 1).mean()
    assert torch.allclose(pairwise_kl(mu, logvar, mask), ref, atol=1e-5)


@pytest.mark.parametrize("group_dim", [0, 1])
def test_grouped_linear_equals_one_linear_per_group(group_dim):
    from merbench_plugins.modules.grouped import GroupedLayerNorm, GroupedLinear
    torch.manual_seed(0)
    layer, norm = GroupedLinear(3, 8, 5, group_dim=group_dim), GroupedLayerNorm(3, 5, group_dim=group_dim)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 8) if group_dim == 1 else torch.randn(3, 4, 8)
    y = norm(layer(x))
    for g in range(3):
        xg = x[:, g] if group_dim == 1 else x[g]
        ref = F.layer_norm(xg @ layer.weight[g] + layer.bias[g, 0], (5,), norm.weight[g], norm.bias[g])
        assert torch.allclose(y[:, g] if group_dim == 1 else y[g], ref, atol=1e-5)


def front_padded(x, lengths, pad):
    """[B, T, D] valid frames -> MERBench's layout: ``pad`` + (T - length) zero frames in front."""
    b, t, d = x.shape
    out = torch.zeros(b, t + pad, d)
    for i, n in enumerate(lengths):
        out[i, t + pad - n:] = x[i, :n]
    return out


def test_valid_first_keeps_order_and_moves_padding_back():
    x = torch.arange(1, 13, dtype=torch.float).reshape(2, 6, 1)
    x[0, :2] = 0
    x[1, 3] = 0
    moved, mask = valid_first(x, frame_mask(x))
    assert moved[..., 0].tolist() == [[3, 4, 5, 6, 0, 0], [7, 8, 9, 11, 12, 0]]
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 5 + [False]]


@pytest.mark.parametrize("seq_encoder", ["lstm", "attnpool"])
def test_frame_encoder_ignores_front_padding(seq_encoder):
    torch.manual_seed(0)
    enc = InputProjection(5, 8, dropout=0.3, sequence=True, seq_encoder=seq_encoder).eval()
    x, lengths = torch.randn(3, 7, 5), [7, 4, 1]
    with torch.no_grad():
        ref = enc(front_padded(x, lengths, 0))
        for pad in (1, 6, 20):
            torch.testing.assert_close(enc(front_padded(x, lengths, pad)), ref, rtol=1e-5, atol=1e-6)
    if seq_encoder == "lstm":  # it still reads the valid frames in their order (not an order-free pooling)
        with torch.no_grad():
            assert not torch.allclose(enc(x.flip(1))[0], enc(x)[0], atol=1e-4)


def test_tied_decoder_shares_the_encoder_projections_and_loads_old_checkpoints():
    """The decoder reuses the encoder's input projections without registering them a second time (one
    name per tensor), copies keep the tie, and checkpoints holding the old duplicate keys still load."""
    import copy
    model = create_model("attention_robust_v2", model_args())
    assert not [k for k in model.state_dict() if "encoder_inputs" in k]
    clone = copy.deepcopy(model)
    assert clone.decoders.encoder_inputs is clone.encoder.inputs
    old = dict(model.state_dict())
    old.update({f"decoders.encoder_inputs.{m}.proj.{p}": old[f"encoder.inputs.{m}.proj.{p}"]
                for m in range(3) for p in ("weight", "bias")})
    fresh = create_model("attention_robust_v2", model_args())
    fresh.load_state_dict(old)                                    # strict: no unexpected keys left
    assert torch.equal(fresh.encoder.inputs[0].proj.weight, model.encoder.inputs[0].proj.weight)


@pytest.mark.parametrize("tied", [True, False])
def test_subset_reconstruction_is_an_unbiased_estimate_of_the_full_one(tied):
    """recon_mode=subset: the error over dims drawn per step averages to the full error (and so does its
    gradient, being linear in the per-dimension errors); only the drawn output units get a gradient."""
    from merbench_plugins.modules.encoders import MultimodalDecoder, MultimodalVariationalEncoder
    torch.manual_seed(0)
    dims = (12, 20, 8)
    enc = MultimodalVariationalEncoder(dims, 16)
    full = MultimodalDecoder(dims, 16, tied_to=enc if tied else None)
    subset = MultimodalDecoder(dims, 16, tied_to=enc if tied else None, mode="subset", dims_per_step=5)
    subset.load_state_dict(full.state_dict())
    z = torch.randn(4, 3, 16)
    inputs = [torch.randn(4, d) for d in dims]
    with torch.no_grad():
        target = full(z, inputs)                                                  # [B, 3]
        estimate = torch.stack([subset(z, inputs) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(estimate, target, rtol=0.05, atol=0.0)
    bias = subset.output_bias[1] if tied else subset.outputs[1].bias
    subset(z, inputs).sum().backward()
    assert 0 < int((bias.grad != 0).sum()) <= 5                                   # the drawn text dims only


def test_sketch_reconstruction_targets_a_fixed_signed_sketch_of_each_input():
    """recon_mode=sketch: each input dim lands in exactly one of recon_dims buckets with a fixed sign (the
    same for every decoder of that width), the sketch keeps the squared norm per dim on average, and the
    small output layer learns it (gradients reach it, not the encoder's projections)."""
    from merbench_plugins.modules.encoders import MultimodalDecoder, MultimodalVariationalEncoder
    dims = (12, 20, 8)
    enc = MultimodalVariationalEncoder(dims, 16)
    dec = MultimodalDecoder(dims, 16, tied_to=enc, mode="sketch", dims_per_step=4)
    other = MultimodalDecoder(dims, 16, mode="sketch", dims_per_step=4)
    assert dec.encoder_inputs is None and dec.sketch_dims == [4, 4, 4]
    assert torch.equal(dec.sketch_sign1, other.sketch_sign1)
    eye = torch.eye(20)
    sketch = dec.sketch(eye, 1)                                                   # [20 inputs, 4 buckets]
    assert ((sketch != 0).sum(1) == 1).all() and torch.allclose(sketch.abs(), (sketch != 0) * 5 ** -0.5)
    x = torch.randn(2000, 20)
    ratio = dec.sketch(x, 1).pow(2).mean() / x.pow(2).mean()
    assert 0.8 < float(ratio) < 1.2
    err = dec(torch.randn(6, 3, 16), [torch.randn(6, d) for d in dims])
    assert err.shape == (6, 3)
    err.sum().backward()
    assert dec.sketch_out.weight.grad is not None and enc.inputs[0].proj.weight.grad is None


@pytest.mark.parametrize("mode", ["full", "subset", "sketch"])
@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
def test_v2_trains_with_every_reconstruction_mode(mode, feat_type):
    model = create_model("attention_robust_v2", model_args(feat_type=feat_type, recon_mode=mode, recon_dims=6)).train()
    _, logits, _, inter = model(random_batch(feat_type=feat_type))
    (logits.sum() + inter).backward()
    assert torch.isfinite(inter) and model.encoder.inputs[1].proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="recon_mode"):
        create_model("attention_robust_v2", model_args(recon_mode="half"))


def test_explicit_dropout_keeps_nn_dropouts_distribution():
    from merbench_plugins.modules.dropout import Dropout, dropout
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.35)
    assert abs(float((y == 0).float().mean()) - 0.35) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.65), rtol=1e-4)
    assert abs(float(y.mean()) - 1.0) < 0.01
    # 16-bit decisions: every dropout rate realised to 1/65536, elements independent of their neighbours
    for p in (0.1, 0.3, 0.5, 0.9):
        assert abs(float((dropout(x, p) == 0).float().mean()) - p) < 0.005
    dropped = (dropout(torch.ones(400_000), 0.5) == 0).float().view(-1, 4)       # the 4 words of one draw
    assert abs(float((dropped[:, 0] * dropped[:, 3]).mean()) - 0.25) < 0.005
    assert float(dropout(x, 1 - 1e-7).abs().sum()) == 0
    half = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.3)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert dropout(x, 0.35, training=False) is x and float(dropout(x, 1.0).abs().sum()) == 0
    layer = Dropout(0.2).eval()
    assert layer(x) is x and not list(layer.state_dict())


def test_dropout_bits_are_the_same_when_compiling(monkeypatch):
    """Under torch.compile the 16-bit words are shifted out of the draws instead of viewed: the same values."""
    from merbench_plugins.modules import dropout as dropout_module
    x = torch.zeros(7, 9)
    torch.manual_seed(5)
    viewed = dropout_module.uniform16(x)
    monkeypatch.setattr(dropout_module, "is_compiling", lambda: True)
    torch.manual_seed(5)
    shifted = dropout_module.uniform16(x)
    assert viewed.dtype == torch.int16 and torch.equal(shifted, viewed.long())
    assert int(viewed.min()) < -16000 and int(viewed.max()) > 16000
