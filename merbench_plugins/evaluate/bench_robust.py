"""`python -m merbench_plugins bench-robust`: the corruption benchmark, seeds x models x settings.

Generates ``synth --preset robust-mild`` and ``robust-strong`` (once), trains every variant with
the standalone runner (``--epochs 20`` like the check that counts, declared defaults), one job per
(setting, variant, seed), JOBS at a time, then writes mean ± std of weighted F1 overall (test1
clean, test2 corrupted, test3 speaker-shifted) and per test2 condition to a markdown file, and
optionally between ``<!-- bench-robust:start/end -->`` markers of the README.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

from ..data.synthetic import generate
from ..fileio import OutputError, ensure_writable_dir
from ..launch import queue as launch
from .report import atomic_write_text, markdown_table

MAIN = (("attention", "attention", ()), ("V2", "attention_robust_v2", ()), ("V4", "attention_robust_v4", ()),
        ("mrg_net", "mrg_net", ()))
# each lever switched against its default in turn (the ablation rows)
ABLATION = MAIN + (
    ("V2 + modality dropout 0.3", "attention_robust_v2", ("--use_modality_dropout",)),
    ("V2 no corruption aug", "attention_robust_v2", ("--corrupt_aug", "0")),
    ("V2 no reliability", "attention_robust_v2", ("--reliability_weight", "0")),
    ("V4 LayerNorm encoder (old default)", "attention_robust_v4", ("--improved_encoder",)),
    ("V4 LN: no modality dropout", "attention_robust_v4", ("--improved_encoder", "--no_modality_dropout")),
    ("V4 LN: no corruption aug", "attention_robust_v4", ("--improved_encoder", "--corrupt_aug", "0")),
    ("V4 LN: no reliability", "attention_robust_v4", ("--improved_encoder", "--reliability_weight", "0")),
    ("mrg_net seed (no dropout/aug; sum)", "mrg_net", ("--modality_dropout", "0", "--corrupt_aug", "0",
                                                       "--no_fusion_mean")),
    ("V2 select on corrupted val", "attention_robust_v2", ("--select_on", "corrupted")),
    ("V4 LN: select on corrupted val", "attention_robust_v4", ("--improved_encoder", "--select_on", "corrupted")),
)
MARKERS = ("<!-- bench-robust:start -->", "<!-- bench-robust:end -->")


def job_dir(out, setting, variant, seed):
    return os.path.join(out, setting, variant.replace(" ", "_").replace("/", "-"), f"seed{seed}")


def bench_job(out, data, setting, variant, model, flags, seed, epochs, extra) -> launch.Job:
    """One standalone run on the launcher's queue (a finished run is skipped, a crashed one retried)."""
    d = job_dir(out, setting, variant, seed)
    cmd = [sys.executable, "-m", "merbench_plugins", "train", data, "--model", model, "--epochs", str(epochs),
           "--seed", str(seed), "--threads", "1", "--quiet", "--out", d, *flags]
    return launch.Job(name=f"{setting}/{variant}", label=f"seed={seed}", command=cmd, run_dir=d, lock_dirs=[d],
                      meta=dict(setting=setting, variant=variant, model=model, seed=seed, flags=list(flags),
                                extra=list(extra)))


def load(d):
    paths = [p for p in glob.glob(os.path.join(d, "summary_*_*.json")) if not p.endswith(".md")]
    return json.load(open(paths[0])) if paths else None


def mean_std(values):
    v = [x for x in values if x is not None and x == x]
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "-"


