"""Standalone runner: MERBench's protocol on a MERBench-layout feature folder, without MERBench.

5-fold CV on train (early stopping on the eval metric), each fold's best checkpoint scores every
test set once, test predictions are averaged over folds, then scored. Writes MERBench-named result
files, a JSON summary, and prints a table.

    python -m merbench_plugins train DATA_DIR --model attention_robust_v2[,attention,...] [flags]
    python -m merbench_plugins train DATA_DIR --seeds 0,1,2 --parallel_seeds --out 'runs/seed{seed}'
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from collections import OrderedDict
from typing import List

import numpy as np
import torch

from .. import fileio, registry, runlock
from ..cli import refuse
from ..data.merbench_layout import DataError, FeatureDataset, SplitLoader
from .. import runtime
from ..evaluate import conditions, metrics, plots, predictions, report, robust_eval
from ..evaluate.metrics import mer_results, per_class, summarise
from . import engine, options, parallel, run_config, selection
from .run_config import ConfigError, RunConfig


def fold_indices(n: int, folds: int, seed: int):
    """MERBench's random_split_indexes: shuffled, K nearly equal folds, the last takes the remainder."""
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    if n < folds * 2:
        raise DataError(f"train has {n} samples: too few for {folds}-fold cross-validation")
    order = np.random.RandomState(seed).permutation(n)
    size = n // folds
    parts = [order[size * k: size * (k + 1)] for k in range(folds - 1)] + [order[size * (folds - 1):]]
    return [(np.concatenate([p for j, p in enumerate(parts) if j != k]), parts[k]) for k in range(folds)]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m merbench_plugins train",
                                description="Train and evaluate registered models on a MERBench-layout feature folder "
                                            "(label*.npz + features/<name>/<id>.npy) with MERBench's protocol.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_dir", help="dataset folder (see `python -m merbench_plugins synth` for an example)")
    p.add_argument("--model", default="attention_robust_v2",
                   help=f"model name or comma-separated list; registered: {', '.join(registry.list_models())}")
    g = p.add_argument_group("data")
    g.add_argument("--audio_feature", help="audio feature folder name (default: from synthetic.json)")
    g.add_argument("--text_feature", help="text feature folder name")
    g.add_argument("--video_feature", help="video feature folder name")
    g.add_argument("--feat_type", default="utt", choices=["utt", "frm_align", "frm_unalign"])
    g.add_argument("--label_path", help="label npz (default: DATA_DIR/label*.npz)")
    g.add_argument("--dataset", default="MER2023", help="dataset name used in result file names")
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds on train")
    g.add_argument("--emotions", default=None, metavar="E1,E2,...",
                   help="the emotion classes in index order; labels outside them are refused (default: MERBench's set "
                        "for MER2023-MER2026, else the labels found in train)")
    g = p.add_argument_group("run")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N")
    g.add_argument("--out", default="runs", help="output folder (result/, models/, summary JSON); {seed} in it becomes the run's seed "
                                                    "(one folder per seed with --seeds)")
    options.add_tune_flags(p)
    options.add_training_flags(p)
    options.add_model_flags(p)
    return p


def default_features(values) -> dict:
    """Feature names the command line left out, from DATA_DIR/synthetic.json (our generated sets name theirs):
    flag -> (name, source)."""
    info_path = os.path.join(values["data_dir"], "synthetic.json")
    names = ("audio_feature", "text_feature", "video_feature")
    if not os.path.isfile(info_path) or all(values.get(n) for n in names):
        return {}
    with open(info_path) as f:
        feats = json.load(f)["features"]
    level = "UTT" if values["feat_type"] == "utt" else "FRA"
    return {n: (feats[n.split("_")[0]].replace("-UTT", "-" + level), "data:synthetic.json")
            for n in names if not values.get(n)}


def resolve(parser, argv) -> List[RunConfig]:
    """The entry point's one resolution of the command line: a RunConfig per model and seed."""
    values = vars(parser.parse_args(argv))
    models = [m.strip() for m in values["model"].split(",") if m.strip()]
    for m in models:                            # unknown names fail before any work
        try:
            registry.get_model_entry(m)
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None
    grid = registry.repo_yaml_path()
    return run_config.resolve_runs(parser, argv, runner="train", models=models, values=values,
                                   derived=default_features(values),
                                   default_yaml=grid if os.path.isfile(grid) else None, out_flag="--out")


