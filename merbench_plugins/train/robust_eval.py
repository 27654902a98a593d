"""Robust evaluation: scores under every modality subset, random missing rates and additive noise.

Conditions (each applied to a test set, then scored exactly like the plain test: the folds'
predictions are averaged, so the full-modality row equals the plain test score):
  * subset    A, T, V, AT, AV, TV, ATV: the absent modalities are zeroed (MERBench's "missing")
  * missing   every modality of every sample is dropped with probability r (0.0 ... 0.9, LNLN-style);
              a sample that would lose all three keeps one at random; fixed seeds, identical for all models
  * noise     Gaussian noise of std = level x the modality's feature std on present (non-padding) values
Models that take ``batch['masks']`` (ours) get the presence mask too.

    python -m merbench_plugins robust-eval DATA_DIR --checkpoints 'runs/models/*attention_robust_v2*.pt' [...]
"""
import argparse
import glob
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from .. import registry
from ..modules.masking import MODALITIES
from . import report
from .metrics import mer_results, summarise

SUBSETS = ("A", "T", "V", "AT", "AV", "TV", "ATV")
MISSING_RATES = tuple(round(0.1 * i, 1) for i in range(10))
NOISE_LEVELS = (0.0, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Condition:
    kind: str        # subset | missing | noise
    value: object    # 'AT' | 0.3 | 1.0

    @property
    def label(self):
        return f"{self.kind}={self.value}"


def all_conditions(kinds=("subset", "missing", "noise"), missing_rates=MISSING_RATES, noise_levels=NOISE_LEVELS):
    out = []
    if "subset" in kinds:
        out += [Condition("subset", s) for s in SUBSETS]
    if "missing" in kinds:
        out += [Condition("missing", r) for r in missing_rates]
    if "noise" in kinds:
        out += [Condition("noise", n) for n in noise_levels]
    return out


def _valid(x):
    """[B, D] or [B, T, D] -> same-shape float mask of the values that are real data (not padding)."""
    return (x != 0).any(-1, keepdim=True).to(x.dtype).expand_as(x)


def apply_condition(batch: dict, cond: Condition, generator: torch.Generator, feature_std: dict) -> dict:
    """A copy of ``batch`` under ``cond``, with ``masks`` = [B, 3] presence of what the model sees."""
    out = dict(batch)
    b = batch[MODALITIES[0]].shape[0]
    keep = torch.ones(b, 3, dtype=torch.bool)
    if cond.kind == "subset":
        keep[:, [m for m, c in enumerate("ATV") if c not in cond.value]] = False
    elif cond.kind == "missing":
        keep = torch.rand(b, 3, generator=generator) >= cond.value
        lost = ~keep.any(1)
        pick = torch.randint(0, 3, (b,), generator=generator)
        keep[lost, pick[lost]] = True
    for m, key in enumerate(MODALITIES):
        x = batch[key]
        if cond.kind == "noise" and cond.value > 0:
            noise = torch.randn(x.shape, generator=generator).to(x.device) * (cond.value * feature_std[key])
            x = x + noise * _valid(x)
        km = keep[:, m].to(x.device).view(-1, *([1] * (x.dim() - 1)))
        out[key] = torch.where(km, x, torch.zeros((), dtype=x.dtype, device=x.device))
    present = torch.stack([(out[k] != 0).flatten(1).any(1) for k in MODALITIES], 1)
    out["masks"] = present & keep.to(present.device)
    return out


def feature_std(loader) -> dict:
    """Per-modality std over the real (non-padding, non-missing) values of a loader's data."""
    sums = {k: [0.0, 0.0, 0.0] for k in MODALITIES}
    for batch, *_ in loader:
        for k in MODALITIES:
            x = batch[k].double()
            v = _valid(x).bool()
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
            output_dim1: int, output_dim2: int):
    """Fold-averaged (emo_probs, emo_labels, val_preds, val_labels) under ``cond`` (same noise for every model)."""
    probs, vals = [], []
    emo_labels, val_labels = [], []
    for i, model in enumerate(models):
        model.eval()
        g = torch.Generator().manual_seed(seed)
        p, v = [], []
        for batch, emos, vals_true, _ in loader:
            batch = apply_condition(batch, cond, g, stds)
            if not with_masks:
                batch.pop("masks")
            batch = {k: t.to(device) for k, t in batch.items()}
            _, e, vo, _ = model(batch)
            if output_dim1:
                p.append(torch.softmax(e.float(), -1).cpu().numpy())
            if output_dim2:
                v.append(vo.float().cpu().numpy().reshape(-1))
            if i == 0:
                emo_labels.append(emos.numpy())
                val_labels.append(vals_true.numpy().reshape(-1))
        probs.append(np.concatenate(p) if p else None)
        vals.append(np.concatenate(v) if v else None)
    emo_probs = np.mean(probs, axis=0) if output_dim1 else []
    val_preds = np.mean(vals, axis=0) if output_dim2 else []
    return (emo_probs, np.concatenate(emo_labels) if output_dim1 else [], val_preds,
            np.concatenate(val_labels) if output_dim2 else [])