def tables(out, settings, variants, seeds) -> str:
    parts = []
    for setting in settings:
        runs = {name: [load(job_dir(out, setting, name, s)) for s in seeds] for name, _, _ in variants}
        runs = {k: [r for r in v if r] for k, v in runs.items()}
        base = [r["tests"]["test2"]["f1"] for r in runs.get("attention", [])]
        rows = []
        for name, rs in runs.items():
            t2 = [r["tests"]["test2"]["f1"] for r in rs]
            gain = f"{100 * (np.mean(t2) - np.mean(base)):+.1f}" if t2 and base and name != "attention" else ""
            rows.append([name, len(rs)] + [mean_std([r["tests"][t]["f1"] for r in rs]) for t in ("test1", "test2", "test3")]
                        + [mean_std([r["tests"]["test2"].get("emoval") for r in rs]), gain])
        parts.append(f"**robust-{setting}**: weighted F1, mean ± std over seeds {', '.join(map(str, seeds))} "
                     f"(test1 clean, test2 corrupted, test3 speaker-shifted)\n\n"
                     + markdown_table(["model", "seeds", "test1 F1", "test2 F1", "test3 F1", "test2 emoval",
                                       "test2 F1 vs attention (points)"], rows))
        groups = [g for g in next((rs[0]["tests_by_condition"]["test2"] for rs in runs.values() if rs), {}) if g != "all"]
        crow = []
        for g in groups:
            n = next(rs[0]["tests_by_condition"]["test2"][g]["n"] for rs in runs.values() if rs)
            crow.append([f"{g} (n={n})"] + [mean_std([r["tests_by_condition"]["test2"].get(g, {}).get("f1") for r in rs])
                                             for rs in runs.values()])
        parts.append(f"robust-{setting} test2 weighted F1 by condition\n\n" + markdown_table(["condition"] + list(runs), crow))
    return "\n\n".join(parts) + "\n"


def update_readme(path, text):
    with open(path) as f:
        readme = f.read()
    start, end = readme.find(MARKERS[0]), readme.find(MARKERS[1])
    if start < 0 or end < start:
        raise SystemExit(f"error: {path} has no {MARKERS[0]} ... {MARKERS[1]} block to fill")
    atomic_write_text(path, readme[:start + len(MARKERS[0])] + "\n" + text + readme[end:])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins bench-robust", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-robust", help="data, runs and the table go here")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--settings", default="mild,strong", help="corruption strengths (robust-<setting> presets)")
    p.add_argument("--variants", default="main", choices=["main", "ablation"], help="main: the 4 models; ablation: "
                   "plus each lever off")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=MODEL:FLAGS",
                   help="another variant, e.g. 'V2 md0.3=attention_robust_v2:--modality_dropout 0.3' (repeatable)")
    p.add_argument("--only", help="comma-separated variant names to run (default: all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train", type=int, default=800, help="training samples of the generated sets")
    p.add_argument("--jobs", type=int, default=2, help="parallel runs on CPU (one thread each)")
    p.add_argument("--gpus", help="comma-separated GPU ids: one run per GPU at a time instead of --jobs CPU slots")
    p.add_argument("--md", help="write the tables here (default OUT/bench_robust.md)")
    p.add_argument("--readme", help="also put them between the bench-robust markers of this README")
    p.add_argument("--report_only", action="store_true", help="only rebuild the tables from finished runs")
    a, extra = p.parse_known_args(argv)
    md = a.md or os.path.join(a.out, "bench_robust.md")
    try:
        if not a.report_only:
            ensure_writable_dir(a.out, "--out")
        ensure_writable_dir(os.path.dirname(os.path.abspath(md)), "--md" if a.md else "--out")
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in a.seeds.split(",")]
    settings = a.settings.split(",")
    variants = list(MAIN if a.variants == "main" else ABLATION)
    for spec in a.extra:
        name, _, rest = spec.partition("=")
        model, _, flags = rest.partition(":")
        variants.append((name, model, tuple(flags.split())))
    if a.only:
        variants = [v for v in variants if v[0] in a.only.split(",") or v[0] == "attention"]
    jobs = []
    for setting in settings:
        data = os.path.join(a.out, "data", setting)
        if not os.path.isfile(os.path.join(data, "conditions.json")):
            generate(data, n_train=a.train, n_test=300, seed=0, frames=False, preset=f"robust-{setting}")
        jobs += [bench_job(a.out, data, setting, name, model, flags, seed, a.epochs, extra)
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
    text = tables(a.out, settings, variants, seeds)
    atomic_write_text(md, text)
    if a.readme:
        update_readme(a.readme, text)
    print(text + f"\nwrote {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
