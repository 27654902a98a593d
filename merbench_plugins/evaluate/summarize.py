"""`python -m merbench_plugins summarize RUN_DIR...`: mean ± std over seeds of many runs' summary JSONs.

Finds every run summary under the given folders (recursively: the standalone runner's
``summary_<model>_<time>.json`` and main-robust.py's ``<save_root>-*/summary/*.json``), groups them
by the variant recorded beside the runs (``variant.json`` / ``variant.txt`` in a run's folder or a
parent of it, written by run_ablation.sh and train_v*.sh) or by model, splits every group whose runs
differ in anything but the seed (model, settings, dataset, features, protocol: they are not seeds of
one run; a warning names the fields), counts a seed found twice in one group once (the newest summary,
with a warning and a note in summary.md naming both), and writes
``summary.csv`` + ``summary.md`` (the latest) and timestamped copies (never overwritten).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from ..cli import refuse
from . import report

METRICS = ("f1", "acc", "val_mse", "emoval")
VARIANT_FILES = ("variant.json", "variant.txt")


class Run:
    """One finished run: its summary JSON and the group it belongs to."""

    def __init__(self, path: str, summary: dict, variant: Optional[str], order: Optional[int]):
        self.path, self.summary, self.variant, self.order = path, summary, variant, order
        self.model = str(summary.get("model"))
        self.seed = summary.get("seed")

    def scores(self) -> Dict[str, Dict[str, Optional[float]]]:
        """test set -> metric -> value; cross-validation comes first as the pseudo test set ``cv``."""
        out = {"cv": dict(self.summary.get("cv") or {})}
        out.update({t: dict(m or {}) for t, m in (self.summary.get("tests") or {}).items()})
        return out


def is_run_summary(obj) -> bool:
    return isinstance(obj, dict) and "model" in obj and isinstance(obj.get("tests"), dict)


def read_variant(folder: str):
    """(name, order) from variant.json / variant.txt in ``folder``; (None, None) when there is none."""
    path = os.path.join(folder, "variant.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                info = json.load(f)
            order = info.get("order")
            return str(info["variant"]), (int(order) if order is not None else None)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"warning: ignoring {path}: not a JSON object with a 'variant' ({exc})", file=sys.stderr)
    path = os.path.join(folder, "variant.txt")
    if os.path.isfile(path):
        with open(path) as f:
            name = f.readline().strip()
        if name:
            return name, None
    return None, None


def find_variant(path: str, root: str):
    """The nearest variant file in the run's folder or a parent, up to (and including) ``root``."""
    root = os.path.abspath(root)
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        name, order = read_variant(folder)
        if name is not None:
            return name, order
        if folder == root or os.path.dirname(folder) == folder or not folder.startswith(root):
            return None, None
        folder = os.path.dirname(folder)


def collect(paths: List[str]) -> List[Run]:
    """Every run summary JSON under ``paths`` (folders are searched recursively; files taken as given)."""
    seen, runs = set(), []
    for top in paths:
        if os.path.isfile(top):
            candidates, root = [top], os.path.dirname(os.path.abspath(top))
        elif os.path.isdir(top):
            root, candidates = top, []
            for d, dirs, files in os.walk(top):
                dirs[:] = sorted(x for x in dirs if not x.startswith("."))
                candidates += [os.path.join(d, f) for f in sorted(files)
                               if f.endswith(".json") and not f.startswith(".") and f not in VARIANT_FILES]
        else:
            raise FileNotFoundError(f"run folder not found: {top}")
        for path in candidates:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            try:
                with open(path) as f:
                    obj = json.load(f)
            except (OSError, ValueError) as exc:
                print(f"warning: skipping {path}: {exc}", file=sys.stderr)
                continue
            if is_run_summary(obj):
                runs.append(Run(path, obj, *find_variant(path, root)))
    return runs


