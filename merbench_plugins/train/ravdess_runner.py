"""Standalone RAVDESS training over actor-independent folds (no MERBench needed).

    python -m merbench_plugins ravdess-train CACHE_DIR --out OUT [--folds 6] [--classes 4|8] [--fusion gated]
        [--epochs 30] [--batch_size 16] [--device auto|cpu|cuda] [--amp] [--max_folds N] [model flags ...]

Each fold trains ``ravdess_av`` on its training actors with AdamW and a cosine schedule, stops
early on the validation actors' macro-F1, then scores its best checkpoint once on its test actors.
Writes to OUT: ``results.csv`` / ``results.json`` (per fold, mean and std of macro-F1, weighted F1,
accuracy, UAR), ``history.csv``, ``predictions.csv``, ``confusion.csv`` and, with matplotlib,
``confusion.png`` and ``curves.png``.

Crash safety: ``OUT/run.json`` (the settings and the clips) is written before the first fold and
``OUT/folds/fold_K.json`` atomically as fold K ends, with the tables above refreshed for the folds
done so far. Rerunning the same command resumes at the first unfinished fold (every fold starts
from the same seed, so the results equal an uninterrupted run's); other settings are refused,
``--restart`` starts over.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

import numpy as np
import torch

from .. import fileio
from ..cli import refuse
from ..config import RavdessAVConfig
from ..data.ravdess import RAVDESS, CacheError, classification_metrics, confusion_matrix, fold_indices
from ..evaluate import plots, report
from ..registry import create_model
from ..runtime import resolve_device, seed_everything
from .engine import TrainOptions, train_fold

METRICS = ("macro_f1", "weighted_f1", "acc", "uar")
HEADERS = {"macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "acc": "accuracy", "uar": "UAR"}
DATASET_FLAGS = ("ravdess_cache", "ravdess_classes", "ravdess_folds", "ravdess_val_actors")
# flags that do not change a fold's result: a rerun may change them and still resume
NOT_SETTINGS = ("cache_dir", "out", "quiet", "num_workers", "restart", "max_folds", "device")
RUN_FILE = "run.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m merbench_plugins ravdess-train",
        description="Train and evaluate ravdess_av on a ravdess-prep cache over actor-independent folds; prints "
                    "per-fold and mean +- std macro-F1, weighted F1, accuracy and UAR and writes them to OUT.")
    p.add_argument("cache_dir", help="folder written by `python -m merbench_plugins ravdess-prep ROOT CACHE_DIR`")
    p.add_argument("--out", required=True, help="folder for results, curves, confusion matrix, predictions")
    p.add_argument("--folds", type=int, default=6, help="actor-independent folds (default 6: 4 test actors each of 24)")
    p.add_argument("--val_actors", type=int, default=None,
                   help="validation actors per fold, the actors after the test group (default: a fold's worth)")
    p.add_argument("--classes", "--num_classes", dest="classes", type=int, choices=[4, 8], default=4,
                   help="4 (default): neutral/happy/sad/angry; 8: all RAVDESS emotions")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs per fold (default 30)")
    p.add_argument("--batch_size", type=int, default=16, help="default 16")
    p.add_argument("--weight_decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--patience", "--early_stopping_patience", dest="patience", type=int, default=8,
                   help="early stopping: epochs without a better validation macro-F1 (default 8; 0 = off)")
    p.add_argument("--scheduler", default="cosine", choices=["cosine", "step", "none"],
                   help="learning-rate schedule (default cosine annealing over --epochs)")
    p.add_argument("--use_cosine_annealing", dest="scheduler", action="store_const", const="cosine",
                   help="same as --scheduler cosine (the seed's flag)")
    p.add_argument("--class_weights", default="none", choices=["none", "balanced"],
                   help="balanced: cross-entropy weighted n / (classes * count) by each fold's training labels "
                        "(4-class neutral has half the clips of the others); default none")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--max_folds", type=int, default=None, help="run only the first N folds (quick runs)")
    p.add_argument("--num_workers", type=int, default=0,
                   help="DataLoader worker processes (default 0: the cache is in memory, batches are slices)")
    p.add_argument("--restart", action="store_true",
                   help="discard the finished folds in OUT and start over (default: resume at the first "
                        "unfinished fold)")
    p.add_argument("--seed", type=int, default=42, help="seed, reset before every fold (default 42)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    RavdessAVConfig.add_arguments(p, skip=DATASET_FLAGS)
    return p


# ---------------------------------------------------------------------------------------------------
# outputs


def _actors(actors) -> str:
    return " ".join(f"{a:02d}" for a in actors)


def format_table(folds: List[Dict], mean: Dict, std: Dict) -> str:
    head = f"{'fold':<6}{'test actors':<14}{'best ep':>8}" + "".join(f"{HEADERS[m]:>18}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for row in folds:
        lines.append(f"{row['fold']:<6}{_actors(row['test_actors']):<14}{row['best_epoch']:>8}" +
                     "".join(f"{row[m]:>18.4f}" for m in METRICS))
    lines.append("-" * len(head))
    lines.append(f"{'mean +- std':<28}" + "".join(f"{mean[m]:.4f} +- {std[m]:.4f}".rjust(18) for m in METRICS))
    return "\n".join(lines)


def save_plots(out: str, history: List[Dict], confusion: np.ndarray, names: List[str]) -> List[str]:
    """confusion.png (row-normalised) and curves.png; nothing (and a note) without matplotlib."""
    plt = plots.pyplot()
    if plt is None:
        return []
    written = [plots.confusion_png(os.path.join(out, "confusion.png"), confusion, names, "test confusion, all folds")]

    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for fold in sorted({h["fold"] for h in history}):
        rows = [h for h in history if h["fold"] == fold]
        epochs = [h["epoch"] for h in rows]
        line, = ax_loss.plot(epochs, [h["train_loss"] for h in rows], label=f"fold {fold} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in rows], "--", color=line.get_color(), label=f"fold {fold} val")
        ax_f1.plot(epochs, [h["val_macro_f1"] for h in rows], color=line.get_color(), label=f"fold {fold}")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_f1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("validation macro-F1")
    ax_f1.legend(fontsize=7)
    fig.tight_layout()
    written.append(os.path.join(out, "curves.png"))
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


# ---------------------------------------------------------------------------------------------------


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """sklearn's 'balanced' class weights n / (classes * count); a class absent from ``labels`` gets 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)


