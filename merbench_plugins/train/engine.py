"""The training loop both runners share: one fold = train with early stopping on the eval metric,
keep the best checkpoint, then evaluate every test set once on it (not every epoch).

Loaders are any re-iterable of MERBench batches ``(batch, emos, vals, names)``.
"""
import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..evaluate.metrics import metric_value, softmax, summarise
from ..modules.losses import masked_mse
from ..modules.masking import RobustRecipe
from ..runtime import autocast, grad_scaler


def inner_model(model: nn.Module) -> nn.Module:
    """MERBench wraps models in get_models (``.model``); ours come bare."""
    return getattr(model, "model", model) if not hasattr(model, "grad_clip") else model


def cross_entropy(logits, target):
    return nn.functional.cross_entropy(logits, target.long())


@dataclass(frozen=True)
class TrainOptions:
    """How the engine trains one fold; impossible values are refused when it is built (the flag named)."""

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-5
    scheduler: str = "cosine"          # cosine | step | none
    early_stop: int = 20               # patience in epochs (0 = off)
    optimizer: str = "adamw"           # adamw (decoupled decay) | adam (coupled L2, MERBench's)
    average: str = "probs"             # fold averaging of test predictions: probs | logits (MERBench's)
    emo_weight: float = 1.0
    val_weight: float = 1.0
    output_dim1: int = 6
    output_dim2: int = 1
    metric_name: str = "emoval"
    amp: bool = False
    grad_clip: Optional[float] = None  # None: the model's own grad_clip
    show_progress: bool = True
    recipe: Optional[tuple] = None     # --robust_recipe: (corrupt, dropout, strength) applied to training batches

    def __post_init__(self):
        checks = [(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
                  (self.lr > 0 and math.isfinite(self.lr), f"--lr must be > 0, got {self.lr}"),
                  (self.weight_decay >= 0, f"--l2 (weight decay) must be >= 0, got {self.weight_decay}"),
                  (self.early_stop >= 0, f"--early_stop must be >= 0 (0 = off), got {self.early_stop}"),
                  (self.emo_weight >= 0 and self.val_weight >= 0,
                   f"--emo_weight and --val_weight must be >= 0, got {self.emo_weight} and {self.val_weight}"),
                  (self.scheduler in ("cosine", "step", "none"), f"unknown scheduler {self.scheduler!r}: use cosine, "
                                                                  f"step or none"),
                  (self.optimizer in ("adamw", "adam"), f"unknown optimizer {self.optimizer!r}: use adamw or adam"),
                  (self.average in ("probs", "logits"), f"unknown fold averaging {self.average!r}: use probs or logits")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.recipe is not None:
            corrupt, dropout, strength = self.recipe
            for flag, p in (("recipe_corrupt", corrupt), ("recipe_dropout", dropout)):
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"--{flag} is a probability: give a value in [0, 1], not {p}")
            if strength < 1.0:
                raise ValueError(f"--recipe_strength must be at least 1 (noise up to that x the feature std), "
                                 f"not {strength}")


def recipe_of(values) -> Optional[tuple]:
    """``--robust_recipe`` and its probabilities (from the parsed flags, a mapping; their defaults live in
    options.add_training_flags) as (corrupt, dropout, strength), or None when off; :class:`TrainOptions`
    checks the values."""
    if not values.get("robust_recipe"):
        return None
    return tuple(float(values[k]) for k in ("recipe_corrupt", "recipe_dropout", "recipe_strength"))


_NOTED = set()


def training_recipe(core: nn.Module, opts: "TrainOptions") -> Optional[RobustRecipe]:
    """The recipe to apply to training batches outside ``core``; None when it is off, or when the model
    runs the same recipe inside its forward (ours: applying it twice would double the augmentation)."""
    if opts.recipe is None:
        return None
    inner = getattr(core, "recipe", None)
    if isinstance(inner, RobustRecipe) and inner.active:
        name = type(core).__name__
        if name not in _NOTED:
            _NOTED.add(name)
            print(f"note: --robust_recipe: {name} runs the same recipe inside its forward (its own corruption / "
                  f"modality dropout settings); its batches are left as they are", flush=True)
        return None
    corrupt, dropout, strength = opts.recipe
    return RobustRecipe(corrupt, dropout, strength).train()


@dataclass
class FoldResult:
    best_epoch: int
    best_metric: float
    eval_results: dict
    test_results: List[dict]
    history: List[dict] = field(default_factory=list)
    state_dict: Optional[dict] = None
    seconds: float = 0.0
    checkpoint: Optional[str] = None

    def save_checkpoint(self, path: str, model_name: str, model_args, fold: int, **extra) -> str:
        """The best state with what rebuilds it (model name, the namespace the model was built from) and ``extra``
        entries (the training split's ``feature_std``, the run's configuration); used by ``robust-eval``."""
        self.checkpoint = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.checkpoint), exist_ok=True)
        torch.save({"model": model_name, "args": vars(model_args), "fold": fold, "state_dict": self.state_dict, **extra},
                   self.checkpoint)
        return self.checkpoint

    def record(self, index: int, **extra) -> dict:
        """This fold's entry of a JSON summary."""
        return dict(fold=index + 1, best_epoch=self.best_epoch, eval_metric=self.best_metric,
                    eval=summarise(self.eval_results), seconds=self.seconds, history=self.history,
                    checkpoint=self.checkpoint, **extra)


