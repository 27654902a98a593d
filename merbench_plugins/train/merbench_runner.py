"""`main-robust.py` inside a MERBench checkout: MERBench's own data pipeline and models, our loop.

A superset of ``main-release.py``: same flags, same result files (``result/test{k}_...npz``), plus
every registry flag, seeds, the ``set_epoch`` hook, the model's own classification loss, valence -10
masked out of losses and metrics, ``--gpu -1`` / no CUDA -> CPU, ``--amp``, progress bars and a JSON
summary. ``--protocol ours`` (default): AdamW, LR schedule, early stopping, fold-averaged probabilities;
``--protocol merbench``: main-release.py's Adam + coupled L2, constant rate, every epoch with the best
eval epoch kept, fold-averaged logits. Run from the MERBench root (the installed launcher is).
"""
import argparse
import dataclasses
import os
import re
import sys
import time
from typing import List

import numpy as np
import torch

from .. import fileio, registry, runlock
from ..cli import refuse
from ..constants import MISSING_VALENCE
from ..data import checks
from .. import runtime
from ..evaluate import conditions, metrics, plots, predictions, report
from ..evaluate.metrics import per_class, summarise
from . import engine, options, parallel, release_flags, run_config, selection
from .run_config import ConfigError, RunConfig


MERBENCH_TUNE_YAML = "toolkit/model-tune.yaml"
# MERBench's sequence models (its MODEL_MAP comments: mfn/graph_mfn/mfm/mctn aligned frames, mult both)
FRAME_ONLY = {"mfn": "frm_align", "graph_mfn": "frm_align", "mfm": "frm_align", "mctn": "frm_align",
              "mult": "frm_align or frm_unalign"}


def build_parser(release_script: str = release_flags.RELEASE_SCRIPT):
    """main-robust.py's flags, plus those of the toolkit's own ``release_script`` that it lacks (read from
    that file where it exists: MER2024/2025/2026's ``--train_snr``, ``--test_snr``, ``--fusion_topn``, ...)."""
    p = argparse.ArgumentParser(prog="main-robust.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("MERBench (main-release.py) flags")
    g.add_argument("--dataset", default=None, help="MER2023, IEMOCAPFour, IEMOCAPSix, CMUMOSI, CMUMOSEI, SIMS, SIMSv2, MELD, ...")
    g.add_argument("--train_dataset", default=None, help="cross-corpus: train dataset")
    g.add_argument("--test_dataset", default=None, help="cross-corpus: test dataset")
    g.add_argument("--save_root", default="./saved", help="where result/ and model/ go")
    g.add_argument("--debug", action="store_true", help="MERBench debug mode (first 100 samples)")
    g.add_argument("--save_iters", type=int, default=int(1e8), help="(accepted for compatibility)")
    g.add_argument("--audio_feature", default=None)
    g.add_argument("--text_feature", default=None)
    g.add_argument("--video_feature", default=None)
    g.add_argument("--feat_type", default=None, help="utt, frm_align or frm_unalign")
    g.add_argument("--feat_scale", type=int, default=None, help="pre-compress frames by this factor")
    g.add_argument("--e2e_name", default=None)
    g.add_argument("--e2e_dim", type=int, default=None)
    g.add_argument("--n_classes", type=int, default=None)
    g.add_argument("--model", default=None, help="any MERBench model or one of ours")
    g.add_argument("--lr_adjust", default="case1", help="(accepted for compatibility; one LR for all)")
    g.add_argument("--num_workers", type=int, default=0)
    g.add_argument("--print_iters", type=int, default=int(1e8), help="(accepted for compatibility)")
    g.add_argument("--gpu", type=int, default=0, help="GPU id; -1 = CPU (also used when CUDA is missing)")
    g = p.add_argument_group("merbench-plugins training flags")
    options.add_tune_flags(p, merbench=True)
    options.add_training_flags(p, merbench=True)
    options.add_model_flags(p)
    release_flags.add_release_flags(p, release_script)
    return p


def masked_calculate_results(calculate_results):
    """Wrap a MERBench dataloader's calculate_results so unknown valence (-10) never enters the MSE."""
    def calc(emo_probs=(), emo_labels=(), val_preds=(), val_labels=()):
        if len(val_labels):
            val_preds, val_labels = np.asarray(val_preds).reshape(-1), np.asarray(val_labels).reshape(-1)
            known = val_labels != MISSING_VALENCE
            if not known.any():   # no valence at all (MER2023 test3): score emotions, report val as nan
                results, text = calculate_results(emo_probs, emo_labels, np.zeros(1), np.zeros(1))
                results.update(valmse=float("nan"), valpreds=val_preds, vallabels=val_labels)
                return results, re.sub(r"val:[-0-9.e+]+", "val:nan", text)
            if not known.all():
                results, text = calculate_results(emo_probs, emo_labels, val_preds[known], val_labels[known])
                results.update(valpreds=val_preds, vallabels=val_labels)
                return results, text
        return calculate_results(emo_probs, emo_labels, val_preds, val_labels)
    return calc


def fold_indices(loader, dataset):
    """The sample indices a MERBench loader draws from ``dataset`` (SubsetRandomSampler or sequential)."""
    if loader.dataset is not dataset:
        raise parallel.ParallelUnsupported("the folds' loaders do not share one dataset")
    indices = getattr(loader.sampler, "indices", None)
    if indices is None and isinstance(loader.sampler, torch.utils.data.SequentialSampler):
        indices = range(len(dataset))
    if indices is None:
        raise parallel.ParallelUnsupported(f"unknown sampler {type(loader.sampler).__name__} (expected SubsetRandomSampler)")
    return np.asarray(list(indices), dtype=np.int64)


def cpu_cuda_shim():
    """Upstream models hard-code CUDA (attention's ``.cuda()``, mctn's ``.to('cuda')``). On a CPU-only
    run, make Tensor/Module ``.cuda()`` no-ops and ``.to('cuda...')`` go to the CPU, so that every
    MERBench model still trains with ``--gpu -1``."""
    if torch.cuda.is_available():
        return
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    for cls in (torch.Tensor, torch.nn.Module):
        cls.to = _cuda_to_cpu(cls.to)
    print("note: no CUDA here; .cuda() and .to('cuda') in MERBench models stay on the CPU for this run")


def _cuda_to_cpu(to):
    def cpu_to(self, *args, **kwargs):
        args = tuple("cpu" if _is_cuda(a) else a for a in args)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)
    return cpu_to