def robust_evaluate(models, test_loaders: "OrderedDict[str, object]", device, *, calculate_results=mer_results,
                    conditions=None, seed: int = 0, with_masks: bool = True, output_dim1: int = 6,
                    output_dim2: int = 1, model_name: str = "model", progress: bool = True):
    """One row per (test set, condition): {'model', 'test', 'kind', 'condition', f1, acc, val_mse, emoval}."""
    conditions = conditions or all_conditions()
    rows = []
    items = [(t, c) for t in test_loaders for c in conditions]
    bar = items
    if progress:
        from tqdm import tqdm
        bar = tqdm(items, desc=f"robust eval {model_name}", leave=False, dynamic_ncols=True, disable=None)
    stds = {}
    for name, cond in bar:
        if name not in stds:
            stds[name] = feature_std(test_loaders[name])
        k = conditions.index(cond)
        results, _ = calculate_results(*predict(models, test_loaders[name], device, cond, seed + 1000 * k, stds[name],
                                                with_masks, output_dim1, output_dim2))
        rows.append(dict(model=model_name, test=name, kind=cond.kind, condition=cond.value, **summarise(results)))
    return rows


METRIC_COLUMNS = ("f1", "acc", "val_mse", "emoval")


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
    kinds = [k for k in ("subset", "missing", "noise") if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(len(tests), len(kinds), figsize=(4.6 * len(kinds), 3.4 * len(tests)), squeeze=False)
    for i, test in enumerate(tests):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for mi, model in enumerate(models):
                sel = [r for r in rows if r["test"] == test and r["kind"] == kind and r["model"] == model]
                xs = [r["condition"] for r in sel]
                ys = [np.nan if r.get(metric) is None else r[metric] for r in sel]
                if kind == "subset":
                    width = 0.8 / len(models)
                    ax.bar(np.arange(len(xs)) + mi * width - 0.4 + width / 2, ys, width, label=model)
                    ax.set_xticks(np.arange(len(xs)))
                    ax.set_xticklabels(xs)
                else:
                    ax.plot(xs, ys, marker="o", label=model)
            ax.set_title(f"{test}: {kind}")
            ax.set_xlabel({"subset": "modalities present", "missing": "missing rate", "noise": "noise (x std)"}[kind])
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_checkpoints(patterns, device, merbench_root=None):
    """Checkpoints written by --savemodel -> (model name, args dict, [models])."""
    paths = sorted(p for pat in patterns for p in glob.glob(pat))
    if not paths:
        raise FileNotFoundError(f"no checkpoint matches {', '.join(patterns)} (train with --savemodel first)")
    models, name, args = [], None, None
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=False) if _has_weights_only() else torch.load(path, map_location="cpu")
        if name is not None and ckpt["model"] != name:
            raise ValueError(f"{path} holds model {ckpt['model']!r}, the others {name!r}: evaluate one model at a time")
        name, args = ckpt["model"], ckpt["args"]
        ns = argparse.Namespace(**args)
        try:
            model = registry.create_model(name, ns)
        except KeyError:
            if merbench_root is None:
                raise KeyError(f"{name!r} is not a merbench-plugins model; pass --merbench ROOT to build it with "
                               "MERBench's get_models") from None
            sys.path.insert(0, merbench_root)
            from toolkit.models import get_models
            model = get_models(ns)
        model.load_state_dict(ckpt["state_dict"])
        models.append(model.to(device))
    return name, args, models


def _has_weights_only():
    import inspect
    return "weights_only" in inspect.signature(torch.load).parameters


def main(argv=None):
    from ..data.merbench_layout import DataError, FeatureDataset
    from .runner import SplitLoader
    p = argparse.ArgumentParser(prog="python -m merbench_plugins robust-eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_dir", help="MERBench-layout dataset folder the checkpoints were trained on")
    p.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint files or globs (one model, its folds)")
    p.add_argument("--tests", default=None, help="comma-separated test sets (default: every non-train split)")
    p.add_argument("--kinds", default="subset,missing,noise", help="condition kinds to run")
    p.add_argument("--noise_levels", default=",".join(map(str, NOISE_LEVELS)))
    p.add_argument("--seed", type=int, default=0, help="seed of the random missing patterns and noise")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--merbench", default=None, help="MERBench root, for checkpoints of MERBench's own models")
    p.add_argument("--out", default="robust_eval", help="output folder")
    a = p.parse_args(argv)
    try:
        name, args, models = load_checkpoints(a.checkpoints, torch.device(a.device), a.merbench)
        ds = FeatureDataset(a.data_dir, args["audio_feature"], args["text_feature"], args["video_feature"],
                            feat_type=args["feat_type"], label_path=args.get("label_path"))
        tests = a.tests.split(",") if a.tests else sorted(s for s in ds.splits() if s != "train")
        loaders = OrderedDict((t, SplitLoader(ds.load(t), a.batch_size)) for t in tests)
    except (DataError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    conds = all_conditions(a.kinds.split(","), noise_levels=tuple(float(x) for x in a.noise_levels.split(",")))
    rows = robust_evaluate(models, loaders, torch.device(a.device), conditions=conds, seed=a.seed,
                           with_masks=registry_model(name), output_dim1=args["output_dim1"],
                           output_dim2=args["output_dim2"], model_name=name)
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