def cv_summary(folds: List[FoldResult]) -> dict:
    """Eval metrics of the best epochs, averaged over folds."""
    per_fold = [summarise(f.eval_results) for f in folds]
    return {m: float(np.mean([p[m] for p in per_fold])) for m in per_fold[0]}


def restore_models(folds: List[FoldResult], build_model: Callable[[], nn.Module], device) -> List[nn.Module]:
    """One model per fold with its best state loaded (needs ``keep_state=True`` in train_fold)."""
    models = []
    for f in folds:
        model = build_model().to(device)
        model.load_state_dict(f.state_dict)
        models.append(model)
    return models


def make_optimizer(params, opts: TrainOptions):
    """``adamw``: decoupled weight decay (ours); ``adam``: L2 added to the gradient (main-release.py).
    Fused kernels where this torch has them for the device (one launch per step), else foreach."""
    params = [p for p in params if p.requires_grad]
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(opts.optimizer)
    if cls is None:
        raise ValueError(f"unknown optimizer {opts.optimizer!r}: use adamw or adam")
    for kwargs in (dict(fused=True), dict(foreach=True)):
        try:
            return cls(params, lr=opts.lr, weight_decay=opts.weight_decay, **kwargs)
        except (RuntimeError, TypeError, ValueError):   # torch without fused / foreach for this device
            continue
    return cls(params, lr=opts.lr, weight_decay=opts.weight_decay)   # the plain loop; its own errors are real


def make_scheduler(optimizer, kind: str, epochs: int):
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.1)
    if kind == "none":
        return None
    raise ValueError(f"unknown scheduler {kind!r}: use cosine, step or none")


def batch_loss(outputs, emos, vals, opts: TrainOptions, cls_loss=None):
    """The training objective of one batch: model's interloss + weighted classification + masked valence MSE."""
    _, emos_out, vals_out, interloss = outputs
    loss = interloss.float().reshape(())
    if opts.output_dim1:
        loss = loss + opts.emo_weight * (cls_loss or cross_entropy)(emos_out.float(), emos)
    if opts.output_dim2:
        loss = loss + opts.val_weight * masked_mse(vals_out.float(), vals)
    return loss