def _is_cuda(device) -> bool:
    return isinstance(device, (str, torch.device)) and str(device).startswith("cuda")


def derived_flags(values) -> dict:
    """main-release.py's pre-analysis: feat_scale per feat_type and the save_root suffix (flag -> (value, source))."""
    if values["model"] is None or values["dataset"] is None and values["train_dataset"] is None:
        raise ConfigError("--model and --dataset are required (see --help)")
    if values["feat_type"] == "utt" and values["model"] in FRAME_ONLY:
        raise ConfigError(f"MERBench's {values['model']} takes frame features, not utterance vectors: use "
                          f"--feat_type {FRAME_ONLY[values['model']]} with the -FRA features")
    derived = {}
    if values["feat_scale"] is None:
        derived["feat_scale"] = ({"utt": 1, "frm_align": 6, "frm_unalign": 12}.get(values["feat_type"], 1), "derived")
    save_root = values["save_root"] + ("-cross" if values["train_dataset"] is not None else "")
    save_root += "-noise" if values.get("test_snr") is not None else ""        # flags of MER2024-2026's main-release.py
    save_root += "-multitop" if values.get("fusion_topn") is not None else ""
    features = [f for f in (values["audio_feature"], values["text_feature"], values["video_feature"]) if f is not None]
    suffix = {0: "-others", 1: "-unimodal", 2: "-bimodal", 3: "-trimodal"}[len(set(features))]
    derived["save_root"] = (save_root + suffix, "derived: main-release.py's save_root suffix")
    return derived


def resolve(parser, argv) -> List[RunConfig]:
    """The entry point's one resolution of the command line (run from the MERBench root): a RunConfig per seed."""
    values = vars(parser.parse_args(argv))
    derived = derived_flags(values)
    return run_config.resolve_runs(parser, argv, runner="main-robust", models=[values["model"]], values=values,
                                   derived=derived, default_yaml=MERBENCH_TUNE_YAML, upstream_grid=MERBENCH_TUNE_YAML,
                                   out_flag="--save_root")


