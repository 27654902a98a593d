"""MRG-Net: routing equals a per-head loop, slot softmax, FixedLenPool, missing modalities, padding, gradients."""
import sys

import pytest
import torch
import torch.nn.functional as F

from merbench_plugins import create_model, model_grid
from merbench_plugins.modules.masking import frame_mask
from merbench_plugins.modules.mrg import (CrossModalRouter, FixedLenPool, HeadwiseMemoryRouter, MemoryGuidedFusion,
                                          route_through_slots)

DIMS = dict(audio_dim=12, text_dim=20, video_dim=8)
KEYS = ("audios", "texts", "videos")


def make_model(feat_type="utt", seed=0, **overrides):
    torch.manual_seed(seed)
    args = dict(DIMS, output_dim1=6, output_dim2=1, feat_type=feat_type, hidden_dim=16, dropout=0.1, grad_clip=-1,
                slots_t=8, slots_a=4, slots_v=6, cross_slots=4, gate_slots=4, pool_len=4)
    args.update(overrides)
    return create_model("mrg_net", args)


def make_batch(feat_type="utt", b=5, lengths=(7, 5, 9), seed=1):
    g = torch.Generator().manual_seed(seed)
    dims = (DIMS["audio_dim"], DIMS["text_dim"], DIMS["video_dim"])
    if feat_type == "utt":
        return {k: torch.randn(b, d, generator=g) for k, d in zip(KEYS, dims)}
    return {k: torch.randn(b, t, d, generator=g) for k, t, d in zip(KEYS, lengths, dims)}


def front_pad(x, total):
    """[B, T, D] -> [B, total, D] with zero frames in front (MERBench's padding)."""
    return torch.cat([x.new_zeros(x.shape[0], total - x.shape[1], x.shape[2]), x], dim=1)


# ------------------------------------------------------------------------------------------------
# routing: vectorised == per-head reference loop
# ------------------------------------------------------------------------------------------------

def test_memory_router_equals_per_head_loop():
    torch.manual_seed(0)
    slots, heads, dh, b, n = (5, 3, 4), 4, 6, 3, 7
    router = HeadwiseMemoryRouter(heads * dh, heads, slots)
    unit = router.memory
    with torch.no_grad():   # untie the read-back kernel so that a swapped kernel would be caught
        unit.from_slots.normal_()
    x = torch.randn(len(slots), b, heads, n, dh)
    read, attn = unit(x)

    offsets = [0, 5, 8]
    for m, (off, s) in enumerate(zip(offsets, slots)):
        for h in range(heads):
            to_w = unit.to_slots[h, off:off + s]                        # [S_m, dh]
            from_w = unit.from_slots[h, off:off + s]
            ref_attn = torch.softmax(x[m, :, h] @ to_w.t(), dim=1)     # softmax over the tokens
            ref_attn = ref_attn / (ref_attn.sum(-1, keepdim=True) + 1e-6)
            torch.testing.assert_close(attn[m, :, h, :, :s], ref_attn, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(read[m, :, h], ref_attn @ from_w, rtol=1e-5, atol=1e-6)
        assert torch.all(attn[m, ..., s:] == 0), "padded slots must get exactly zero weight"


def test_per_sample_routing_equals_loop():
    torch.manual_seed(0)
    m_, b, h_, n, s, dh = 3, 4, 2, 5, 6, 3
    x = torch.randn(m_, b, h_, n, dh)
    to_w, from_w = torch.randn(m_, b, h_, s, dh), torch.randn(m_, b, h_, s, dh)
    read, _ = route_through_slots(x, to_w, from_w, temperature=0.7)
    for m in range(m_):
        for i in range(b):
            for h in range(h_):
                attn = torch.softmax(x[m, i, h] @ to_w[m, i, h].t() / 0.7, dim=0)
                attn = attn / (attn.sum(-1, keepdim=True) + 1e-6)
                torch.testing.assert_close(read[m, i, h], attn @ from_w[m, i, h], rtol=1e-5, atol=1e-6)


def test_cross_router_kernels_mix_base_and_context():
    torch.manual_seed(0)
    router = CrossModalRouter(16, 4, slots=5, rank=3)
    ctx_a, ctx_b = torch.randn(3, 2, 16), torch.randn(3, 2, 16)
    kernel = router.kernels(ctx_a)                                       # [M, B, H, S, dh]
    assert kernel.shape == (3, 2, 4, 5, 4)
    torch.testing.assert_close(kernel.norm(dim=-1), torch.ones(3, 2, 4, 5))
    assert not torch.allclose(kernel, router.kernels(ctx_b)), "kernels must depend on the context"
    with torch.no_grad():
        router.mix_logit.fill_(30.0)                                     # σ(α) -> 1: the base kernel alone
    base = F.normalize(router.base_kernel.view(3, 1, 4, 5, 4), dim=-1).expand(3, 2, 4, 5, 4)
    torch.testing.assert_close(router.kernels(ctx_a), base)
    torch.testing.assert_close(router.kernels(ctx_b), base)


# ------------------------------------------------------------------------------------------------
# slot softmax
# ------------------------------------------------------------------------------------------------

def test_fusion_slot_softmax_sums_to_one_over_slots_and_follows_context():
    torch.manual_seed(0)
    fusion = MemoryGuidedFusion(16, 4, slots=6, temperature=0.5)
    weights = fusion.slot_weights(torch.randn(3, 5, 16))                 # [M, B, H, S]
    assert weights.shape == (3, 5, 4, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5, 4))
    assert (weights >= 0).all()
    # the seed's softmax over a length-1 token axis gave a constant: here samples must differ
    assert weights.std(dim=1).max() > 1e-3