def load_data(cfg: RunConfig):
    ds = FeatureDataset(cfg.data_dir, *cfg.features, feat_type=cfg.feat_type, label_path=cfg.label_path,
                        dataset=cfg.dataset, emotions=cfg.emotions, nonfinite=cfg.nonfinite)
    splits = ds.splits()
    if "train" not in splits:
        raise DataError(f"{ds.label_file} has no train_corpus")
    train = ds.load("train")
    tests = [ds.load(s) for s in sorted(s for s in splits if s != "train")]
    for s in [train] + tests:
        dims = ds.dims(s)
        if dims != ds.dims(train):
            raise DataError(f"feature dims of {s.name} {dims} differ from train {ds.dims(train)}")
    return ds, train, tests


def model_setup(cfg: RunConfig, ds, train):
    """(model args, TrainOptions) of one run: the configuration plus what the data decides (dims, classes,
    whether there is valence)."""
    has_valence = train.has_valence
    data = dict(output_dim1=ds.num_classes, output_dim2=1 if has_valence else 0,
                metric_name="emoval" if has_valence else "emo")
    audio_dim, text_dim, video_dim = ds.dims(train)
    margs = cfg.namespace(audio_dim=audio_dim, text_dim=text_dim, video_dim=video_dim, **data)
    return margs, dataclasses.replace(cfg.training, **data)


def train_parallel(cfg: RunConfig, build, train, tests, splits, seeds, opts, device):
    """All folds at once (parallel.train_folds) on device-resident data; None, with a note, where unsupported."""
    try:
        folds = parallel.train_folds(build, parallel.DeviceData.from_split(train, device), splits,
                                     [parallel.DeviceData.from_split(t, device) for t in tests], opts, device,
                                     mer_results, seeds=seeds, batch_size=cfg.batch_size, keep_state=cfg.keep_state,
                                     compile=cfg.compile, desc=f"{cfg.model} {len(splits)} folds",
                                     evals=validation_sets(cfg, train, splits, seeds, device))
        parallel.announce(cfg.model, len(splits), quiet=cfg.quiet)
        return folds
    except parallel.ParallelUnsupported as exc:
        parallel.announce(cfg.model, len(splits), exc)
        return None


def validation_sets(cfg: RunConfig, train, splits, seeds, device):
    """The folds' ``--select_on`` validation sets as device rows (None for clean), built from the same
    loaders the sequential loop validates on."""
    return parallel.validation_sets([SplitLoader(train.subset(ev), cfg.batch_size) for _, ev in splits],
                                    cfg.select_on, seeds, device)


def train_seeds(runs: List[RunConfig], ds, train, tests, device):
    """``--parallel_seeds``: the folds of every seed at once, one stacked model of S x K splits (seed s's
    folds are fold_indices(n, K, s) with init and data-order seeds fold_seeds(s, K), as its own run's). Per run its
    K FoldResults, or Nones (with a note: the seeds then train one after another) where that cannot be."""
    first, seeds = runs[0], [r.seed for r in runs]
    which = f"seeds {','.join(map(str, seeds))}"
    try:
        if not first.fold_parallel:
            raise parallel.ParallelUnsupported("--no_fold_parallel")
        margs, opts = model_setup(first, ds, train)
        if any(r.settings != first.settings or r.training != first.training for r in runs[1:]):
            raise parallel.ParallelUnsupported("the seeds draw different settings (--tune); one stacked model "
                                               "needs one architecture")
        k_folds = first.folds
        splits = [sp for s in seeds for sp in fold_indices(len(train), k_folds, s)]
        fold_seeds = [fs for s in seeds for fs in runtime.fold_seeds(s, k_folds)]
        folds = parallel.train_folds(lambda: registry.create_model(first.model, margs),
                                     parallel.DeviceData.from_split(train, device), splits,
                                     [parallel.DeviceData.from_split(t, device) for t in tests], opts, device,
                                     mer_results, seeds=fold_seeds,
                                     evals=validation_sets(first, train, splits, fold_seeds, device),
                                     rng_seed=seeds[0], batch_size=first.batch_size, keep_state=first.keep_state,
                                     compile=first.compile, desc=f"{first.model} {len(seeds)} seeds x {k_folds} folds")
    except parallel.ParallelUnsupported as exc:
        print(f"note: {first.model}: training {which} one after another, not as one stacked model ({exc})", flush=True)
        return [None] * len(runs)
    print(f"parallel seeds: {which} of {first.model} trained at once ({len(seeds)} x {k_folds} folds, "
          f"one stacked model)", flush=True)        # even with --quiet: the launcher's logs say which path ran
    return [folds[j * k_folds:(j + 1) * k_folds] for j in range(len(seeds))]