def check_inputs(cfg: RunConfig, num_classes: int, train_loaders, eval_loaders, test_loaders) -> dict:
    """MERBench's datasets as loaded, before training: labels within the dataloader's classes, no non-finite
    feature (refused with the samples named, or zeroed as missing with --nonfinite missing). Returns the
    zeroed counts per split. Datasets of non-feature models (RAVDESS clips) are left to their own checks."""
    try:
        if registry.get_model_entry(cfg.model).dataset != "feat":
            return {}
    except KeyError:
        pass                                     # a MERBench model: feature data
    feature_names = dict(zip(checks.MODALITY_KEYS, cfg.features))
    datasets = [("train", train_loaders[0].dataset)]
    datasets += [("eval", loader.dataset) for loader in eval_loaders[:1] if loader.dataset is not train_loaders[0].dataset]
    datasets += [(f"test{j + 1}", loader.dataset) for j, loader in enumerate(test_loaders)]
    out = {}
    for split, dataset in datasets:
        zeroed = checks.check_dataset(dataset, split, num_classes, cfg.nonfinite, feature_names)
        if zeroed:
            print(f"note: {split}: non-finite features treated as missing (--nonfinite missing): {zeroed}", flush=True)
            out[split] = zeroed
    return out


class Run:
    """One seed's run: its configuration, MERBench's namespace and loaders for it, and what its outputs need."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def prepare_run(cfg: RunConfig, get_dataloaders, config) -> Run:
    """Everything before training, as a separate ``--seed seed`` run does it (same order of random draws:
    MERBench's dataloader splits the folds with the seed's global RNG)."""
    runtime.seed_everything(cfg.seed)
    print(f"settings of {cfg.model}: {cfg.settings_from}")
    config.dataset = cfg.dataset
    # MERBench's own code reads an argparse namespace, and its dataloader writes the data's dims and metric into it
    args = cfg.namespace()
    print("args:", args, flush=True)

    features = [f for f in cfg.features if f is not None]
    prefix = report.result_prefix(features, cfg.dataset, cfg.model, cfg.feat_type, cfg.flags.get("e2e_name"))
    if cfg.flags.get("train_dataset") is not None:
        prefix += f"_train:{cfg.flags['train_dataset']}_test:{cfg.flags['test_dataset']}"
    if cfg.flags.get("test_snr") is not None:
        prefix += f"_trainsnr:{cfg.flags.get('train_snr')}_testsnr:{cfg.flags['test_snr']}"
    if cfg.flags.get("fusion_topn") is not None:
        prefix += f"_fusiontopn:{cfg.flags['fusion_topn']}_modality:{cfg.flags.get('fusion_modality')}"

    print("====== Reading Data =======", flush=True)
    dataloader_class = get_dataloaders(args)
    train_loaders, eval_loaders, test_loaders = dataloader_class.get_loaders()
    args.audio_dim, args.text_dim, args.video_dim = train_loaders[0].dataset.get_featdim()
    calc = masked_calculate_results(dataloader_class.calculate_results)
    # datasets with disjoint test sets per fold (RAVDESS actor folds) expose them per fold: each fold
    # is scored on its own test set and the folds are summarised as mean ± std, not averaged
    fold_tests = getattr(getattr(dataloader_class, "dataloader", dataloader_class), "fold_test_loaders", None) or None
    nonfinite = check_inputs(cfg, getattr(args, "output_dim1", 0) or 0, train_loaders, eval_loaders, test_loaders)
    opts = dataclasses.replace(cfg.training, output_dim1=args.output_dim1, output_dim2=args.output_dim2,
                               metric_name=args.metric_name)
    return Run(cfg=cfg, args=args, features=features, prefix=prefix,
               train_loaders=train_loaders, eval_loaders=eval_loaders, test_loaders=test_loaders, calc=calc,
               fold_tests=fold_tests, opts=opts, config=config, nonfinite=nonfinite)


def train_parallel(run: Run, get_models, device):
    """All folds at once on device tensors built from MERBench's own datasets; None, with a note, where unsupported."""
    cfg, train_loaders, eval_loaders = run.cfg, run.train_loaders, run.eval_loaders
    try:
        if run.fold_tests:
            raise parallel.ParallelUnsupported("per-fold test sets (fold_test_loaders)")
        dataset = train_loaders[0].dataset
        splits = [(fold_indices(tr, dataset), fold_indices(ev, dataset)) for tr, ev in zip(train_loaders, eval_loaders)]
        data = parallel.DeviceData.from_dataset(dataset, device)
        tests = [parallel.DeviceData.from_dataset(t.dataset, device) for t in run.test_loaders]
        seeds = runtime.fold_seeds(cfg.seed, len(splits))
        folds = parallel.train_folds(lambda: get_models(run.args), data, splits, tests, run.opts, device, run.calc,
                                     seeds=seeds, evals=parallel.validation_sets(eval_loaders, cfg.select_on, seeds, device),
                                     batch_size=train_loaders[0].batch_size, keep_state=cfg.keep_state,
                                     compile=cfg.compile, desc=f"{cfg.model} {len(splits)} folds")
        parallel.announce(cfg.model, len(splits))
        return folds
    except parallel.ParallelUnsupported as exc:
        parallel.announce(cfg.model, len(train_loaders), exc)
        return None