@dataclass(frozen=True)
class RavdessRun:
    """One ``ravdess-train`` command, resolved once at the entry point: the flags as given (``run.json`` records
    them; a resume compares them), the model's settings and the engine's options."""

    flags: Mapping[str, Any]
    model: Mapping[str, Any]                # RavdessAVConfig's fields as used
    training: TrainOptions

    @property
    def out(self) -> str:
        return self.flags["out"]

    @property
    def seed(self) -> int:
        return self.flags["seed"]


def run_settings(run: RavdessRun, data) -> Dict:
    """What a fold's result depends on: the flags (less NOT_SETTINGS), the model config, the clips."""
    flags = {k: v for k, v in sorted(run.flags.items()) if k not in NOT_SETTINGS}
    clips = hashlib.sha1("\n".join(data.stems).encode()).hexdigest()[:16]
    return {"flags": flags, "config": dict(run.model), "clips": len(data.stems), "clips_sha1": clips,
            "cache": os.path.abspath(run.flags["cache_dir"])}


def _diff(old: Dict, new: Dict, prefix: str = "") -> List[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a} -> {b}")
    return out


def fold_path(out: str, k: int) -> str:
    return os.path.join(out, "folds", f"fold_{k + 1}.json")


def prepare_out(out: str, settings: Dict, restart: bool, n_folds: int) -> List[Dict]:
    """Write ``run.json`` and return the finished folds' records (a prefix: resume at the first missing).
    Raises ``ValueError`` when OUT holds a run with other settings (and no --restart)."""
    run_path = os.path.join(out, RUN_FILE)
    folds_dir = os.path.dirname(fold_path(out, 0))
    if restart and os.path.isdir(folds_dir):
        for name in os.listdir(folds_dir):
            if name.startswith("fold_") and name.endswith(".json"):
                os.unlink(os.path.join(folds_dir, name))
    elif os.path.exists(run_path):
        try:
            with open(run_path) as f:
                old = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"{run_path} is unreadable ({err}); pass --restart to start over") from None
        changed = _diff(old, json.loads(json.dumps(settings)))          # tuples -> lists, as on disk
        if changed:
            shown = ", ".join(changed[:6]) + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else "")
            raise ValueError(f"{out} holds a run with other settings ({shown}); pass --restart to start over "
                             f"there, or another --out")
    report.write_json(run_path, settings)
    done = []
    for k in range(n_folds):
        try:
            with open(fold_path(out, k)) as f:
                done.append(json.load(f))
        except (OSError, ValueError):
            break                                   # missing or half-written (never: writes are atomic)
    return done


