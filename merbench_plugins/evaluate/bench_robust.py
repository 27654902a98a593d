"""`python -m merbench_plugins bench-robust`: the robustness benchmark, seeds x models on one preset.

``--preset validation`` (where defaults and designs are chosen) or ``--preset test`` (the reported
tables: its held-out corruption families were never looked at while choosing anything). Generates the
preset once (``synth --preset``), trains every variant with the standalone runner (``--epochs 20``,
declared defaults), one job per (variant, seed), JOBS at a time, then scores each run's fold-averaged
test2 predictions per condition group from ``conditions.json``: weighted F1, mean ± std over seeds,
clean test1, test2 overall and its seen / held-out / missing-only parts, per corruption kind and per
missing pattern. Writes a markdown file, and optionally the tables between the README's
``<!-- bench-robust:start/end -->`` markers.

    python -m merbench_plugins bench-robust --preset test --seeds 0,1,2 --readme README.md --md docs/bench_test.md
"""
import argparse
import glob
import json
import os
import sys
from collections import OrderedDict

import numpy as np

from ..cli import refuse
from ..data import benchmark
from ..data.merbench_layout import CONDITIONS_FILE
from ..fileio import OutputError, ensure_writable_dir
from ..launch import queue as launch
from ..metrics import classification_metrics
from .report import atomic_write_text, markdown_table

BASELINE = "attention + recipe"        # what our architectures claim a gain over
MAIN = (("attention", "attention", ()),
        (BASELINE, "attention", ("--robust_recipe",)),
        ("V2", "attention_robust_v2", ()),
        ("V4", "attention_robust_v4", ()))
MRG = (("mrg_net", "mrg_net", ()),)
# each lever of V2 switched against its default (the ablation rows)
ABLATION = MAIN + (
    ("V2 no typicality", "attention_robust_v2", ("--typicality_weight", "0")),
    ("V2 no agreement", "attention_robust_v2", ("--agreement_weight", "0")),
    ("V2 no experts", "attention_robust_v2", ("--unimodal_weight", "0", "--agreement_weight", "0")),
    ("V2 no imagination", "attention_robust_v2", ("--no_imagine",)),
    ("V2 no modality dropout", "attention_robust_v2", ("--no_modality_dropout",)),
    ("V2 no corruption aug", "attention_robust_v2", ("--corrupt_aug", "0")),
    ("V2 no uncertainty fusion", "attention_robust_v2", ("--no_uncertainty_fusion",)),
    ("V2 + expert mix", "attention_robust_v2", ("--expert_mix",)),
)
VARIANT_SETS = {"main": MAIN, "main+mrg": MAIN + MRG, "ablation": ABLATION}
MARKERS = ("<!-- bench-robust:start -->", "<!-- bench-robust:end -->")
PARTS = ("seen", "held-out", "missing", "clean")


def job_dir(out, preset, variant, seed):
    return os.path.join(out, preset, variant.replace(" ", "_").replace("/", "-").replace("+", "plus"), f"seed{seed}")


def bench_job(out, data, preset, variant, model, flags, seed, epochs, extra) -> launch.Job:
    """One standalone run on the launcher's queue (a finished run is skipped, a crashed one retried)."""
    d = job_dir(out, preset, variant, seed)
    cmd = [sys.executable, "-m", "merbench_plugins", "train", data, "--model", model, "--epochs", str(epochs),
           "--seed", str(seed), "--threads", "1", "--quiet", "--out", d, *flags]
    return launch.Job(name=f"{preset}/{variant}", label=f"seed={seed}", command=cmd, run_dir=d, lock_dirs=[d],
                      meta=dict(preset=preset, variant=variant, model=model, seed=seed, flags=list(flags),
                                extra=list(extra)))


def load_predictions(d, split):
    """(names, predicted class, gold class) of a finished run's fold-averaged ``split``, or None."""
    paths = sorted(glob.glob(os.path.join(d, "result", f"{split}_*.npz")))
    if not paths:
        return None
    r = np.load(paths[-1], allow_pickle=True)
    return list(r["names"]), np.argmax(r["emoprobs"], 1), np.asarray(r["emolabels"])


def condition_rows(condition: str):
    """The table rows a test2 sample counts in: its part (seen / held-out / missing / clean), and either its
    corruption kinds ('held-out: cauchy', 'held-out: cauchy on A') or its missing pattern ('missing: A',
    'only V left')."""
    group, _, rest = condition.partition("/")
    rows = [f"part: {group}"]
    kinds = [p.split(":") for p in rest.split("+") if ":" in p]
    corruptions = [(k, t) for k, t in kinds if k != "missing"]
    for kind, targets in corruptions:
        rows += [f"{group}: {kind}", f"{group}: on {'all' if targets == 'ATV' else targets}"]
    if not corruptions:
        for kind, targets in kinds:
            rows.append(f"missing: {targets}" if len(targets) == 1
                        else f"only {''.join(c for c in 'ATV' if c not in targets)} left")
    return rows


