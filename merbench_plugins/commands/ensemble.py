"""`python -m merbench_plugins ensemble FILE... --out ens.npz`: average result or prediction files by sample name.

    python -m merbench_plugins ensemble runs/seed*/result/test1_*.npz --out ens/test1.npz
    python -m merbench_plugins ensemble a.npz b.npz c.npz --weights 2,1,1 --out ens/test1.npz
    python -m merbench_plugins ensemble saved-*/result/test1_*.npz --top 5 --out ens/test1.npz

Any mix of seeds, models and feature sets: the files' class probabilities (and valence, where they have
it) are averaged sample by sample, matched by name. Files whose sample names or class names differ are
refused (one line naming them). ``--top N`` keeps the N files with the best validation score they carry
(cross-validation of the run that wrote them).
"""
import argparse
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..cli import refuse
from ..evaluate import predictions
from ..evaluate.metrics import mer_results, summarise
from ..evaluate.predictions import PredictionError, Predictions


def build_parser():
    p = argparse.ArgumentParser(prog="python -m merbench_plugins ensemble",
                                description="Average result/prediction npz files by sample name (npz + csv).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("files", nargs="+", help="result files (runners, main-robust.py) or prediction files (predict, ensemble)")
    p.add_argument("--out", required=True, help="the averaged predictions (.npz; a .csv is written beside it)")
    p.add_argument("--weights", help="comma-separated weight per file, in the order given (default: equal)")
    p.add_argument("--top", type=int, default=None, metavar="N",
                   help="keep only the N files with the best validation score they carry")
    return p


def _differ(a: Predictions, b: Predictions) -> Optional[str]:
    if tuple(a.classes) != tuple(b.classes):
        return f"classes {list(a.classes)} vs {list(b.classes)}"
    only_a, only_b = sorted(set(a.names) - set(b.names)), sorted(set(b.names) - set(a.names))
    if only_a or only_b:
        example = (only_a or only_b)[0]
        return (f"sample names: {len(only_a)} only in the first, {len(only_b)} only in the second "
                f"(e.g. {example!r})")
    return None


def top_files(preds: List[Predictions], n: int) -> List[int]:
    """Indices of the n files with the best validation score (higher is better, as every metric is kept)."""
    if n < 1:
        raise PredictionError(f"--top must be at least 1, got {n}")
    missing = [p.source for p in preds if p.eval_metric is None]
    if missing:
        raise PredictionError(f"--top needs a validation score in every file; {missing[0]} carries none "
                              f"(files written before this version, or by upstream main-release.py)")
    metrics = sorted({p.metric_name for p in preds})
    if len(metrics) > 1:
        raise PredictionError(f"--top compares one validation metric; the files carry {', '.join(metrics)}")
    return sorted(range(len(preds)), key=lambda i: -preds[i].eval_metric)[:n]


def average(preds: Sequence[Predictions], weights: Sequence[float]) -> Predictions:
    """Weighted mean of probabilities and valence by name, in the first file's order; files checked first."""
    first = preds[0]
    for p in preds[1:]:
        why = _differ(first, p)
        if why:
            raise PredictionError(f"{p.source} and {first.source} differ in {why}: ensemble files of one test set "
                                  f"and one label set only")
    aligned = [p.select(first.names) for p in preds]
    w = np.asarray(weights, dtype=np.float64)
    probs = [(p.emo_probs, wi) for p, wi in zip(aligned, w) if p.emo_probs is not None]
    vals = [(p.valpreds, wi) for p, wi in zip(aligned, w) if p.valpreds is not None]
    mean = lambda xs: None if not xs else sum(x * wi for x, wi in xs) / sum(wi for _, wi in xs)  # noqa: E731
    if vals and len(vals) < len(preds):
        print(f"note: valence from the {len(vals)} of {len(preds)} files that predict it")
    labels = next((p for p in aligned if p.emolabels is not None), first)
    splits = {p.split for p in preds if p.split}
    return Predictions(first.names, mean(probs), mean(vals), tuple(first.classes), labels.emolabels, labels.vallabels,
                       None, None, splits.pop() if len(splits) == 1 else None)


@dataclass(frozen=True)
class EnsembleRequest:
    """The command line resolved once: the files, one weight per file, --top and the output."""

    files: Tuple[str, ...]
    weights: Tuple[float, ...]
    top: Optional[int]
    out: str

    @classmethod
    def resolve(cls, ns: argparse.Namespace) -> "EnsembleRequest":
        files, weights = tuple(ns.files), (1.0,) * len(ns.files)
        if ns.weights:
            try:
                weights = tuple(float(x) for x in ns.weights.split(","))
            except ValueError:
                raise PredictionError(f"--weights takes comma-separated numbers, got {ns.weights!r}") from None
            if len(weights) != len(files) or min(weights) < 0 or sum(weights) <= 0:
                raise PredictionError(f"--weights needs {len(files)} non-negative numbers (one per file, not all 0), "
                                      f"got {ns.weights!r}")
        return cls(files, weights, ns.top, ns.out)


def run(req: EnsembleRequest) -> Predictions:
    preds = [predictions.load(f) for f in req.files]
    weights = list(req.weights)
    if req.top is not None:
        kept = top_files(preds, req.top)
        preds, weights = [preds[i] for i in kept], [weights[i] for i in kept]
        for p in preds:
            print(f"  kept {p.metric_name} {p.eval_metric:.4f}  {p.source}")
    out = average(preds, weights)
    npz, csv_path = predictions.save(req.out, out, sources=np.asarray([p.source for p in preds]),
                                     weights=np.asarray(weights, dtype=np.float64))
    line = f"ensemble of {len(preds)} files, {len(out)} samples -> {npz}, {csv_path}"
    if out.emolabels is not None and out.emo_probs is not None and not out.dummy_labels():
        vals = out.vallabels is not None and out.valpreds is not None
        results, _ = mer_results(out.emo_probs, out.emolabels, out.valpreds if vals else [],
                                 out.vallabels if vals else [])
        line += "; " + ", ".join(f"{k} {v:.4f}" for k, v in summarise(results).items())
    print(line)
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(EnsembleRequest.resolve(args))
    except PredictionError as exc:
        return refuse(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