def write_outputs(out: str, records: List[Dict], data, meta: Dict, plots: bool = False) -> List[str]:
    """results.csv/json, history.csv, predictions.csv, confusion.csv for the folds done (atomic writes)."""
    rows = [r["row"] for r in records]
    mean = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
    std = {m: float(np.std([r[m] for r in rows])) for m in METRICS}            # population std (ddof=0)
    history = [h for r in records for h in r["history"]]
    confusion = np.sum([np.asarray(r["confusion"], dtype=np.int64) for r in records], axis=0)
    report.write_csv(os.path.join(out, "results.csv"),
               ["fold", "test_actors", "val_actors", "n_train", "n_val", "n_test", "best_epoch", "val_macro_f1",
                *METRICS, "seconds"],
               [[r["fold"], _actors(r["test_actors"]), _actors(r["val_actors"]), r["n_train"], r["n_val"], r["n_test"],
                 r["best_epoch"], f"{r['val_macro_f1']:.4f}", *[f"{r[m]:.4f}" for m in METRICS], r["seconds"]]
                for r in rows] +
               [["mean", "", "", "", "", "", "", "", *[f"{mean[m]:.4f}" for m in METRICS], ""],
                ["std", "", "", "", "", "", "", "", *[f"{std[m]:.4f}" for m in METRICS], ""]])
    report.write_csv(os.path.join(out, "history.csv"), ["fold", "epoch", "train_loss", "val_loss", "val_macro_f1", "lr"],
               [[h["fold"], h["epoch"], f"{h['train_loss']:.5f}", f"{h['val_loss']:.5f}", f"{h['val_macro_f1']:.4f}",
                 f"{h['lr']:.3g}"] for h in history])
    report.write_csv(os.path.join(out, "predictions.csv"),
               ["fold", "clip", "label", "prediction"] + [f"p_{c}" for c in data.class_names],
               [p for r in records for p in r["predictions"]])
    report.write_csv(os.path.join(out, "confusion.csv"), ["true \\ predicted"] + data.class_names,
               [[c] + list(map(int, confusion[i])) for i, c in enumerate(data.class_names)])
    summary = dict(meta, folds=rows, mean=mean, std=std, std_note="population std over folds (ddof=0)",
                   metric_note="macro_f1 = unweighted mean of per-class F1; uar = mean per-class recall",
                   confusion=confusion.tolist())
    summary["train"] = dict(meta["train"], folds_done=len(rows))
    report.write_summary(os.path.join(out, "results.json"), summary)
    return save_plots(out, history, confusion, data.class_names) if plots else []