def group_runs(runs: List[Run], by: str) -> Dict[str, List[Run]]:
    """Group name -> runs; groups in their recorded order (variant files), then by name."""
    groups: Dict[str, List[Run]] = {}
    for r in runs:
        key = (r.variant or r.model) if by == "variant" else r.model
        groups.setdefault(key, []).append(r)
    if by == "model":
        for key, members in groups.items():
            variants = sorted({r.variant for r in members if r.variant})
            if len(variants) > 1:
                print(f"warning: group {key!r} mixes variants {', '.join(variants)}; use --group-by variant to "
                      f"keep them apart", file=sys.stderr)

    def rank(key):
        orders = [r.order for r in groups[key] if r.order is not None]
        return (min(orders) if orders else float("inf"), key)
    return {k: sorted(groups[k], key=lambda r: (str(r.seed), r.path)) for k in sorted(groups, key=rank)}


CONFIG_FIELDS = ("model", "dataset", "features", "feat_type", "metric", "settings", "protocol")


def configuration(run: Run) -> Dict[str, str]:
    """Everything recorded in a run's summary that decides its result, except the seed: field -> JSON."""
    flat = {}
    for field in CONFIG_FIELDS:
        value = run.summary.get(field)
        if isinstance(value, dict):
            flat.update({f"{field}.{k}": json.dumps(v, sort_keys=True) for k, v in value.items()})
        else:
            flat[field] = json.dumps(value, sort_keys=True)
    folds = run.summary.get("folds")
    flat["folds"] = json.dumps(len(folds) if isinstance(folds, list) else None)
    return flat


def split_configurations(groups: Dict[str, List[Run]]) -> Dict[str, List[Run]]:
    """Split every group whose runs differ in anything but the seed (they are not seeds of one run),
    saying so; the parts are named by the fields that differ."""
    out: Dict[str, List[Run]] = {}
    for key, members in groups.items():
        parts: Dict[str, List[Run]] = {}
        for r in members:
            parts.setdefault(json.dumps(configuration(r), sort_keys=True), []).append(r)
        if len(parts) == 1:
            out[key] = members
            continue
        flats = [json.loads(k) for k in parts]
        differ = sorted(f for f in set().union(*flats) if len({flat.get(f) for flat in flats}) > 1)
        print(f"warning: group {key!r} holds runs of {len(parts)} different configurations (they differ in "
              f"{', '.join(differ)}), not seeds of one: split into {len(parts)} rows", file=sys.stderr)
        for flat, runs in zip(flats, parts.values()):
            label = ", ".join(f"{f.split('.', 1)[-1]}={json.loads(flat[f]) if f in flat else '-'}" for f in differ)
            out[f"{key} [{label}]"] = runs
    return out


def drop_repeated_seeds(groups: Dict[str, List[Run]]):
    """Count each seed of a variant once: of its runs with one seed (the same run trained twice, e.g. a rerun
    beside an orphan that kept training), the newest summary stays. Returns (groups, one note per seed dropped)."""
    out, notes = {}, []
    for key, members in groups.items():
        by_seed: Dict[str, List[Run]] = {}
        for r in members:
            same = json.dumps([r.variant, r.seed]) if r.seed is not None else f"#{id(r)}"   # variants: told apart
            by_seed.setdefault(same, []).append(r)
        keep = []
        for runs in by_seed.values():
            runs = sorted(runs, key=lambda r: (os.path.getmtime(r.path), r.path))
            keep.append(runs[-1])
            if len(runs) > 1:
                notes.append(f"group {key!r}: seed {runs[-1].seed} has {len(runs)} run summaries; counted once, the "
                             f"newest {runs[-1].path} (ignored: {', '.join(r.path for r in runs[:-1])})")
        out[key] = [r for r in members if r in keep]
    return out, notes


