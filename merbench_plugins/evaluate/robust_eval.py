"""Robust evaluation: scores under every modality subset, random missing rates and additive noise.

Conditions (each applied to a test set, then scored exactly like the plain test: the folds'
predictions are averaged under the same autocast as training (``--amp``), so the full-modality row
equals the plain test score):
  * subset    A, T, V, AT, AV, TV, ATV: the absent modalities are zeroed (MERBench's "missing")
  * missing   every modality of every sample is dropped with probability r (0.0 ... 0.9, LNLN-style);
              a sample that would have nothing left keeps one of the modalities its data has
  * noise     Gaussian noise of std = level x the modality's feature std on the TRAINING split (saved
              with the checkpoints), on present (non-padding) values; the same scale for every test set
Every random draw of a sample comes from (seed, condition, sample name) alone, so every model,
batch size, command and choice of kinds sees the same corrupted inputs. Each row also reports the
effective missing rate (modalities absent after the condition, native gaps included) and how many
samples were left with no modality. A new kind is one :class:`Kind` entry in :data:`KINDS`.
Models that take ``batch['masks']`` (ours) get the presence mask too.

    python -m merbench_plugins robust-eval DATA_DIR --checkpoints 'runs/models/*attention_robust_v2*.pt' [...]
"""
import argparse
import hashlib
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import registry
from ..cli import refuse
from ..modules.masking import MODALITIES, data_mask
from . import report
from ..runtime import autocast
from .metrics import mer_results, summarise

SUBSETS = ("A", "T", "V", "AT", "AV", "TV", "ATV")
MISSING_RATES = tuple(round(0.1 * i, 1) for i in range(10))
NOISE_LEVELS = (0.0, 0.25, 0.5, 1.0, 2.0)
# one modality at a time: noise on all three cannot show whether fusion turns away from a corrupted input
NOISE_ONE = tuple(f"{m}x{level:g}" for level in (2.0, 4.0) for m in "ATV")
N_UNIFORMS = 4           # per sample and condition: one drop draw per modality, one for the rescued modality


@dataclass(frozen=True)
class Condition:
    kind: str        # a key of KINDS: subset | missing | noise | noise1
    value: object    # 'AT' | 0.3 | 1.0 | 'Tx4'

    @property
    def label(self):
        return f"{self.kind}={self.value}"


def keep_subset(value, u: torch.Tensor, native: torch.Tensor) -> torch.Tensor:
    """The modalities named in ``value`` ('AT'), where the data has them."""
    wanted = torch.tensor([c in value for c in "ATV"])
    return native & wanted


def keep_missing(value, u: torch.Tensor, native: torch.Tensor) -> torch.Tensor:
    """Drop each modality with probability ``value``; a sample left with nothing (that had something)
    keeps one of the modalities its data has, picked by its own draw."""
    keep = (u[:, :3] >= value) & native                                        # [B, 3]
    lost = ~keep.any(1) & native.any(1)                                        # [B]
    choice = (u[:, 3] * native.sum(1)).floor().long()                          # [B] index among present ones
    pick = native & (native.long().cumsum(1) - 1 == choice[:, None])           # [B, 3] one-hot
    return keep | (pick & lost[:, None])


def keep_all(value, u: torch.Tensor, native: torch.Tensor) -> torch.Tensor:
    return native


@dataclass(frozen=True)
class Kind:
    """How a condition kind corrupts a batch."""
    values: tuple                                   # default condition values
    keep: Callable                                  # (value, uniforms [B, N_UNIFORMS], native [B, 3]) -> kept [B, 3]
    noise: Callable = lambda value: (0.0, 0.0, 0.0)  # value -> noise level per modality (x the train std)


KINDS = OrderedDict([
    ("subset", Kind(SUBSETS, keep_subset)),
    ("missing", Kind(MISSING_RATES, keep_missing)),
    ("noise", Kind(NOISE_LEVELS, keep_all, lambda value: (value, value, value))),
    # 'Tx4': 4 x std noise on text only
    ("noise1", Kind(NOISE_ONE, keep_all, lambda value: tuple(float(value[2:]) * (c == value[0]) for c in "ATV"))),
])