def test_memory_slot_weights_sum_to_one_over_slots():
    torch.manual_seed(0)
    router = HeadwiseMemoryRouter(16, 4, (8, 4, 6))
    _, attn = router.memory(torch.randn(3, 2, 4, 5, 4))
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, 4, 5), rtol=0, atol=1e-5)


def test_missing_modality_states_cannot_reach_context_or_fusion():
    torch.manual_seed(0)
    router, fusion = CrossModalRouter(16, 4, slots=5), MemoryGuidedFusion(16, 4, slots=6)
    h = torch.randn(3, 4, 3, 16)                                         # [M, B, N, d]
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [False, False, False]])
    other = h.clone()
    other[~present.t()] = 50 * torch.randn(int((~present).sum()), 3, 16)  # change only the missing modalities
    with torch.no_grad():
        routed, routed_other = router(h, present), router(other, present)
        torch.testing.assert_close(routed[present.t()], routed_other[present.t()])
        fused, _ = fusion(routed, present)
        fused_other, _ = fusion(routed_other, present)
    torch.testing.assert_close(fused, fused_other)
    assert torch.all(fused[3] == 0), "no modality present: nothing to fuse"


# ------------------------------------------------------------------------------------------------
# FixedLenPool
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,reference", [
    ("avg", lambda x, n: F.adaptive_avg_pool1d(x, n)),
    ("max", lambda x, n: F.adaptive_max_pool1d(x, n)),
    ("linear", lambda x, n: F.interpolate(x, size=n, mode="linear", align_corners=False)),
])
@pytest.mark.parametrize("t", [5, 13, 24])
def test_fixed_len_pool_matches_torch_on_unpadded_input(mode, reference, t):
    torch.manual_seed(0)
    x = torch.randn(3, t, 4)
    expected = reference(x.transpose(1, 2), 5).transpose(1, 2)
    torch.testing.assert_close(FixedLenPool(5, mode)(x), expected)


def test_fixed_len_pool_interpolates_short_sequences():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4)
    expected = F.interpolate(x.transpose(1, 2), size=8, mode="linear", align_corners=False).transpose(1, 2)
    for mode in FixedLenPool.MODES:
        torch.testing.assert_close(FixedLenPool(8, mode)(x), expected)


@pytest.mark.parametrize("mode", FixedLenPool.MODES)
def test_fixed_len_pool_ignores_padding(mode):
    torch.manual_seed(0)
    pool = FixedLenPool(4, mode)
    x = torch.randn(3, 9, 5)
    ref = pool(x)
    # the same frames with zero padding in front, at the back, and in holes, padded to different lengths
    padded = torch.zeros(3, 20, 5)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    positions = [torch.arange(11, 20), torch.arange(0, 9), torch.tensor([0, 2, 3, 7, 8, 11, 15, 16, 19])]
    for i, pos in enumerate(positions):
        padded[i, pos] = x[i]
        mask[i, pos] = True
    padded[~mask] = 1e6 * torch.randn(int((~mask).sum()), 5)            # garbage in padded frames: masked out
    torch.testing.assert_close(pool(padded, mask), ref)
    short, long = front_pad(x, 14), front_pad(x, 30)
    torch.testing.assert_close(pool(short, frame_mask(short)), pool(long, frame_mask(long)))


def test_fixed_len_pool_empty_rows_give_zeros():
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[False] * 6, [True] * 6])
    for mode in FixedLenPool.MODES:
        out = FixedLenPool(4, mode)(x, mask)
        assert torch.all(out[0] == 0) and torch.isfinite(out).all()
        assert out[1].abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------

def test_registered_with_grids():
    grid = model_grid("mrg_net")
    for key in ("hidden_dim", "pool_len", "pool_mode", "memory_heads", "slots_t", "slots_a", "slots_v",
                "cross_slots", "gate_slots", "tau_x", "tau_g"):
        assert isinstance(grid[key], list) and grid[key], key