def train_run(run: Run, get_models, device):
    """The K folds of one run: fold-parallel where possible, else one after another."""
    cfg, folds = run.cfg, []
    if cfg.fold_parallel:
        folds = train_parallel(run, get_models, device) or []
    seeds = runtime.fold_seeds(cfg.seed, len(run.train_loaders))
    for k in range(0 if folds else len(run.train_loaders)):
        runtime.seed_everything(seeds[k])
        fold = engine.train_fold(lambda: get_models(run.args), run.train_loaders[k],
                                 selection.eval_loader(run.eval_loaders[k], cfg.select_on, seeds[k]),
                                 [run.fold_tests[k]] if run.fold_tests else run.test_loaders, run.opts,
                                 device, run.calc, desc=f"{cfg.model} fold {k + 1}/{len(run.train_loaders)}",
                                 keep_state=cfg.keep_state)
        folds.append(fold)
    return folds


def train_seeds(runs: List[Run], get_models, device):
    """``--parallel_seeds``: every seed's folds (as MERBench's dataloader split them for that seed) at once,
    one stacked model; per run its folds, or Nones (with a note: one seed after another) where it cannot be."""
    first, seeds = runs[0].cfg, [r.cfg.seed for r in runs]
    which = f"seeds {','.join(map(str, seeds))}"
    try:
        if not first.fold_parallel:
            raise parallel.ParallelUnsupported("--no_fold_parallel")
        if any(r.fold_tests for r in runs):
            raise parallel.ParallelUnsupported("per-fold test sets (fold_test_loaders)")
        if any(r.cfg.settings != first.settings or r.opts != runs[0].opts for r in runs[1:]):
            raise parallel.ParallelUnsupported("the seeds draw different settings (MERBench's models draw from "
                                               "model-tune.yaml per seed); one stacked model needs one architecture")
        dataset = runs[0].train_loaders[0].dataset
        names = lambda d: list(getattr(d, "names", range(len(d))))  # noqa: E731
        if any(names(r.train_loaders[0].dataset) != names(dataset) for r in runs[1:]):
            raise parallel.ParallelUnsupported("the seeds' training sets differ")
        splits = [(fold_indices(tr, tr.dataset), fold_indices(ev, ev.dataset))
                  for r in runs for tr, ev in zip(r.train_loaders, r.eval_loaders)]
        k_folds = [len(r.train_loaders) for r in runs]
        fold_seeds = [fs for s, n in zip(seeds, k_folds) for fs in runtime.fold_seeds(s, n)]
        folds = parallel.train_folds(
            lambda: get_models(runs[0].args), parallel.DeviceData.from_dataset(dataset, device), splits,
            [parallel.DeviceData.from_dataset(t.dataset, device) for t in runs[0].test_loaders], runs[0].opts, device,
            runs[0].calc, seeds=fold_seeds, rng_seed=seeds[0],
            evals=parallel.validation_sets([ev for r in runs for ev in r.eval_loaders], first.select_on, fold_seeds,
                                           device),
            batch_size=runs[0].train_loaders[0].batch_size, keep_state=first.keep_state,
            compile=first.compile, desc=f"{first.model} {len(seeds)} seeds x {k_folds[0]} folds")
    except parallel.ParallelUnsupported as exc:
        print(f"note: {first.model}: training {which} one after another, not as one stacked model ({exc})", flush=True)
        return [None] * len(runs)
    print(f"parallel seeds: {which} of {first.model} trained at once ({len(seeds)} seeds x {k_folds[0]} folds, "
          f"one stacked model)", flush=True)
    starts = np.cumsum([0] + k_folds)
    return [folds[starts[j]:starts[j + 1]] for j in range(len(runs))]


def finish_run(run: Run, folds, get_models, device):
    """Checkpoints, MERBench's result files, the JSON summary, robust evaluation and the table of one run,
    all placed together once written (a run that dies here leaves none of them in save_root)."""
    with fileio.StagedOutputs(run.cfg.out) as stage:
        return write_outputs(run, folds, get_models, device, stage)


