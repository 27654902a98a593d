"""Results on disk and on screen: atomic writes, JSON summaries, MERBench result files, tables."""
import json
import math
import os
import time

import numpy as np

from .. import runtime
from ..fileio import atomic_path, atomic_save_npz, atomic_write_text, csv_text, write_csv  # noqa: F401  (re-exported)


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"


def unique_path(path: str) -> str:
    """Never overwrite an earlier run: add -1, -2, ... before the extension if needed."""
    root, ext = os.path.splitext(path)
    k, out = 1, path
    while os.path.exists(out):
        out, k = f"{root}-{k}{ext}", k + 1
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def write_json(path: str, obj) -> str:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")
    return path


def write_summary(path: str, summary: dict) -> str:
    """A run's summary JSON, with the versions and hardware it ran on (``environment``)."""
    return write_json(path, dict(summary, environment=runtime.environment()))


def result_prefix(features, dataset, model, feat_type, e2e_name=None) -> str:
    """MERBench's result-file prefix: features:<sorted set>_dataset:<d>_model:<m>+<feat_type>+<e2e>."""
    feature_name = "+".join(sorted(set(f for f in features if f is not None)))
    return f"features:{feature_name}_dataset:{dataset}_model:{model}+{feat_type}+{e2e_name}"


def fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(headers, rows) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]  # no rows: headers
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def comparison_table(summaries: dict, test_names, metrics=("f1", "acc", "val_mse", "emoval")) -> str:
    """Rows = models, columns = test set x metric; ``summaries``: model -> {test: {metric: value}}. A column
    no model has a value for is left out (valence columns of emotion-only datasets)."""
    columns = [(t, m) for t in test_names for m in metrics
               if any(m in summaries[model].get(t, {}) for model in summaries)]
    headers = ["model"] + [f"{t} {m}" for t, m in columns]
    rows = [[model] + [summaries[model].get(t, {}).get(m) for t, m in columns] for model in summaries]
    return markdown_table(headers, rows)