@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
def test_forward_backward_every_parameter_gets_a_gradient(feat_type):
    model = make_model(feat_type, modality_dropout=0.0).train()   # a batch of 5 could lose every pair
    features, emos, vals, interloss = model(make_batch(feat_type))
    assert features.shape == (5, 16) and emos.shape == (5, 6) and vals.shape == (5, 1)
    assert interloss.dim() == 0 and model.grad_clip == -1
    (emos.sum() + vals.sum() + interloss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
@pytest.mark.parametrize("missing", [(0,), (1,), (2,), (0, 1), (1, 2), (0, 2), (0, 1, 2)])
def test_missing_modalities_no_nan(feat_type, missing):
    model = make_model(feat_type).train()
    batch = make_batch(feat_type)
    for m in missing:
        batch[KEYS[m]] = torch.zeros_like(batch[KEYS[m]])
    features, emos, vals, _ = model(batch)
    assert torch.isfinite(features).all() and torch.isfinite(emos).all() and torch.isfinite(vals).all()
    (emos.sum() + vals.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
@pytest.mark.parametrize("missing,junk", [((0,), 100.0), ((1,), float("nan")), ((2,), 100.0), ((0, 2), float("inf"))])
def test_missing_modality_input_does_not_change_the_output(feat_type, missing, junk):
    model = make_model(feat_type).eval()
    batch = make_batch(feat_type)
    masks = torch.ones(5, 3, dtype=torch.bool)
    masks[:3, list(missing)] = False                     # missing in the first 3 samples only
    zeroed, garbage = dict(batch), dict(batch, masks=masks)
    for m in missing:
        zeroed[KEYS[m]] = batch[KEYS[m]].clone()
        zeroed[KEYS[m]][:3] = 0
        garbage[KEYS[m]] = batch[KEYS[m]].clone()
        garbage[KEYS[m]][:3] = junk * torch.randn_like(batch[KEYS[m]][:3])
    with torch.no_grad():
        ref, out = model(zeroed), model(garbage)
        full = model(batch)
    for a, b in zip(ref[:3], out[:3]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out[0][3:], full[0][3:])  # samples with every modality are untouched
    assert not torch.allclose(full[0][:3], ref[0][:3]), "dropping a present modality must change the output"


def test_output_invariant_to_padding_length():
    model = make_model("frm_unalign").eval()
    torch.manual_seed(3)
    lengths = torch.tensor([[3, 6, 2], [9, 1, 7], [5, 5, 5], [1, 9, 4]])   # valid frames per sample and modality
    dims = (DIMS["audio_dim"], DIMS["text_dim"], DIMS["video_dim"])
    short = {}
    for m, (key, d) in enumerate(zip(KEYS, dims)):
        x = torch.randn(4, 9, d)
        valid = torch.arange(9).flip(0).unsqueeze(0) < lengths[:, m:m + 1]   # front padding
        short[key] = x * valid.unsqueeze(-1)
    long = {k: front_pad(v, 14) for k, v in short.items()}
    with torch.no_grad():
        a, b = model(short), model(long)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("feat_type", ["utt", "frm_unalign"])
def test_a_sample_does_not_depend_on_its_batch(feat_type):
    # the seed averaged the generated kernels over the batch; per-sample kernels keep samples independent
    model = make_model(feat_type).eval()
    batch = make_batch(feat_type)
    with torch.no_grad():
        whole = model(batch)[1]
        alone = model({k: v[1:2] for k, v in batch.items()})[1]
    torch.testing.assert_close(whole[1:2], alone, rtol=1e-5, atol=1e-5)


def test_full_rank_generator_and_zero_output_heads():
    model = make_model("frm_align", kernel_rank=0, output_dim1=0, pool_mode="max").train()
    _, emos, vals, _ = model(make_batch("frm_align", lengths=(6, 6, 6)))
    assert emos.shape == (5, 0) and vals.shape == (5, 1)
    vals.sum().backward()


def test_heads_must_divide_hidden_dim():
    with pytest.raises(ValueError, match="divisible by memory_heads"):
        make_model(hidden_dim=18, memory_heads=4)


def test_bert_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)              # import transformers -> ImportError
    with pytest.raises(ImportError, match=r"pip install merbench-plugins\[bert\]"):
        make_model(text_encoder="bert")


def test_bert_path_with_a_tiny_local_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "happy", "sad", "day", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(str(tmp_path))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(str(tmp_path))
    model = make_model(text_encoder="bert", bert_name=str(tmp_path)).eval()
    batch = make_batch("utt", b=3)
    batch["raw_texts"] = ["a happy day", "sad", "a sad day"]
    with torch.no_grad():
        ref = model(batch)[1]
        batch["raw_texts"] = ["a happy day", "sad", ""]                   # empty text = missing text
        out = model(batch)[1]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:2], ref[:2])
    assert not torch.allclose(out[2], ref[2])