def write_outputs(run: Run, folds, get_models, device, stage: fileio.StagedOutputs):
    cfg, args, prefix, fold_tests, test_loaders, calc, config = (run.cfg, run.args, run.prefix, run.fold_tests,
                                                                 run.test_loaders, run.calc, run.config)
    name_time = time.time()
    stds = None
    if cfg.keep_state:          # noise scale of robust eval: the whole train split (fold 1's train + eval)
        from ..evaluate import robust_eval
        stds = robust_eval.feature_std(run.train_loaders[0], run.eval_loaders[0])
    classes = predictions.default_classes(run.opts.output_dim1, cfg.dataset, cfg.emotions)
    eval_metric = float(np.mean([f.best_metric for f in folds]))      # cross-validation, for `ensemble --top`
    for k, fold in enumerate(folds):
        if cfg.savemodel:
            staged, final = stage.new(os.path.join("model", f"{prefix}_fold{k + 1}_{name_time}.pt"))
            fold.save_checkpoint(staged, cfg.model, args, k + 1, feature_std=stds, config=cfg.record(), classes=classes,
                                 eval_metric=fold.best_metric, metric_name=run.opts.metric_name)
            fold.checkpoint = final
        print(f">>>>> fold {k + 1}: best epoch {fold.best_epoch}, eval {run.opts.metric_name} {fold.best_metric:.4f}, "
              f"{fold.seconds:.1f}s", flush=True)

    print("====== Prediction and Saving =======", flush=True)
    args.duration = float(sum(f.seconds for f in folds))
    cv = engine.cv_summary(folds)
    cv_tag = "_".join(f"{n}:{cv[m]:.4f}" for m, n in (("f1", "f1"), ("acc", "acc"), ("val_mse", "val")) if m in cv)
    staged, path = stage.new(os.path.join("result", f"cv_{prefix}_{cv_tag}_{name_time}.npz"))
    report.atomic_save_npz(staged, args=np.array(args, dtype=object))
    print(f"save results in {path}")
    tests = {}
    if fold_tests:
        per_fold = [summarise(f.test_results[0]) for f in folds]
        tests["test"] = {m: float(np.mean([p[m] for p in per_fold])) for m in per_fold[0]}
        tests["test_std"] = {m: float(np.std([p[m] for p in per_fold])) for m in per_fold[0]}
        tag = "_".join(f"{m}:{tests['test'][m]:.4f}" for m in ("f1", "acc", "uar") if m in tests["test"])
        staged, path = stage.new(os.path.join("result", f"test1_{prefix}_{tag}_{name_time}.npz"))
        report.atomic_save_npz(staged, args=np.array(args, dtype=object))
        print(f"per-fold test sets: mean over {len(folds)} folds; save results in {path}")
    by_condition, by_class = {}, {}
    for j in range(0 if fold_tests else len(test_loaders)):
        results, tag = metrics.average_folds(folds, j, calc, run.opts.average)
        test = f"test{j + 1}"
        tests[test], by_class[test] = summarise(results), per_class(results, classes)
        # fold-averaged predictions by name beside MERBench's args (emo_probs too, as main-release.py writes them),
        # so runs can be ensembled (`ensemble`) and turned into a challenge file (`submit`, upstream's submission.py)
        avg = conditions.fold_average([f.test_results[j] for f in folds], run.opts.average)
        pred = predictions.from_results(avg["names"], avg, classes, eval_metric=eval_metric,
                                        metric_name=run.opts.metric_name, split=test)
        staged, path = stage.new(os.path.join("result", f"{test}_{prefix}_{tag}_{name_time}.npz"))
        report.atomic_save_npz(staged, args=np.array(args, dtype=object), **pred.arrays())
        print(f"save results in {path}")
        if pred.dummy_labels():
            print(f"note: {pred.dummy_note(test)}")
        if cfg.flags.get("plots") and by_class[test]:
            plots.confusion_png(stage.path(os.path.join("summary", f"{prefix}_{name_time}_{test}_confusion.png")),
                                by_class[test]["confusion"], by_class[test]["classes"], f"{cfg.model} {test}")
        label_dir = os.path.dirname(getattr(config, "PATH_TO_LABEL", {}).get(cfg.dataset) or "") or None
        groups = conditions.sample_groups(test_loaders[j], label_dir, f"test{j + 1}")
        by_condition[f"test{j + 1}"] = conditions.per_condition(
            avg["names"], avg.get("emoprobs", []), avg.get("emolabels", []), avg.get("valpreds", []),
            avg.get("vallabels", []), groups, calc)
    # MERBench's own models draw their settings per seed (main-release.py's protocol): only ours record them
    # here, so `summarize` keeps a MERBench model's seeds together (the draws are in "config")
    summary = {"model": cfg.model, "dataset": cfg.dataset, "features": run.features, "feat_type": cfg.feat_type,
               "settings": dict(cfg.settings) if options.ours(cfg.model) else {},
               "protocol": cfg.protocol_record(), "seed": cfg.seed, "metric": run.opts.metric_name, "cv": cv,
               "tests": tests, "tests_by_condition": by_condition, "per_class": by_class,
               "folds": [f.record(k, test=summarise(f.test_results[0]) if fold_tests else None)
                         for k, f in enumerate(folds)], "fold_seeds": runtime.fold_seeds(cfg.seed, len(folds)),
               "nonfinite": run.nonfinite, "config": cfg.record()}
    if cfg.robust_eval and fold_tests:
        print("note: --robust_eval needs test sets shared by every fold; skipped for per-fold test sets")
    elif cfg.robust_eval:
        from collections import OrderedDict
        from ..evaluate import robust_eval
        models = engine.restore_models(folds, lambda: get_models(args), device)
        rows = robust_eval.robust_evaluate(
            models, OrderedDict((f"test{j + 1}", loader) for j, loader in enumerate(test_loaders)), device,
            stds=stds, calculate_results=calc, conditions=robust_eval.all_conditions(cfg.robust_kinds),
            seed=cfg.robust_seed, with_masks=robust_eval.registry_model(cfg.model), output_dim1=run.opts.output_dim1,
            output_dim2=run.opts.output_dim2, model_name=cfg.model, progress=not cfg.quiet, amp=run.opts.amp)
        summary["robust"] = rows
        paths = robust_eval.write_reports(rows, stage.path("robust"), f"robust_{prefix}_{name_time}")
        print("robust evaluation: " + ", ".join(stage.final(p) for p in paths.values()))
    staged, path = stage.new(os.path.join("summary", f"{prefix}_{name_time}.json"))
    report.write_summary(staged, summary)
    print(report.comparison_table({cfg.model: tests}, list(tests)))
    for name, groups in by_condition.items():
        if len(groups) > 2:
            print(f"{name} by condition:\n" + conditions.condition_table({cfg.model: groups}, "f1"))
    print(f"summary: {path}")
    return summary


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser.parse_args(argv)                       # --help and argparse's own errors first
    if not os.path.isdir("toolkit") or not os.path.isfile("config.py"):
        raise SystemExit("error: run main-robust.py from the MERBench root (the folder with toolkit/ and config.py)")
    try:
        configs = resolve(parser, argv)
    except ConfigError as exc:
        return refuse(exc)
    sys.path.insert(0, os.getcwd())
    import config  # MERBench's global config (paths); noqa: E402
    from toolkit.dataloader import get_dataloaders
    from toolkit.models import get_models

    try:
        for cfg in configs:                     # an unwritable output folder fails before any work
            fileio.ensure_writable_dir(cfg.out, "--save_root")
        runlock.claim(*(cfg.out for cfg in configs))     # RunFolderBusy: another live process trains into one
    except (fileio.OutputError, runlock.RunFolderBusy) as exc:
        return refuse(exc)
    first = configs[0]
    device = runtime.resolve_device(first.flags["gpu"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        cpu_cuda_shim()
    if first.threads > 0:
        torch.set_num_threads(first.threads)
    try:
        if not (first.parallel_seeds and len(configs) > 1):  # one seed at a time: one seed's data in memory at a time
            for cfg in configs:
                run = prepare_run(cfg, get_dataloaders, config)
                print("====== Training and Evaluation =======", flush=True)
                finish_run(run, train_run(run, get_models, device), get_models, device)
            return 0
        runs = [prepare_run(cfg, get_dataloaders, config) for cfg in configs]
        print("====== Training and Evaluation =======", flush=True)
        stacked = train_seeds(runs, get_models, device)
        for run, folds in zip(runs, stacked):
            finish_run(run, train_run(run, get_models, device) if folds is None else folds, get_models, device)
    except checks.InputError as exc:           # raised by prepare_run, before its seed trains
        return refuse(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