def scores(names, pred, gold, conditions, rows_of=condition_rows):
    """{row: weighted F1} over the samples of each row (plus 'all')."""
    members = OrderedDict([("all", np.arange(len(names)))])
    by_row = {}
    for i, n in enumerate(names):
        for row in rows_of(conditions.get(n, "unknown/unknown")):
            by_row.setdefault(row, []).append(i)
    members.update((k, np.asarray(v)) for k, v in by_row.items())
    return {k: (classification_metrics(gold[idx], pred[idx])["weighted_f1"], len(idx)) for k, idx in members.items()}


def mean_std(values):
    v = [x for x in values if x is not None and x == x]
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "-"


def collect(out, preset, data, variants, seeds):
    """variant -> list over finished seeds of {'test1': F1, 'test3': F1, 'test2': {row: (F1, n)}}."""
    with open(os.path.join(data, CONDITIONS_FILE)) as f:
        conditions = json.load(f)
    runs = OrderedDict()
    for name, _, _ in variants:
        runs[name] = []
        for s in seeds:
            d = job_dir(out, preset, name, s)
            loaded = {t: load_predictions(d, t) for t in ("test1", "test2", "test3")}
            if any(v is None for v in loaded.values()):
                continue
            entry = {t: classification_metrics(loaded[t][2], loaded[t][1])["weighted_f1"] for t in ("test1", "test3")}
            entry["test2"] = scores(*loaded["test2"], conditions.get("test2", {}))
            runs[name].append(entry)
    return runs


def row_order(rows):
    """'all', the parts, then kinds by part (held-out first), then missing patterns."""
    def key(r):
        if r == "all":
            return (0, r)
        if r.startswith("part: "):
            return (1, PARTS.index(r[6:]) if r[6:] in PARTS else 9)
        part = r.split(":")[0]
        rank = {"held-out": 2, "seen": 3}.get(part, 4)
        return (rank, (" on " in r), r)
    return sorted(rows, key=key)


def tables(out, preset, data, variants, seeds):
    """(summary, by_condition) markdown: one row per variant (parts and gains), then test2 per condition."""
    runs = collect(out, preset, data, variants, seeds)
    held = benchmark.PRESETS[preset]["held"] if preset in benchmark.PRESETS else "held-out"
    base = [r["test2"].get("part: held-out", (None,))[0] for r in runs.get(BASELINE, [])]
    plain = [r["test2"].get("part: held-out", (None,))[0] for r in runs.get("attention", [])]
    head = ["model", "seeds", "test1 F1 (clean)", "test2 F1", "seen", "held-out", "missing only", "test3 F1",
            "held-out vs attention + recipe", "held-out vs attention"]
    rows = []
    for name, rs in runs.items():
        part = lambda p: [r["test2"].get(f"part: {p}", (None,))[0] for r in rs]  # noqa: E731
        h = [x for x in part("held-out") if x is not None]
        gain = lambda ref: f"{100 * (np.mean(h) - np.mean(ref)):+.1f}" if h and ref and None not in ref else ""  # noqa: E731
        rows.append([name, len(rs), mean_std([r["test1"] for r in rs]), mean_std([r["test2"]["all"][0] for r in rs]),
                     mean_std(part("seen")), mean_std(part("held-out")), mean_std(part("missing")),
                     mean_std([r["test3"] for r in rs]),
                     "" if name == BASELINE else gain(base), "" if name == "attention" else gain(plain)])
    summary = (f"**{preset} preset** (held-out families: {held}): weighted F1, mean ± std over seeds "
            f"{', '.join(map(str, seeds))}; test1 clean, test2 corrupted (seen = train-seen families, held-out = "
            f"families no augmentation saw, missing only = zero vectors), test3 unseen speakers; gains in points\n\n"
            + markdown_table(head, rows))
    all_rows = row_order({k for rs in runs.values() for r in rs for k in r["test2"]} - {"all"})
    crow = []
    for k in all_rows:
        n = next((r["test2"][k][1] for rs in runs.values() for r in rs if k in r["test2"]), 0)
        crow.append([f"{k} (n={n})"] + [mean_std([r["test2"].get(k, (None,))[0] for r in rs]) for rs in runs.values()])
    by_condition = f"{preset} test2 weighted F1 by condition (mean ± std over seeds)\n\n" + markdown_table(
        ["condition"] + list(runs), crow)
    return summary + "\n", by_condition + "\n"