def train_model(cfg: RunConfig, ds, train, tests, device, stamp, stage: fileio.StagedOutputs, folds=None):
    """MERBench's protocol for one model; returns its summary dict (``folds``: trained already, by train_seeds).
    Its files are written through ``stage``: in place only once the whole run is done."""
    margs, opts = model_setup(cfg, ds, train)
    model_name = cfg.model
    prefix = report.result_prefix(list(cfg.features), cfg.dataset, model_name, cfg.feat_type)
    test_loaders = [SplitLoader(t, cfg.batch_size) for t in tests]
    splits, seeds = fold_indices(len(train), cfg.folds, cfg.seed), runtime.fold_seeds(cfg.seed, cfg.folds)
    build = lambda: registry.create_model(model_name, margs)  # noqa: E731
    if cfg.fold_parallel and folds is None:
        folds = train_parallel(cfg, build, train, tests, splits, seeds, opts, device)
    for k, (tr_idx, ev_idx) in enumerate(splits if folds is None else []):
        runtime.seed_everything(seeds[k])
        result = engine.train_fold(build, SplitLoader(train.subset(tr_idx), cfg.batch_size, shuffle=True, seed=seeds[k]),
                                   selection.eval_loader(SplitLoader(train.subset(ev_idx), cfg.batch_size),
                                                         cfg.select_on, seeds[k]), test_loaders, opts, device,
                                   mer_results, desc=f"{model_name} fold {k + 1}/{cfg.folds}", keep_state=cfg.keep_state)
        folds = (folds or []) + [result]
    stds = robust_eval.feature_std(SplitLoader(train, cfg.batch_size)) if cfg.keep_state else None   # noise scale: train
    classes = tuple(ds.vocab) or predictions.default_classes(opts.output_dim1, cfg.dataset, cfg.emotions)
    eval_metric = float(np.mean([f.best_metric for f in folds]))      # cross-validation, for `ensemble --top`
    for k, result in enumerate(folds):
        if cfg.savemodel:
            staged, final = stage.new(os.path.join("models", f"{prefix}_fold{k + 1}_{stamp}.pt"))
            result.save_checkpoint(staged, model_name, margs, k + 1, feature_std=stds, config=cfg.record(),
                                   classes=classes, eval_metric=result.best_metric, metric_name=opts.metric_name)
            result.checkpoint = final
        if not cfg.quiet:
            print(f"  {model_name} fold {k + 1}/{cfg.folds}: best epoch {result.best_epoch}, "
                  f"eval {opts.metric_name} {result.best_metric:.4f} ({result.seconds:.1f}s)", flush=True)
    tests_summary, by_condition, by_class, files = {}, {}, {}, []
    for j, t in enumerate(tests):
        results, tag = metrics.average_folds(folds, j, mer_results, opts.average)
        tests_summary[t.name], by_class[t.name] = summarise(results), per_class(results, classes)
        avg = conditions.fold_average([f.test_results[j] for f in folds], opts.average)
        by_condition[t.name] = conditions.per_condition(
            avg["names"], avg.get("emoprobs", []), avg.get("emolabels", []), avg.get("valpreds", []),
            avg.get("vallabels", []), conditions.sample_groups(test_loaders[j], cfg.data_dir, t.name), mer_results)
        staged, final = stage.new(os.path.join("result", f"{t.name}_{prefix}_{tag}_{stamp}.npz"))
        pred = predictions.from_results(t.names, results, classes, eval_metric=eval_metric,
                                        metric_name=opts.metric_name, split=t.name)
        report.atomic_save_npz(staged, args=np.array(vars(margs), dtype=object), **pred.arrays())
        files.append(final)
        if pred.dummy_labels() and not cfg.quiet:
            print(f"note: {model_name}: {pred.dummy_note(t.name)}")
        if cfg.flags.get("plots") and by_class[t.name]:
            plots.confusion_png(stage.path(os.path.join("result", f"{t.name}_{prefix}_{stamp}_confusion.png")),
                                by_class[t.name]["confusion"], by_class[t.name]["classes"], f"{model_name} {t.name}")
    robust_rows = []
    if cfg.robust_eval:
        models = engine.restore_models(folds, build, device)
        robust_rows = robust_eval.robust_evaluate(
            models, OrderedDict((t.name, loader) for t, loader in zip(tests, test_loaders)), device, stds=stds,
            conditions=robust_eval.all_conditions(cfg.robust_kinds), seed=cfg.robust_seed,
            output_dim1=opts.output_dim1, output_dim2=opts.output_dim2, model_name=model_name,
            progress=not cfg.quiet, amp=opts.amp)
    return {
        "model": model_name, "dataset": cfg.dataset, "feat_type": cfg.feat_type, "features": list(cfg.features),
        "settings": dict(cfg.settings), "protocol": cfg.protocol_record(), "seed": cfg.seed, "metric": opts.metric_name,
        "cv": engine.cv_summary(folds), "tests": tests_summary, "tests_by_condition": by_condition,
        "per_class": by_class, "result_files": files,
        "folds": [f.record(k, tests={t.name: summarise(r) for t, r in zip(tests, f.test_results)})
                  for k, f in enumerate(folds)],
        "seconds": float(sum(f.seconds for f in folds)), "robust": robust_rows, "fold_seeds": seeds,
        "nonfinite": {s.name: s.nonfinite for s in [train] + list(tests) if s.nonfinite}, "config": cfg.record(),
    }