def nonfinite_loss(loss, names, batch, *, where: str = "", epoch=None, lr=None, clip=None) -> FloatingPointError:
    """The error for a non-finite training loss: where (``where``: the fold, and the epoch, the batch's samples)
    and the advice that fits (non-finite inputs: name them; finite inputs: training diverged, lower --lr / clip)."""
    where = ", ".join(w for w in (where, f"epoch {epoch}" if epoch is not None else "") if w)
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:4]) + (f", ... ({len(names)} samples)" if len(names) > 4 else "")
    floats = [v for v in batch.values() if torch.is_tensor(v) and v.is_floating_point() and len(v) == len(names)]
    finite = torch.ones(len(names), dtype=torch.bool, device=floats[0].device if floats else None)
    for v in floats:
        finite &= torch.isfinite(v).flatten(1).all(dim=1) if v.dim() > 1 else torch.isfinite(v)
    bad = [n for n, ok in zip(names, finite.tolist()) if not ok]
    if bad:
        advice = (f"{len(bad)} sample(s) of the batch have non-finite input features ("
                  + ", ".join(repr(n) for n in bad[:4]) + (", ..." if len(bad) > 4 else "")
                  + "): fix or drop them")
    else:
        now = [f"--lr is {lr:g}" if lr is not None else "", f"--grad_clip is {clip:g}" if clip else "--grad_clip is off"]
        advice = ("the batch's inputs are finite, so training diverged: lower --lr or set a smaller --grad_clip ("
                  + ", ".join(x for x in now if x) + ")")
    value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
    return FloatingPointError(f"loss became {value}" + (f" in {where}" if where else "") + f" (batch of {shown}); "
                              + advice)


def eval_loss(logits, val_preds, emos, vals, opts: TrainOptions, cls_loss=None, device=None) -> float:
    """The evaluation loss, one definition for both training paths: the task loss (weighted classification +
    valence MSE, without the model's auxiliary interloss) over all the samples at once, i.e. a mean over
    samples, not over batches. logits [N, C], val_preds [N], emos [N], vals [N]: arrays or tensors (moved to
    ``device``, default where they are)."""
    def tensor(x, dtype):
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        return x.to(device=device if device is not None else x.device, dtype=dtype)
    emo_out = tensor(logits, torch.float) if opts.output_dim1 else None
    val_out = tensor(val_preds, torch.float).reshape(-1, 1) if opts.output_dim2 else None
    zero = torch.zeros((), device=(emo_out if emo_out is not None else val_out).device)
    loss = batch_loss((None, emo_out, val_out, zero), tensor(emos, torch.long) if opts.output_dim1 else None,
                      tensor(vals, torch.float).reshape(-1) if opts.output_dim2 else None, opts, cls_loss)
    return float(loss)


def run_epoch(model, loader, opts: TrainOptions, device, calculate_results, *, optimizer=None, scaler=None,
              cls_loss=None, where: str = "", epoch=None, recipe: Optional[RobustRecipe] = None):
    """One pass. Evaluation returns MERBench's save_results dict (names, loss, emoprobs, ..., valmse);
    training returns names and loss only (nothing reads training metrics, so none are computed).
    Loss: training, the mean of the batches' losses; evaluation, :func:`eval_loss` over every sample.
    ``where`` (e.g. the fold) and ``epoch`` (1-based) name where a non-finite training loss happened.
    ``recipe``: applied to every training batch before the model sees it (:func:`training_recipe`)."""
    train = optimizer is not None
    model.train(train)
    cls_loss = cls_loss or cross_entropy
    core = inner_model(model)
    clip = opts.grad_clip if opts.grad_clip is not None else getattr(core, "grad_clip", -1)
    names, losses = [], []
    emo_logits, emo_labels, val_preds, val_labels = [], [], [], []
    grad_ctx = contextlib.nullcontext() if train else torch.no_grad()
    with grad_ctx:
        for batch, emos, vals, bnames in loader:
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            emos, vals = emos.to(device), vals.to(device)
            if train and recipe is not None:
                batch = recipe(batch)
            with autocast(device, opts.amp):
                outputs = model(batch)
                _, emos_out, vals_out, _ = outputs
                loss = batch_loss(outputs, emos, vals, opts, cls_loss)
            if train:
                if not torch.isfinite(loss):
                    raise nonfinite_loss(loss, bnames, batch, where=where, epoch=epoch, lr=optimizer.param_groups[0]["lr"],
                                         clip=clip if clip is not None and clip > 0 else None)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if clip is not None and clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], clip)
                scaler.step(optimizer)
                scaler.update()
            names += list(bnames)
            if train:
                losses.append(loss.item())
                continue
            if opts.output_dim1:
                emo_logits.append(emos_out.detach().float().cpu().numpy())
                emo_labels.append(emos.cpu().numpy())
            if opts.output_dim2:
                val_preds.append(vals_out.detach().float().cpu().numpy().reshape(-1))
                val_labels.append(vals.cpu().numpy().reshape(-1))
    if train:
        return dict(names=names, loss=float(np.mean(losses)) if losses else float("nan"))
    cat = lambda xs: np.concatenate(xs) if xs else []  # noqa: E731
    logits = cat(emo_logits)
    probs = softmax(logits) if len(logits) else []
    results, _ = calculate_results(probs, cat(emo_labels), cat(val_preds), cat(val_labels))
    loss = eval_loss(logits, cat(val_preds), cat(emo_labels), cat(val_labels), opts, cls_loss, device) if names \
        else float("nan")
    out = dict(names=names, loss=loss, **results)
    if len(logits):
        out["emologits"] = logits  # [N, C] raw, for average="logits"
    return out