def update_readme(path, text):
    with open(path) as f:
        readme = f.read()
    start, end = readme.find(MARKERS[0]), readme.find(MARKERS[1])
    if start < 0 or end < start:
        raise SystemExit(f"error: {path} has no {MARKERS[0]} ... {MARKERS[1]} block to fill")
    atomic_write_text(path, readme[:start + len(MARKERS[0])] + "\n" + text + readme[end:])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins bench-robust", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="validation", choices=list(benchmark.PRESETS),
                   help="validation: for choosing defaults and designs; test: for the reported tables only; -weak: the same pair in worlds whose single modalities are weak")
    p.add_argument("--out", default="runs/bench-robust", help="data, runs and the tables go here")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="main", choices=sorted(VARIANT_SETS),
                   help="main: attention, attention + recipe, V2, V4; main+mrg: and mrg_net; ablation: main plus each "
                        "V2 lever against its default")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=MODEL:FLAGS",
                   help="another variant, e.g. 'V2 md0.5=attention_robust_v2:--modality_dropout 0.5' (repeatable)")
    p.add_argument("--only", help="comma-separated variant names to run (default: all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train", type=int, default=1200, help="training samples of the generated set")
    p.add_argument("--test", type=int, default=400, help="samples of test1 and test3")
    p.add_argument("--test2", type=int, default=1200, help="samples of the corrupted test2")
    p.add_argument("--dims", default=",".join(map(str, benchmark.MER2023_DIMS)), help="audio,text,video feature dims")
    p.add_argument("--jobs", type=int, default=2, help="parallel runs on CPU (one thread each)")
    p.add_argument("--gpus", help="comma-separated GPU ids: one run per GPU at a time instead of --jobs CPU slots")
    p.add_argument("--md", help="write the tables here (default OUT/bench_robust_<preset>.md)")
    p.add_argument("--readme", help="also put them between the bench-robust markers of this README")
    p.add_argument("--report_only", action="store_true", help="only rebuild the tables from finished runs")
    a, extra = p.parse_known_args(argv)
    md = a.md or os.path.join(a.out, f"bench_robust_{a.preset}.md")
    try:
        if not a.report_only:
            ensure_writable_dir(a.out, "--out")
        ensure_writable_dir(os.path.dirname(os.path.abspath(md)), "--md" if a.md else "--out")
    except OutputError as exc:
        return refuse(exc)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
        dims = tuple(int(d) for d in a.dims.split(","))
        assert len(dims) == 3 and min(dims) > 0
    except (ValueError, AssertionError):
        p.error(f"--seeds takes integers like 0,1,2 and --dims three positive integers, got {a.seeds!r}, {a.dims!r}")
    variants = list(VARIANT_SETS[a.variants])
    for spec in a.extra:
        name, _, rest = spec.partition("=")
        model, _, flags = rest.partition(":")
        if not name or not model:
            p.error(f"--extra takes NAME=MODEL:FLAGS, got {spec!r}")
        variants.append((name, model, tuple(flags.split())))
    if a.only:
        keep = a.only.split(",")
        variants = [v for v in variants if v[0] in keep]
    data = os.path.join(a.out, "data", a.preset)
    if not os.path.isfile(os.path.join(data, CONDITIONS_FILE)):
        benchmark.generate(data, a.preset, n_train=a.train, n_test=a.test, n_test2=a.test2, dims=dims)
    jobs = [bench_job(a.out, data, a.preset, name, model, flags, seed, a.epochs, extra)
            for name, model, flags in variants for seed in seeds]
    failed = []
    if not a.report_only:
        try:
            slots = launch.parse_slots(a.gpus, str(a.jobs))
        except launch.LaunchError as exc:
            p.error(str(exc))
        for job in launch.deal(jobs, slots):
            # the device goes before the pass-through flags, so an explicit --device there still wins
            device = "cpu" if job.device == launch.CPU else f"cuda:{job.device}"
            job.command += ["--device", device, *job.meta["extra"]]
        q = launch.Queue(jobs, threads="1")
        try:
            failed = q.run()
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to resume (finished runs are skipped)", file=sys.stderr)
            return 130
        if failed:
            print(f"{len(failed)} of {len(jobs)} runs failed (their logs are named above); rerun the same "
                  "command to retry them: finished runs are skipped", file=sys.stderr)
        if q.skipped:
            print(f"{len(q.skipped)} of {len(jobs)} runs not run: another live process trains them (named above); "
                  "rerun the same command once it has finished", file=sys.stderr)
            failed += [(job, launch.SKIPPED) for job in q.skipped]     # not done either: exit 1
    summary, by_condition = tables(a.out, a.preset, data, variants, seeds)
    text = summary + "\n" + by_condition
    atomic_write_text(md, text)
    if a.readme:       # the README keeps the one summary table; the per-condition table lives in --md
        update_readme(a.readme, summary)
    print(text + f"\nwrote {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