def robust_eval_digest(rows, test="test1") -> str:
    """Compact view: emoval (or F1) per model under each condition of one test set."""
    metric = "emoval" if any(r.get("emoval") is not None for r in rows) else "f1"
    sel = [r for r in rows if r["test"] == test] or rows
    conds = list(dict.fromkeys((r["kind"], r["condition"]) for r in sel))
    models = list(dict.fromkeys(r["model"] for r in sel))
    value = {(r["model"], r["kind"], r["condition"]): r.get(metric) for r in sel}
    headers = ["condition"] + models
    body = [[f"{k}={c}"] + [value.get((m, k, c)) for m in models] for k, c in conds]
    return f"robust evaluation on {sel[0]['test']} ({metric}):\n" + report.markdown_table(headers, body)


def stamps(n: int):
    """n distinct timestamps (one per seed run: their file names never collide in a shared folder)."""
    out = []
    while len(out) < n:
        t = report.timestamp()
        if t in out:
            time.sleep(0.002)
            continue
        out.append(t)
    return out


def write_report(cfg: RunConfig, summaries: dict, tests, stamp):
    """One run's comparison table (per condition group too): printed and written to summary_<stamp>.md."""
    table = report.comparison_table({m: s["tests"] for m, s in summaries.items()}, [t.name for t in tests])
    for t in tests:     # per condition group (recorded conditions, else missing patterns)
        by_model = {m: s["tests_by_condition"][t.name] for m, s in summaries.items()}
        if len(next(iter(by_model.values()))) > 2:
            for metric in ("f1", "emoval") if t.has_valence else ("f1",):
                table += f"\n\n{t.name} {metric} by condition:\n" + conditions.condition_table(by_model, metric)
    with fileio.StagedOutputs(cfg.out) as stage:
        report.atomic_write_text(stage.new(f"summary_{stamp}.md")[0], table + "\n")
        print(table)
        if cfg.robust_eval:
            rows = [r for s in summaries.values() for r in s["robust"]]
            paths = robust_eval.write_reports(rows, stage.path("robust"), f"robust_{stamp}")
            print("\n" + robust_eval_digest(rows))
            print("robust evaluation: " + ", ".join(stage.final(p) for p in paths.values()))


def run(configs: List[RunConfig]) -> dict:
    """Model name -> summary (with --seeds: seed -> that, each seed as its own --seed run)."""
    first = configs[0]
    for cfg in configs:                         # an unwritable output folder fails before any work
        fileio.ensure_writable_dir(cfg.out, "--out")
    device = runtime.resolve_device(first.device)
    if first.threads > 0:
        torch.set_num_threads(first.threads)
    ds, train, tests = load_data(first)
    runlock.claim(*(c.out for c in configs))    # RunFolderBusy: another live process trains into one of them
    models = list(dict.fromkeys(c.model for c in configs))
    seeds = list(first.seeds)
    run_stamps = stamps(len(seeds))
    summaries = [OrderedDict() for _ in seeds]
    for m in models:
        runs = [c for c in configs if c.model == m]                   # one per seed, in --seeds order
        stacked = (train_seeds(runs, ds, train, tests, device) if first.parallel_seeds and len(runs) > 1
                   else [None] * len(runs))
        for cfg, stamp, folds, out in zip(runs, run_stamps, stacked, summaries):
            with fileio.StagedOutputs(cfg.out) as stage:      # nothing of a run in place until all of it is
                out[m] = train_model(cfg, ds, train, tests, device, stamp, stage, folds=folds)
                staged, out[m]["summary_file"] = stage.new(f"summary_{m}_{stamp}.json")
                report.write_summary(staged, out[m])
    for cfg, stamp, out in zip(configs, run_stamps, summaries):      # the first model's configs: one per seed
        if len(seeds) > 1:
            print(f"\nseed {cfg.seed}:")
        write_report(cfg, out, tests, stamp)
    if first.flags.get("seeds") is None:
        return summaries[0]
    return OrderedDict((s, out) for s, out in zip(seeds, summaries))


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(resolve(parser, argv))
    except (ConfigError, DataError, FloatingPointError, ValueError) as exc:
        return refuse(exc)
    finally:
        runlock.release()                        # the run folders it held (called in-process too)
    return 0


if __name__ == "__main__":
    sys.exit(main())