def mean_std(values):
    """(mean, sample std, n) over the non-missing values; std is None for a single value."""
    xs = np.array([v for v in values if v is not None], dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return None, None, 0
    return float(xs.mean()), (float(xs.std(ddof=1)) if xs.size > 1 else None), int(xs.size)


def aggregate(groups: Dict[str, List[Run]], metrics=METRICS, tests=None):
    """Columns (test, metric) with at least one value, and per group {(test, metric): (mean, std, n)}."""
    names: List[str] = []
    for members in groups.values():
        for r in members:
            names += [t for t in r.scores() if t not in names]
    names = [t for t in names if tests is None or t in tests]
    stats = {}
    for key, members in groups.items():
        scores = [r.scores() for r in members]
        stats[key] = {(t, m): mean_std([s.get(t, {}).get(m) for s in scores]) for t in names for m in metrics}
    columns = [(t, m) for t in names for m in metrics if any(stats[k][(t, m)][2] for k in stats)]
    return columns, stats


def format_cell(mean, std, digits=4) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def seeds_text(members: List[Run]) -> str:
    return " ".join(str(r.seed) for r in members)


def key_columns(by: str):
    return [by, "model"] if by != "model" else ["model"]


def key_cells(key, members, by: str):
    models = "/".join(sorted({r.model for r in members}))
    return [key, models] if by != "model" else [key]


def to_markdown(groups, columns, stats, by: str) -> str:
    headers = key_columns(by) + ["runs", "seeds"] + [f"{t} {m}" for t, m in columns]
    rows = [key_cells(key, members, by) + [str(len(members)), seeds_text(members)] +
            [format_cell(*stats[key][c][:2]) for c in columns] for key, members in groups.items()]
    return report.markdown_table(headers, rows)


def to_csv(groups, columns, stats, by: str) -> str:
    headers = key_columns(by) + ["runs", "seeds"] + [f"{t}_{m}_{s}" for t, m in columns for s in ("mean", "std")]
    rows = []
    for key, members in groups.items():
        row = key_cells(key, members, by) + [len(members), seeds_text(members)]
        for c in columns:
            mean, std, _ = stats[key][c]
            row += [None if mean is None else repr(mean), None if std is None else repr(std)]
        rows.append(row)
    return report.csv_text(headers, rows)


def write_outputs(out_dir: str, csv_text: str, md_text: str):
    """Timestamped copies (never overwritten) and summary.csv / summary.md (the latest), all atomic."""
    stamp = report.timestamp()
    written = []
    for name, text in (("summary.csv", csv_text), ("summary.md", md_text)):
        root, ext = os.path.splitext(name)
        copy = report.unique_path(os.path.join(out_dir, f"{root}_{stamp}{ext}"))
        report.atomic_write_text(copy, text)
        report.atomic_write_text(os.path.join(out_dir, name), text)
        written += [os.path.join(out_dir, name), copy]
    return written


def build_parser():
    p = argparse.ArgumentParser(prog="python -m merbench_plugins summarize",
                                description="Mean ± std over seeds of run summaries (JSON) found under RUN_DIRs, "
                                            "per test set and metric; writes summary.csv and summary.md.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders searched recursively (or JSON files)")
    p.add_argument("--out", help="where summary.csv / summary.md go (default: the first RUN_DIR)")
    p.add_argument("--group-by", dest="group_by", default="variant", choices=["variant", "model"],
                   help="variant: the name in variant.json/variant.txt beside the runs (model when none)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated metrics")
    p.add_argument("--tests", default=None, help="comma-separated test sets (cv, test1, ...; default: all found)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        runs = collect(args.run_dirs)
    except FileNotFoundError as exc:
        return refuse(exc)
    if not runs:
        return refuse(f"no run summaries (JSON files with 'model' and 'tests') under {', '.join(args.run_dirs)}; "
                      f"did the runs finish? Their logs say why not")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    tests = [t.strip() for t in args.tests.split(",") if t.strip()] if args.tests else None
    groups, repeated = drop_repeated_seeds(split_configurations(group_runs(runs, args.group_by)))
    for note in repeated:
        print(f"warning: {note}", file=sys.stderr)
    columns, stats = aggregate(groups, metrics, tests)
    if not columns:
        return refuse(f"none of the {len(runs)} runs has a value for metrics {metrics} on tests {tests or 'any'}")
    md = to_markdown(groups, columns, stats, args.group_by)
    out_dir = args.out or (args.run_dirs[0] if os.path.isdir(args.run_dirs[0]) else os.path.dirname(args.run_dirs[0]))
    counted = sum(len(members) for members in groups.values())
    header = (f"Mean ± sample std over seeds of {counted} runs in {len(groups)} groups "
              f"(by {args.group_by}); cv = cross-validation on train.\n\n"
              + "".join(f"Note: {note}.\n\n" for note in repeated))
    files = write_outputs(out_dir, to_csv(groups, columns, stats, args.group_by), header + md + "\n")
    print(md)
    print(f"\n{counted} runs, {len(groups)} groups -> {files[0]}, {files[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
