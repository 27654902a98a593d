"""Checkpoint selection under corruption: the validation fold, clean plus a corrupted copy.

``--select_on corrupted`` makes early stopping and the best epoch look at a validation set that
matches use: every validation batch once as it is and once corrupted (each sample loses a random
non-empty proper subset of its modalities with probability 1/2, and Gaussian noise at 2 x the
batch's feature std lands on one present modality of the others). The copy is drawn once, with a
generator seeded by ``seed``, so the selection is deterministic for a seed.
"""
import torch

from ..modules.masking import MODALITIES, data_mask, presence_mask, random_subset

SELECT_ON = ("clean", "corrupted")


def _corrupt_batch(batch: dict, generator: torch.Generator) -> dict:
    present = presence_mask(batch).cpu()                                                # [B, 3]
    b = present.shape[0]
    subset_generator = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
    kept = torch.where((torch.rand(b, generator=generator) < 0.5).unsqueeze(1),
                       random_subset(present, generator=subset_generator), present)
    noisy = ~(kept != present).any(1)                                                   # [B] not dropped
    target = torch.argmax(torch.rand(b, 3, generator=generator) * kept, dim=1)          # one present modality
    out = dict(batch)
    for m, key in enumerate(MODALITIES):
        x = batch[key]
        shape = (-1,) + (1,) * (x.dim() - 1)
        std = x[present[:, m].to(x.device)].std() if present[:, m].any() else torch.zeros((), dtype=x.dtype)
        hit = (noisy & (target == m) & kept[:, m]).to(x.device).view(shape)
        valid = data_mask(x)
        x = x + hit * 2.0 * std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * valid
        out[key] = torch.where(kept[:, m].to(x.device).view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return out


def corrupted_validation(loader, seed: int) -> list:
    """[clean batches] + [their corrupted copies], fixed for ``seed`` (a list, re-iterable)."""
    generator = torch.Generator().manual_seed(int(seed))
    clean = [(batch, emos, vals, list(names)) for batch, emos, vals, names in loader]
    corrupted = [(_corrupt_batch(batch, generator), emos, vals, [f"{n}#corrupted" for n in names])
                 for batch, emos, vals, names in clean]
    return clean + corrupted


def eval_loader(loader, select_on: str, seed: int):
    """The loader that picks the checkpoint: the validation fold as it is, or with corrupted copies."""
    if select_on not in SELECT_ON:
        raise ValueError(f"--select_on {select_on!r}: use {' or '.join(SELECT_ON)}")
    return loader if select_on == "clean" else corrupted_validation(loader, seed)