def all_conditions(kinds=tuple(KINDS), missing_rates=MISSING_RATES, noise_levels=NOISE_LEVELS):
    """The conditions of ``kinds`` (keys of :data:`KINDS`), in that table's order."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown robust-eval kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    values = {"missing": missing_rates, "noise": noise_levels}
    return [Condition(k, v) for k in KINDS if k in kinds for v in values.get(k, KINDS[k].values)]


def sample_keys(names: Sequence[str], seed: int, cond: Condition) -> np.ndarray:
    """[B] uint64: one key per sample from (seed, condition, name) only."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}|{cond.label}|{n}".encode(), digest_size=8).digest(),
                                    "little") for n in names], dtype=np.uint64)


def uniforms(keys: np.ndarray, start: int, count: int) -> np.ndarray:
    """[B, count] float64 in (0, 1): counter-based (splitmix64 of key and draw index start..start+count)."""
    with np.errstate(over="ignore"):
        z = keys[:, None] + (np.arange(start, start + count, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def normals(keys: np.ndarray, start: int, shape: Tuple[int, ...]) -> np.ndarray:
    """[B, *shape] standard normals (Box-Muller on :func:`uniforms`); element i of a sample's row-major
    [T, D] block uses draws start + 2i, so padding to another length leaves the real values' noise alone."""
    n = int(np.prod(shape))
    u = uniforms(keys, start, 2 * n)
    z = np.sqrt(-2.0 * np.log(u[:, 0::2])) * np.cos(2 * np.pi * u[:, 1::2])
    return z.reshape((len(keys),) + tuple(shape))


def apply_condition(batch: dict, cond: Condition, names: Sequence[str], seed: int, feature_std: dict) -> dict:
    """A copy of ``batch`` under ``cond``, with ``masks`` = [B, 3] presence of what the model sees.
    Each sample's draws depend on (seed, cond, its name) only: not on the batch, its order or size."""
    kind = KINDS[cond.kind]
    keys = sample_keys(names, seed, cond)
    native = torch.stack([(batch[k] != 0).flatten(1).any(1).cpu() for k in MODALITIES], 1)      # [B, 3]
    keep = kind.keep(cond.value, torch.from_numpy(uniforms(keys, 0, N_UNIFORMS)), native)     # [B, 3]
    out = dict(batch)
    for m, (key, level) in enumerate(zip(MODALITIES, kind.noise(cond.value))):
        x = batch[key]
        if level > 0:
            z = normals(keys, N_UNIFORMS + m * (1 << 40), tuple(x.shape[1:]))
            x = x + torch.from_numpy(z).to(x.device, x.dtype) * (level * feature_std[key]) * data_mask(x)
        km = keep[:, m].to(x.device).view(-1, *([1] * (x.dim() - 1)))
        out[key] = torch.where(km, x, torch.zeros((), dtype=x.dtype, device=x.device))
    present = torch.stack([(out[k] != 0).flatten(1).any(1) for k in MODALITIES], 1)
    out["masks"] = present & keep.to(present.device)
    return out


def feature_std(*loaders) -> dict:
    """Per-modality std over the real (non-padding, non-missing) values of the loaders' data
    (the training split's: noise is scaled by it for every test set)."""
    sums = {k: [0.0, 0.0, 0.0] for k in MODALITIES}
    for loader in loaders:
        for batch, *_ in loader:
            for k in MODALITIES:
                x = batch[k].double()
                v = data_mask(x).bool().expand_as(x)
                sums[k][0] += float(x[v].sum())
                sums[k][1] += float((x[v] ** 2).sum())
                sums[k][2] += int(v.sum())
    out = {}
    for k, (s, s2, n) in sums.items():
        mean = s / max(n, 1)
        out[k] = float(np.sqrt(max(s2 / max(n, 1) - mean ** 2, 0.0)))
    return out


@torch.no_grad()
def predict(models: List[torch.nn.Module], loader, device, cond: Condition, seed: int, stds: dict, with_masks: bool,
            output_dim1: int, output_dim2: int, amp: bool = False):
    """Fold-averaged (emo_probs, emo_labels, val_preds, val_labels) under ``cond`` and the condition's
    effective missing rate and count of samples with no modality (same inputs for every model)."""
    batches, emo_labels, val_labels, masks = [], [], [], []
    for batch, emos, vals_true, names in loader:
        batch = apply_condition(batch, cond, list(names), seed, stds)
        masks.append(batch["masks"].cpu())
        if not with_masks:
            batch.pop("masks")
        batches.append({k: t.to(device) for k, t in batch.items()})
        emo_labels.append(emos.cpu().numpy())
        val_labels.append(vals_true.cpu().numpy().reshape(-1))
    probs, vals = [], []
    for model in models:
        model.eval()
        p, v = [], []
        for batch in batches:
            with autocast(device, amp):
                _, e, vo, _ = model(batch)
            if output_dim1:
                p.append(torch.softmax(e.float(), -1).cpu().numpy())
            if output_dim2:
                v.append(vo.float().cpu().numpy().reshape(-1))
        probs.append(np.concatenate(p) if p else None)
        vals.append(np.concatenate(v) if v else None)
    emo_probs = np.mean(probs, axis=0) if output_dim1 else []
    val_preds = np.mean(vals, axis=0) if output_dim2 else []
    present = torch.cat(masks).float()                                                         # [N, 3]
    absent = (float(1 - present.mean()), int((present.sum(1) == 0).sum()))
    return (emo_probs, np.concatenate(emo_labels) if output_dim1 else [], val_preds,
            np.concatenate(val_labels) if output_dim2 else []), absent


def robust_evaluate(models, test_loaders: "OrderedDict[str, object]", device, *, stds: Optional[dict] = None,
                    calculate_results=mer_results, conditions=None, seed: int = 0, with_masks: bool = True,
                    output_dim1: int = 6, output_dim2: int = 1, model_name: str = "model", progress: bool = True,
                    amp: bool = False):
    """One row per (test set, condition): {'model', 'test', 'kind', 'condition', f1, acc, val_mse, emoval,
    'missing_effective', 'no_modality'}. ``stds``: the training split's :func:`feature_std` (noise scale);
    ``amp``: score under the same autocast as the plain test."""
    conditions, device = conditions or all_conditions(), torch.device(device)
    if stds is None and any(any(KINDS[c.kind].noise(c.value)) for c in conditions):
        raise ValueError("noise conditions need stds=feature_std(<the training split's loader>): noise is scaled "
                         "by the training data, the same for every test set")
    rows = []
    items = [(t, c) for t in test_loaders for c in conditions]
    bar = items
    if progress:
        from tqdm import tqdm
        bar = tqdm(items, desc=f"robust eval {model_name}", leave=False, dynamic_ncols=True, disable=None)
    for name, cond in bar:
        preds, (missing, empty) = predict(models, test_loaders[name], device, cond, seed, stds or {}, with_masks,
                                          output_dim1, output_dim2, amp)
        results, _ = calculate_results(*preds)
        rows.append(dict(model=model_name, test=name, kind=cond.kind, condition=cond.value, **summarise(results),
                         missing_effective=round(missing, 4), no_modality=empty))
    return rows


METRIC_COLUMNS = ("f1", "acc", "val_mse", "emoval", "missing_effective", "no_modality")


def write_reports(rows, out_dir: str, stem: str = "robust", plot_metric: Optional[str] = None):
    """CSV + markdown (+ PNG with matplotlib). Returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    cols = ["model", "test", "kind", "condition"] + [c for c in METRIC_COLUMNS if any(c in r for r in rows)]
    paths = {"csv": os.path.join(out_dir, f"{stem}.csv"), "md": os.path.join(out_dir, f"{stem}.md")}
    report.write_csv(paths["csv"], cols, [[r.get(c) for c in cols] for r in rows])
    md = ["# Robust evaluation\n"]
    for test in dict.fromkeys(r["test"] for r in rows):
        for kind in dict.fromkeys(r["kind"] for r in rows):
            sel = [r for r in rows if r["test"] == test and r["kind"] == kind]
            if sel:
                md.append(f"## {test}: {kind}\n")
                md.append(report.markdown_table(cols, [[r.get(c) for c in cols] for r in sel]) + "\n")
    report.atomic_write_text(paths["md"], "\n".join(md))
    png = plot(rows, os.path.join(out_dir, f"{stem}.png"), plot_metric)
    if png:
        paths["png"] = png
    return paths


def plot(rows, path, metric=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install merbench-plugins[plot]); robustness plot skipped")
        return None
    metric = metric or ("emoval" if any(r.get("emoval") is not None for r in rows) else "f1")
    tests = list(dict.fromkeys(r["test"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(len(tests), len(kinds), figsize=(4.6 * len(kinds), 3.4 * len(tests)), squeeze=False)
    for i, test in enumerate(tests):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for mi, model in enumerate(models):
                sel = [r for r in rows if r["test"] == test and r["kind"] == kind and r["model"] == model]
                xs = [r["condition"] for r in sel]
                ys = [np.nan if r.get(metric) is None else r[metric] for r in sel]
                if kind == "subset" or any(isinstance(x, str) for x in xs):
                    width = 0.8 / len(models)
                    ax.bar(np.arange(len(xs)) + mi * width - 0.4 + width / 2, ys, width, label=model)
                    ax.set_xticks(np.arange(len(xs)))
                    ax.set_xticklabels(xs)
                else:
                    ax.plot(xs, ys, marker="o", label=model)
            ax.set_title(f"{test}: {kind}")
            ax.set_xlabel({"subset": "modalities present", "missing": "missing rate (nominal)",
                           "noise": "noise (x train std)"}.get(kind, kind))
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_checkpoints(patterns, device, merbench_root=None):
    """Checkpoints written by --savemodel -> (model name, args dict, [models], train feature std or None)."""
    from . import checkpoints
    paths, ckpts, models = checkpoints.load_folds(patterns, device, merbench_root, one_model=True)
    stds = next((c["feature_std"] for c in reversed(ckpts) if c.get("feature_std") is not None), None)
    return ckpts[0]["model"], ckpts[0]["args"], models, stds


def main(argv=None):
    from ..data.merbench_layout import DataError, FeatureDataset, SplitLoader
    p = argparse.ArgumentParser(prog="python -m merbench_plugins robust-eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_dir", help="MERBench-layout dataset folder the checkpoints were trained on")
    p.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint files or globs (one model, its folds)")
    p.add_argument("--tests", default=None, help="comma-separated test sets (default: every non-train split)")
    p.add_argument("--kinds", default=",".join(KINDS), help="condition kinds to run (noise1: one modality at a time)")
    p.add_argument("--noise_levels", default=",".join(map(str, NOISE_LEVELS)))
    p.add_argument("--seed", type=int, default=0, help="seed of the random missing patterns and noise")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="score under CUDA autocast (default: as the checkpoints "
                                                      "were trained, so the full rows match their plain test)")
    p.add_argument("--merbench", default=None, help="MERBench root, for checkpoints of MERBench's own models")
    p.add_argument("--out", default="robust_eval", help="output folder")
    a = p.parse_args(argv)
    try:
        conds = all_conditions(a.kinds.split(","), noise_levels=tuple(float(x) for x in a.noise_levels.split(",")))
        name, args, models, stds = load_checkpoints(a.checkpoints, torch.device(a.device), a.merbench)
        ds = FeatureDataset(a.data_dir, args["audio_feature"], args["text_feature"], args["video_feature"],
                            feat_type=args["feat_type"], label_path=args.get("label_path"))
        tests = a.tests.split(",") if a.tests else sorted(s for s in ds.splits() if s != "train")
        loaders = OrderedDict((t, SplitLoader(ds.load(t), a.batch_size)) for t in tests)
        if stds is None:
            print("note: the checkpoints carry no training feature statistics (older version): noise is scaled by "
                  f"the std of {a.data_dir}'s train split", file=sys.stderr)
            stds = feature_std(SplitLoader(ds.load("train"), a.batch_size))
    except (DataError, FileNotFoundError, KeyError, ValueError) as exc:   # CheckpointError is a ValueError
        return refuse(exc.args[0] if exc.args else exc)
    rows = robust_evaluate(models, loaders, torch.device(a.device), stds=stds, conditions=conds, seed=a.seed,
                           with_masks=registry_model(name), output_dim1=args["output_dim1"],
                           output_dim2=args["output_dim2"], model_name=name, amp=a.amp or bool(args.get("amp")))
    stem = f"robust_{name}_{report.timestamp()}"
    paths = write_reports(rows, a.out, stem)
    print(open(paths["md"]).read())
    print("wrote " + ", ".join(paths.values()))
    return 0


def registry_model(name: str) -> bool:
    try:
        registry.get_model_entry(name)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    sys.exit(main())