def train_fold(build_model: Callable[[], nn.Module], train_loader, eval_loader, test_loaders: List, opts: TrainOptions,
               device, calculate_results, *, desc: str = "fold", keep_state: bool = False) -> FoldResult:
    """Train one fold with early stopping on ``opts.metric_name``; evaluate tests once on the best epoch.
    ``desc`` (the progress bar's label, e.g. "v2 fold 2/5") also names the fold in a non-finite loss error."""
    start = time.time()
    model = build_model().to(device)
    core = inner_model(model)
    cls_loss = core.classification_loss() if hasattr(core, "classification_loss") else None
    if cls_loss is not None and hasattr(cls_loss, "to"):
        cls_loss = cls_loss.to(device)
    recipe = training_recipe(core, opts)
    optimizer = make_optimizer(model.parameters(), opts)
    scheduler = make_scheduler(optimizer, opts.scheduler, opts.epochs)
    scaler = grad_scaler(device, opts.amp)
    best = (-math.inf, -1, None, None)    # metric, epoch, eval results, state
    history, bad_epochs = [], 0
    progress = _progress(range(opts.epochs), desc, opts.show_progress)
    for epoch in progress:
        if hasattr(core, "set_epoch"):
            core.set_epoch(epoch)
        train_res = run_epoch(model, train_loader, opts, device, calculate_results, optimizer=optimizer,
                              scaler=scaler, cls_loss=cls_loss, where=desc, epoch=epoch + 1, recipe=recipe)
        eval_res = run_epoch(model, eval_loader, opts, device, calculate_results, cls_loss=cls_loss)
        metric = metric_value(eval_res, opts.metric_name)
        history.append({"epoch": epoch + 1, "train_loss": train_res["loss"], "eval_loss": eval_res["loss"],
                        "eval_metric": metric, "lr": optimizer.param_groups[0]["lr"]})
        if scheduler is not None:
            scheduler.step()
        if metric > best[0]:
            best = (metric, epoch, eval_res, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
            bad_epochs = 0
        else:
            bad_epochs += 1
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(loss=f"{train_res['loss']:.3f}", eval=f"{metric:.4f}", best=f"{best[0]:.4f}@{best[1] + 1}")
        if opts.early_stop and bad_epochs >= opts.early_stop:
            break
    if best[3] is None:
        raise RuntimeError("no epoch produced a finite eval metric; check the data and --lr")
    model.load_state_dict(best[3])
    tests = [run_epoch(model, loader, opts, device, calculate_results, cls_loss=cls_loss) for loader in test_loaders]
    return FoldResult(best_epoch=best[1] + 1, best_metric=best[0], eval_results=best[2], test_results=tests,
                      history=history, state_dict=best[3] if keep_state else None, seconds=time.time() - start)


def _progress(iterable, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but never let a progress bar stop training
        return iterable
    # disable=None: bars on a terminal only, so redirected logs stay readable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=None)