def run_fold(k: int, n_folds: int, data, loaders, ns, run: RavdessRun, device) -> Dict:
    """Train and test fold k; its record (table row, history, predictions, confusion) for fold_K.json."""
    train_loaders, eval_loaders = loaders
    fold = data.folds[k]
    train_idx, _, _ = fold_indices(data.items_kept, fold)
    weights = (balanced_weights(data.labels[train_idx], data.num_classes) if run.flags["class_weights"] == "balanced"
               else None)

    def build():
        model = create_model("ravdess_av", ns)
        model.set_class_weights(weights)
        return model

    seed_everything(run.seed)
    result = train_fold(build, train_loaders[k], eval_loaders[k], [data.fold_test_loaders[k]], run.training, device,
                        data.calculate_results, desc=f"fold {k + 1}/{n_folds}")
    test = result.test_results[0]
    labels = np.asarray(test["emolabels"], dtype=np.int64)
    probs = np.asarray(test["emoprobs"])
    preds = probs.argmax(1)
    metrics = classification_metrics(labels, preds, data.num_classes)
    row = {"fold": k + 1, "test_actors": list(fold.test), "val_actors": list(fold.val),
           "train_actors": list(fold.train), "n_train": len(train_loaders[k].sampler),
           "n_val": len(eval_loaders[k].sampler), "n_test": int(labels.size), "best_epoch": result.best_epoch,
           "val_macro_f1": float(result.best_metric), "seconds": round(result.seconds, 1),
           "class_weights": None if weights is None else [round(float(w), 4) for w in weights], **metrics}
    history = [{"fold": k + 1, "epoch": h["epoch"], "train_loss": h["train_loss"], "val_loss": h["eval_loss"],
                "val_macro_f1": h["eval_metric"], "lr": h["lr"]} for h in result.history]
    predictions = [[k + 1, name, data.class_names[y], data.class_names[p]] + [f"{x:.4f}" for x in pr]
                   for name, y, p, pr in zip(test["names"], labels, preds, probs)]
    print(f"fold {k + 1}/{n_folds}: test actors {_actors(fold.test)} | best epoch {result.best_epoch} "
          f"(val macro-F1 {result.best_metric:.4f}) | test " +
          " ".join(f"{HEADERS[m]} {metrics[m]:.4f}" for m in METRICS) + f" | {result.seconds:.0f} s")
    return {"row": row, "history": history, "predictions": predictions,
            "confusion": confusion_matrix(labels, preds, data.num_classes).tolist()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    ns = argparse.Namespace(**vars(args))
    ns.ravdess_cache, ns.ravdess_classes = args.cache_dir, args.classes
    ns.ravdess_folds, ns.ravdess_val_actors = args.folds, args.val_actors
    device = resolve_device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    try:
        cfg = RavdessAVConfig.from_args(ns).check()          # impossible settings refused before the cache is read
        opts = TrainOptions(epochs=args.epochs, lr=cfg.lr, weight_decay=args.weight_decay, scheduler=args.scheduler,
                            early_stop=args.patience, output_dim2=0, metric_name="emo",
                            amp=args.amp and device.type == "cuda", show_progress=not args.quiet)
        fileio.ensure_writable_dir(args.out, "--out")
        data = RAVDESS(ns)                     # sets ns.output_dim1 / output_dim2 / metric_name
        loaders = data.get_loaders()[:2]       # reads the cache once; bad files skipped, one line each
        run = RavdessRun(flags=dict(vars(args)), model=dict(vars(cfg)),
                         training=dataclasses.replace(opts, output_dim1=data.num_classes))
        n_folds = min(len(data.folds), args.max_folds or len(data.folds))
        os.makedirs(args.out, exist_ok=True)
        done = prepare_out(args.out, run_settings(run, data), args.restart, n_folds)
    except (ValueError, FileNotFoundError, CacheError) as err:
        return refuse(err)
    opts = run.training
    print(f"ravdess_av fusion={cfg.fusion} audio_encoder={cfg.audio_encoder} lr={cfg.lr:g} classes={data.class_names} "
          f"class_weights={args.class_weights} device={device}{' amp' if opts.amp else ''}; {n_folds} of "
          f"{len(data.folds)} folds")
    if done:
        print(f"resuming: folds 1-{len(done)} are done in {args.out}/folds (--restart to start over)")
    meta = {"model": "ravdess_av", "classes": data.class_names, "device": str(device), "amp": opts.amp,
            "config": vars(cfg), "lr": cfg.lr, "class_weights": args.class_weights,
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "weight_decay": args.weight_decay,
                      "patience": args.patience, "scheduler": args.scheduler, "seed": args.seed,
                      "folds": len(data.folds), "folds_run": n_folds},
            "cache": {"clips": len(data.stems), "skipped_files": [{"file": p, "reason": r} for p, r in data.skipped],
                      "crops": data.crops, "no_face": data.crops.get("no_face", 0)}}
    records = list(done)
    start = time.time()
    for k in range(len(done), n_folds):
        try:
            records.append(run_fold(k, n_folds, data, loaders, ns, run, device))
        except (ValueError, FileNotFoundError, CacheError) as err:   # e.g. weights that do not fit
            return refuse(err)
        report.write_json(fold_path(args.out, k), records[-1])          # atomic: a crash keeps every finished fold
        write_outputs(args.out, records, data, dict(meta, seconds=round(time.time() - start, 1)))

    rows = [r["row"] for r in records]
    mean = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
    std = {m: float(np.std([r[m] for r in rows])) for m in METRICS}
    print("\n" + format_table(rows, mean, std))
    if data.crops.get("no_face"):
        print(f"note: {data.crops['no_face']} of {len(data.stems)} clips had no detected face (central square used)")
    plots = write_outputs(args.out, records, data, dict(meta, seconds=round(time.time() - start, 1)), plots=True)
    print(f"\nwrote {args.out}/results.csv, results.json, history.csv, predictions.csv, confusion.csv"
          + "".join(f", {os.path.basename(p)}" for p in plots))
    return 0
