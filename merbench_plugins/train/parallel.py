"""Fold-parallel training: the K folds of a run as one stacked model, trained together.

Each fold keeps what the sequential loop gives it: its own initialisation (built after
``seed_everything(seed_k)``, as ``train_fold``), its own data order (the same per-fold generator as the
standalone runner's loader), its own dropout / modality-dropout noise (``vmap(randomness="different")``),
its own Adam(W) state and step count, per-fold gradient clipping (``clamp`` is elementwise, so clamping the
stacked gradient is ``clip_grad_value_`` per fold), the same LR schedule, its own early stopping, best
checkpoint and test predictions. A fold that stops is frozen while the others go on. fp16 ``--amp`` (GPUs
without bf16) scales each fold's loss by its own dynamic scale (:class:`FoldScaler`).

How: the folds' parameters live in one flat leaf ``[K, P]`` (views per parameter); one
``vmap(functional_call)`` computes the K losses, ``sum().backward()`` gives each fold the gradient of its
own loss, and one Adam(W) update (``torch._fused_adamw_`` where available) steps the folds that had a batch.
The data sit on the device once (:class:`DeviceData`); batches are index lookups there.

Randomness is drawn per epoch from ``torch.manual_seed(rng_seed, epoch)`` with fixed shapes: every
running fold runs every step (a fold without a batch at that step computes on a stand-in batch and is
not updated), so while the same folds run, no fold's data or seed can change another fold's noise. A
fold that stops leaves the stack (its best checkpoint is kept), so the others' later noise draws
differ from a run where it kept going (the same distribution, other numbers).
Batches shorter than ``batch_size`` (an epoch's last) run after the full ones, per fold, each with its
own seed. Models that vmap cannot run (LSTMs, MERBench's models) raise :class:`ParallelUnsupported`
before any training; the runners then log it and train the folds one after another.
"""
import copy
import math
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .. import runtime
from ..evaluate import metrics
from ..evaluate.metrics import metric_value
from . import engine


class ParallelUnsupported(RuntimeError):
    """This model / option cannot be trained fold-parallel; the message says why."""


def announce(model: str, n_folds: int, reason=None, *, quiet: bool = False):
    """The one line both runners print about the path a run took (a fallback is never silent)."""
    if reason is not None:
        print(f"note: {model}: training the {n_folds} folds one after another, not fold-parallel ({reason})",
              flush=True)
    elif not quiet:
        print(f"fold-parallel: the {n_folds} folds of {model} trained at once (one stacked model)", flush=True)


def functional_api():
    """(vmap, functional_call) from torch.func (torch >= 2.0) or functorch (torch 1.12/1.13), else None."""
    try:
        from torch.func import functional_call, vmap
        return vmap, functional_call
    except ImportError:
        pass
    try:
        from functorch import vmap
        from torch.nn.utils.stateless import functional_call
        return vmap, lambda module, params, args: functional_call(module, {**params[0], **params[1]}, args)
    except ImportError:
        return None


class DeviceData:
    """One corpus as device tensors (features [N, ...] incl. zero padding, emos [N], vals [N]) + names."""

    def __init__(self, features: Dict[str, torch.Tensor], emos, vals, names: Sequence[str], device=None):
        self.features = {k: v.to(device) for k, v in features.items() if torch.is_tensor(v)}
        self.emos, self.vals, self.names = emos.to(device), vals.to(device).float(), list(names)
        self.device = self.emos.device
        self.derived: Dict[str, torch.Tensor] = {}

    def with_derived(self, statistics: Callable[[dict], dict], chunk: int = 512) -> "DeviceData":
        """The same data (shared tensors) with per-sample ``statistics(batch)`` of its features computed once
        (in chunks of ``chunk`` samples), which :meth:`take` hands to the model with every batch."""
        out = copy.copy(self)
        parts = [statistics({k: v[i:i + chunk] for k, v in self.features.items()}) for i in range(0, len(self), chunk)]
        out.derived = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        return out

    @classmethod
    def from_split(cls, split, device):
        """The standalone runner's in-memory :class:`Split`."""
        return cls(split.features, split.emos, split.vals, split.names, device)

    @classmethod
    def from_dataset(cls, dataset, device):
        """A MERBench dataset through its own collater (its padding is dataset-wide already)."""
        batch, emos, vals, names = dataset.collater([dataset[i] for i in range(len(dataset))])
        return cls(batch, emos, vals, names, device)

    @classmethod
    def from_batches(cls, batches, device):
        """A list of the runners' batches ``(batch, emos, vals, names)`` (same feature shapes), concatenated."""
        keys = [k for k, v in batches[0][0].items() if torch.is_tensor(v)]
        features = {k: torch.cat([b[0][k] for b in batches]) for k in keys}
        return cls(features, torch.cat([b[1] for b in batches]), torch.cat([b[2] for b in batches]),
                   [n for b in batches for n in b[3]], device)

    @classmethod
    def concat(cls, parts: Sequence["DeviceData"]) -> Tuple["DeviceData", List[torch.Tensor]]:
        """One DeviceData of ``parts`` back to back, and each part's row indices in it."""
        features = {k: torch.cat([p.features[k] for p in parts]) for k in parts[0].features}
        data = cls(features, torch.cat([p.emos for p in parts]), torch.cat([p.vals for p in parts]),
                   [n for p in parts for n in p.names], parts[0].device)
        data.derived = {k: torch.cat([p.derived[k] for p in parts]) for k in parts[0].derived}
        starts = np.cumsum([0] + [len(p) for p in parts])
        return data, [torch.arange(a, b, device=data.device) for a, b in zip(starts[:-1], starts[1:])]

    def __len__(self):
        return len(self.names)

    def take(self, index: torch.Tensor, derived: bool = True):
        """index [..., B] (device long) -> (batch dict of [..., B, *feature], emos [..., B], vals [..., B]);
        the batch also holds the rows of the :meth:`with_derived` statistics unless ``derived`` is False."""
        batch = {k: v[index] for k, v in self.features.items()}
        if derived:
            batch.update({k: v[index] for k, v in self.derived.items()})
        return batch, self.emos[index], self.vals[index]

    def batches(self, index, batch_size: int, shuffle=False, generator: Optional[torch.Generator] = None):
        """Like the runners' loaders: (batch, emos, vals, names) over ``index`` in the generator's order."""
        index = torch.as_tensor(index, dtype=torch.long)
        order = index[torch.randperm(len(index), generator=generator)] if shuffle else index
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch, emos, vals = self.take(idx.to(self.device), derived=False)    # loaders: features only
            yield batch, emos, vals, [self.names[i] for i in idx.tolist()]


def validation_sets(loaders, select_on: str, seeds: Sequence[int], device) -> Optional[List[DeviceData]]:
    """Fold k's validation set for ``select_on`` as device rows (``train_folds(evals=...)``): the batches of
    ``selection.eval_loader(loaders[k], select_on, seeds[k])``, clean then corrupted, as the sequential loop
    sees them; None for ``clean`` (the folds' rows of the training data are their validation sets)."""
    from . import selection
    if select_on == "clean":
        return None
    try:
        return [DeviceData.from_batches(selection.eval_loader(loader, select_on, seed), device)
                for loader, seed in zip(loaders, seeds)]
    except RuntimeError as exc:   # batches of different frame lengths cannot be stacked
        raise ParallelUnsupported(f"--select_on {select_on}: validation batches do not stack ({exc})") from None


class StackedParams:
    """K models' parameters in one flat [K, P] tensor; buffers and frozen parameters stacked beside it.

    The per-parameter leaves [K, *shape] are views of ``data``: one optimizer update on ``data`` (its
    per-fold, per-parameter ``stored`` views) moves every leaf. Gradients are not accumulated anywhere:
    ``torch.autograd.grad`` hands them to the optimizer (no zeroing, no accumulation pass).
    ``nn.Linear`` weights are stored transposed ([K, in, out] in memory, seen as [K, out, in]): under vmap
    the weight gradient of ``linear`` comes out in that layout, so it reaches the optimizer without a
    transposed copy (measured: 1.8x faster for a 5120 x 128 projection on CPU).
    Frozen parameters and buffers are stacked in ``fixed`` ([K, *shape], no gradient); buffers that the
    model updates in place in training (BatchNorm running statistics) are updated there, per fold.
    """

    def __init__(self, models: List[nn.Module], device):
        named = [dict(m.named_parameters()) for m in models]
        first = named[0]
        linear_weights = {f"{n}.weight" if n else "weight" for n, mod in models[0].named_modules()
                          if isinstance(mod, nn.Linear)}
        self.names = [n for n, p in first.items() if p.requires_grad]
        self.shapes = [first[n].shape for n in self.names]
        self.sizes = [first[n].numel() for n in self.names]
        self.transposed = [n in linear_weights and first[n].dim() == 2 for n in self.names]
        stored = lambda p, t: (p.detach().t() if t else p.detach()).reshape(-1)  # noqa: E731
        rows = [torch.cat([stored(params[n], t) for n, t in zip(self.names, self.transposed)]) for params in named]
        self.data = torch.stack(rows).to(device)                                            # [K, P]
        self.leaves = self.views(self.data)
        for leaf in self.leaves.values():
            leaf.requires_grad_(True)
        self.fixed = {n: torch.stack([params[n].detach() for params in named]).to(device)
                      for n, p in first.items() if not p.requires_grad}
        buffers = [dict(m.named_buffers()) for m in models]
        self.buffer_names = [n for n, v in buffers[0].items() if v is not None]
        self.fixed.update({n: torch.stack([b[n] for b in buffers]).to(device) for n in self.buffer_names})
        self.k = len(models)

    def views(self, flat: torch.Tensor) -> Dict[str, torch.Tensor]:
        """name -> [K', *shape] views of a [K', P] tensor."""
        k, out, start = flat.shape[0], {}, 0
        for n, size, shape, t in zip(self.names, self.sizes, self.shapes, self.transposed):
            block = flat[:, start:start + size]
            out[n] = block.view(k, shape[1], shape[0]).transpose(1, 2) if t else block.view(k, *shape)
            start += size
        return out

    def stored_views(self, flat: torch.Tensor) -> List[List[torch.Tensor]]:
        """Per fold, per parameter: contiguous views of a [K', P] tensor in the stored layout (transposed
        linear weights as [in, out]): what the fused optimizer reads and writes."""
        out = []
        for row in flat:
            views, start = [], 0
            for size, shape, t in zip(self.sizes, self.shapes, self.transposed):
                views.append(row[start:start + size].view(*((shape[1], shape[0]) if t else shape)))
                start += size
            out.append(views)
        return out

    def stored_grads(self, grads: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Gradients [K', *shape] (one per leaf, from autograd.grad) in the stored layout, contiguous (a copy
        only where autograd returned another layout, e.g. an expanded gradient)."""
        out, seen = [], set()
        for g, t in zip(grads, self.transposed):
            g = g.transpose(1, 2) if t else g
            # clipping and unscaling write in place: one memory per gradient (autograd may hand the same
            # tensor to two parameters, e.g. ``a + b``)
            if not g.is_contiguous() or g.data_ptr() in seen:
                g = g.contiguous() if not g.is_contiguous() else g.clone()
            seen.add(g.data_ptr())
            out.append(g)
        return out

    def trainable(self, rows: Optional[List[int]] = None) -> Dict[str, torch.Tensor]:
        """The leaves (all folds) or their rows ``rows`` (a copy the gradient is taken with respect to)."""
        if rows is None:
            return self.leaves
        # index the stored layout, so that the rows keep it (and their gradients come out contiguous)
        return {n: v.transpose(1, 2)[rows].transpose(1, 2) if t else v[rows]
                for (n, v), t in zip(self.leaves.items(), self.transposed)}

    def fixed_rows(self, rows=None, fixed=None) -> Dict[str, torch.Tensor]:
        """The stacked buffers / frozen parameters (``fixed``, default the current ones): all folds (the tensors
        themselves, so in-place buffer updates land) or a copy of the rows ``rows`` (see :meth:`write_back`)."""
        fixed = self.fixed if fixed is None else fixed
        return fixed if rows is None else {n: v[rows] for n, v in fixed.items()}

    def write_back(self, rows: Optional[List[int]], sub: Dict[str, torch.Tensor]):
        """After a step on the rows ``rows``: their buffer updates (BatchNorm statistics) back into the stack."""
        if rows is None:
            return
        index = torch.as_tensor(rows, device=self.data.device)
        for n in self.buffer_names:
            self.fixed[n].index_copy_(0, index, sub[n])

    def snapshot_buffers(self, into: Dict[str, torch.Tensor], k: int):
        """Fold k's current buffers into ``into`` (a clone of ``fixed``: the best epoch's buffers)."""
        for n in self.buffer_names:
            into[n][k] = self.fixed[n][k]

    def state_dict(self, outer: nn.Module, template: nn.Module, flat_row: torch.Tensor, k: int,
                   fixed: Optional[Dict[str, torch.Tensor]] = None) -> dict:
        """Fold k's state_dict with every key of ``outer`` (the model as built, tied weights included), on the CPU;
        buffers from ``fixed`` (default the current ones)."""
        by_id = {id(p): n for n, p in template.named_parameters()}
        by_id.update({id(b): n for n, b in template.named_buffers() if b is not None})
        values = {n: v[0] for n, v in self.views(flat_row.unsqueeze(0)).items()}
        values.update({n: v[k] for n, v in (self.fixed if fixed is None else fixed).items()})
        return {key: values[by_id[id(t)]].detach().cpu().contiguous().clone()
                for key, t in outer.state_dict(keep_vars=True).items()}


class StackedAdam:
    """Adam(W) on the per-fold rows of a [K, P] tensor; fold k steps (and counts a step) only when it is active.

    ``step(active, lr, grads, rows)`` takes the gradients as autograd.grad returned them (stored layout, see
    :meth:`StackedParams.stored_grads`): [len(rows), *shape] per parameter. One ``torch._fused_adamw_`` call
    over every (fold, parameter) tensor of the active folds where torch has it, else plain tensor math.
    """

    def __init__(self, params: StackedParams, opts: engine.TrainOptions, betas=(0.9, 0.999), eps=1e-8):
        if opts.optimizer not in ("adamw", "adam"):
            raise ValueError(f"unknown optimizer {opts.optimizer!r}: use adamw or adam")
        flat = params.data
        self.decoupled, self.wd = opts.optimizer == "adamw", opts.weight_decay
        self.betas, self.eps = betas, eps
        self.m, self.v = torch.zeros_like(flat), torch.zeros_like(flat)
        self.p_views, self.m_views, self.v_views = (params.stored_views(t) for t in (flat, self.m, self.v))
        self.steps = [torch.zeros((), device=flat.device) for _ in range(flat.shape[0])]
        self.fused = hasattr(torch, "_fused_adamw_")

    def step(self, active: List[int], lr: float, grads: Sequence[torch.Tensor], rows: Optional[List[int]] = None):
        if not active:
            return
        position = {k: j for j, k in enumerate(rows)} if rows is not None else None
        tensors = ([], [], [], [], [])                    # params, grads, exp_avg, exp_avg_sq, step per tensor
        for k in active:
            j = k if position is None else position[k]
            for i, p in enumerate(self.p_views[k]):
                for out, t in zip(tensors, (p, grads[i][j], self.m_views[k][i], self.v_views[k][i], self.steps[k])):
                    out.append(t)
        if self.fused:
            try:
                return self._fused(active, lr, *tensors)
            except (RuntimeError, NotImplementedError, TypeError):
                self.fused = False               # this torch / device has no fused kernel: plain tensor math
        self._plain(active, lr, *tensors)

    def _fused(self, active, lr, p, g, m, v, steps):
        fn = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        counts = [self.steps[k] for k in active]
        torch._foreach_add_(counts, 1)           # the kernel reads the step count, torch.optim bumps it first
        try:
            fn(p, g, m, v, [], steps, lr=lr, beta1=self.betas[0], beta2=self.betas[1],
               weight_decay=self.wd, eps=self.eps, amsgrad=False, maximize=False)
        except Exception:
            torch._foreach_sub_(counts, 1)
            raise

    def _plain(self, active, lr, p, g, m, v, steps):
        b1, b2 = self.betas
        for k in active:
            self.steps[k] += 1
        with torch.no_grad():
            for p_, g_, m_, v_, s in zip(p, g, m, v, steps):
                t = float(s)
                grad = g_ if self.decoupled or not self.wd else g_ + self.wd * p_
                if self.decoupled and self.wd:
                    p_.mul_(1 - lr * self.wd)
                m_.lerp_(grad, 1 - b1)
                v_.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (v_.sqrt() / math.sqrt(1 - b2 ** t)).add_(self.eps)
                p_.addcdiv_(m_, denom, value=-lr / (1 - b1 ** t))


class FoldScaler:
    """Dynamic fp16 loss scaling with one scale per fold (torch.amp.GradScaler's rule, applied per row).

    ``scale(losses, rows)`` multiplies each fold's loss by its own scale before backward; ``unscale(grads,
    rows, active)`` divides each fold's gradients back (in place; ``grads``: [len(rows), ...] per parameter)
    and returns the active folds whose gradients are finite: a fold that overflowed skips this step and
    halves its scale, the others step on (and double their scale after ``growth_interval`` finite steps in
    a row). Disabled, it changes nothing.
    """

    def __init__(self, k: int, device, enabled: bool, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000):
        self.enabled = enabled
        self.scales = torch.full((k,), float(init_scale), device=device)
        self.growth, self.backoff, self.interval = growth_factor, backoff_factor, growth_interval
        self.good = [0] * k
        self.skipped = [0] * k

    def scale(self, losses: torch.Tensor, rows: Optional[List[int]]) -> torch.Tensor:
        if not self.enabled:
            return losses
        return losses * (self.scales if rows is None else self.scales[rows]).to(losses.dtype)

    def unscale(self, grads: Sequence[torch.Tensor], rows: Optional[List[int]], active: List[int]) -> List[int]:
        """Unscale the gradients in place; the active folds that may step (finite gradients)."""
        if not self.enabled or not active:
            return active
        inv = (self.scales if rows is None else self.scales[rows]).reciprocal()                   # [K']
        finite = None
        for g in grads:
            g.mul_(inv.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
            ok = torch.isfinite(g).flatten(1).all(dim=1)
            finite = ok if finite is None else finite & ok
        finite = finite.tolist()                                                                  # one sync per step
        position = {k: j for j, k in enumerate(rows)} if rows is not None else None
        ok = []
        for k in active:
            if finite[k if position is None else position[k]]:
                ok.append(k)
                self.good[k] += 1
                if self.good[k] >= self.interval:
                    self.scales[k] *= self.growth
                    self.good[k] = 0
            else:
                self.scales[k] *= self.backoff
                self.good[k] = 0
                self.skipped[k] += 1
        return ok


class LossWatch:
    """Stops training at the first non-finite loss of a fold that is stepping, with the error that names it.

    On the CPU each step is checked at once; on a GPU the check of step s runs after step s + 1 was queued
    (reading a value waits for it: checking at once would stall the queue every step), so a fold that
    went non-finite takes one more update before the run stops; :meth:`flush` checks the last step.
    """

    def __init__(self, device):
        self.lagged = torch.device(device).type == "cuda"
        self.pending = None

    def check(self, losses: torch.Tensor, folds: List[Tuple[int, int]], error: Callable):
        """losses [K']; folds: (fold k, its row j in losses) to check; error(k, j, value) -> the exception."""
        item = (~torch.isfinite(losses), losses, folds, error)
        if self.lagged:
            item, self.pending = self.pending, item
        self._raise_if_bad(item)

    def flush(self):
        item, self.pending = self.pending, None
        self._raise_if_bad(item)

    @staticmethod
    def _raise_if_bad(item):
        if item is None:
            return
        bad, losses, folds, error = item
        if not bool(bad.any()):
            return
        flags = bad.tolist()
        for k, j in folds:
            if flags[j]:
                raise error(k, j, float(losses[j]))


def lr_schedule(opts: engine.TrainOptions) -> List[float]:
    """The LR of every epoch, as make_scheduler's schedulers give them."""
    if opts.scheduler == "cosine":
        t = max(opts.epochs, 1)
        return [opts.lr * (1 + math.cos(math.pi * e / t)) / 2 for e in range(opts.epochs)]
    if opts.scheduler == "step":
        return [opts.lr * 0.1 ** (e // max(opts.epochs // 3, 1)) for e in range(opts.epochs)]
    if opts.scheduler == "none":
        return [opts.lr] * opts.epochs
    raise ValueError(f"unknown scheduler {opts.scheduler!r}: use cosine, step or none")


def epoch_seed(seed: int, epoch: int, fold: int = -1) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + fold + 1) % (2 ** 63)


def check_options(opts: engine.TrainOptions, device):
    """Options the stacked loop does not vectorise raise ParallelUnsupported (the runner logs, then goes sequential)."""
    if functional_api() is None:
        raise ParallelUnsupported("this torch has neither torch.func nor functorch (pip install functorch for torch 1.12)")


class FoldParallel:
    """The K folds of one run (and the pieces to train, evaluate and restore them)."""

    def __init__(self, build_model: Callable[[], nn.Module], seeds: Sequence[int], opts: engine.TrainOptions, device,
                 *, compile: bool = False):
        check_options(opts, device)
        self.vmap, self.functional_call = functional_api()
        self.opts, self.device = opts, device
        models = []
        for s in seeds:                              # the same initialisation as train_fold's
            runtime.seed_everything(s)
            models.append(build_model())
        self.outer = copy.deepcopy(models[0]).to(device)     # MERBench's wrapper (state_dict keys), or the model
        self.template = engine.inner_model(self.outer)
        self.params = StackedParams([engine.inner_model(m) for m in models], device)
        cls_loss = self.template.classification_loss() if hasattr(self.template, "classification_loss") else None
        self.cls_loss = cls_loss.to(device) if hasattr(cls_loss, "to") else cls_loss
        clip = opts.grad_clip if opts.grad_clip is not None else getattr(self.template, "grad_clip", -1)
        self.clip = clip if clip is not None and clip > 0 else None
        self.recipe = engine.training_recipe(self.template, opts)      # --robust_recipe, drawn per fold
        self.train_fn = self.vmap(self._fold_loss, randomness="different")
        self.eval_fn = self.vmap(self._fold_outputs, randomness="different")
        self.test_fn = self.vmap(self._fold_outputs, in_dims=(0, 0, None), randomness="different")
        # compiled: the full-stack step at the run's batch size only (one shape, one compilation); the probe,
        # the epoch's short last batches and single-fold steps run eagerly instead of recompiling
        self.compiled_step = compiled(self.train_fn) if compile else None

    def _forward(self, params, fixed, batch):
        with runtime.autocast(self.device, self.opts.amp):
            return self.functional_call(self.template, (params, fixed), (batch,))

    def _fold_loss(self, params, fixed, batch, emos, vals):
        if self.recipe is not None:
            batch = self.recipe(batch)
        return engine.batch_loss(self._forward(params, fixed, batch), emos, vals, self.opts, self.cls_loss)

    def _fold_outputs(self, params, fixed, batch):
        _, emo_out, val_out, _ = self._forward(params, fixed, batch)
        return emo_out.float(), val_out.float()

    def probe(self, data: DeviceData, index: torch.Tensor):
        """One forward/backward on two samples per fold: a model vmap cannot run fails here, before training.
        It changes nothing: no update, and buffers (BatchNorm statistics) are put back."""
        self.template.train()
        saved = {n: self.params.fixed[n].clone() for n in self.params.buffer_names}
        try:
            self.train_step(*data.take(index[:, :2]), eager=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: train sequentially, and say why
            raise ParallelUnsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        finally:
            for n, v in saved.items():
                self.params.fixed[n].copy_(v)

    def train_step(self, batch, emos, vals, rows: Optional[List[int]] = None,
                   scaler: Optional[FoldScaler] = None, eager: bool = False):
        """(losses [K'], gradients) of one step on the folds ``rows`` (default all, K' = len(rows)): the
        gradients as ``torch.autograd.grad`` returns them (scaled by ``scaler``'s per-fold scales, if given),
        one [K', ...] tensor per parameter in the stored layout, for :meth:`StackedAdam.step`. Full-stack
        steps use the compiled step where there is one."""
        fn = self.compiled_step if self.compiled_step is not None and rows is None and not eager else self.train_fn
        params, fixed = self.params.trainable(rows), self.params.fixed_rows(rows)
        losses = fn(params, fixed, batch, emos, vals)
        scaled = losses if scaler is None else scaler.scale(losses, rows)
        # fold k's loss depends on row k only: row k of each gradient is its own
        grads = torch.autograd.grad(scaled.sum(), list(params.values()), allow_unused=True)
        self.params.write_back(rows, fixed)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]
        return losses.detach(), self.params.stored_grads(grads)

    @torch.no_grad()
    def predict(self, data: DeviceData, index: Optional[torch.Tensor], flat=None, rows=None, fixed=None,
                chunk: int = 256):
        """Logits [K', N, C] and valence [K', N, 1] of the folds ``rows`` (default all), with the weights ``flat``
        and buffers ``fixed`` (default the current ones); index [K', N] per fold, or None = all of ``data``."""
        self.template.eval()
        flat = self.params.data if flat is None else flat
        flat = flat if rows is None else flat[rows]
        views, fixed = self.params.views(flat), self.params.fixed_rows(rows, fixed)
        n = len(data) if index is None else index.shape[1]
        emo, val = [], []
        for start in range(0, n, chunk):
            if index is None:
                batch, _, _ = data.take(torch.arange(start, min(start + chunk, n), device=data.device))
                e, v = self.test_fn(views, fixed, batch)
            else:
                batch, _, _ = data.take(index[:, start:start + chunk])
                e, v = self.eval_fn(views, fixed, batch)
            emo.append(e)
            val.append(v.reshape(v.shape[0], v.shape[1], -1))
        return torch.cat(emo, 1), torch.cat(val, 1)


def compiled(fn):
    """torch.compile (inductor) of the vmapped training step; the eager step, with a note, where it cannot.

    The step draws its randomness with explicit ``rand_like`` masks (modules/dropout.py), not ``F.dropout``:
    under ``vmap(randomness="different")`` inductor (torch 2.13, CPU) returned zero gradients through
    ``F.dropout`` whenever other random draws and a reconstruction shared the graph, so the folds did not
    learn (docs/inductor_vmap_dropout.md has the minimal repro; the VAE noise, once suspected, is not
    needed). With the masks, compiled and eager gradients agree (tests/test_compile.py).
    """
    if not hasattr(torch, "compile"):
        print("note: --compile needs torch >= 2.0; running eagerly")
        return fn
    state = {"fn": torch.compile(fn, dynamic=False)}   # one shape: the full stack at the run's batch size

    def call(*args):
        try:
            return state["fn"](*args)
        except Exception as exc:  # noqa: BLE001 - compile failures vary by backend; eager always works
            if state["fn"] is fn:
                raise
            print(f"note: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); running eagerly")
            state["fn"] = fn
            return fn(*args)
    return call


def fold_results(probs_logits, vals, data: DeviceData, index, k, opts, calculate_results, cls_loss):
    """Fold k's evaluation dict, as engine.run_epoch returns it (loss: mean over the samples)."""
    emos, gold_vals = data.emos[index], data.vals[index]
    logits = probs_logits[:len(index)]
    val_pred = vals[:len(index)]
    loss = engine.eval_loss(logits, val_pred, emos, gold_vals, opts, cls_loss)
    names = [data.names[i] for i in index.tolist()]
    logits_np = logits.cpu().numpy() if opts.output_dim1 else []
    probs = metrics.softmax(logits_np) if opts.output_dim1 else []
    emo_labels = emos.cpu().numpy() if opts.output_dim1 else []
    val_np = val_pred.reshape(-1).cpu().numpy() if opts.output_dim2 else []
    val_labels = gold_vals.cpu().numpy() if opts.output_dim2 else []
    results, _ = calculate_results(probs, emo_labels, val_np, val_labels)
    out = dict(names=names, loss=loss, **results)
    if opts.output_dim1:
        out["emologits"] = logits_np
    return out


def train_folds(build_model: Callable[[], nn.Module], data: DeviceData,
                splits: List[Tuple[Sequence[int], Sequence[int]]], tests: List[DeviceData], opts: engine.TrainOptions,
                device, calculate_results, *, seeds: Sequence[int], batch_size: int, rng_seed: Optional[int] = None,
                keep_state: bool = False, compile: bool = False, desc: str = "folds",
                loss_scaling: Optional[bool] = None, evals: Optional[Sequence[DeviceData]] = None
                ) -> List[engine.FoldResult]:
    """Train every (train index, eval index) split of ``data`` at once; one FoldResult per split, as train_fold's.

    seeds[k]: fold k's initialisation and data order (the runners pass seed + k). rng_seed: dropout noise.
    evals: fold k's validation set as its own DeviceData (``--select_on corrupted``: the fold's validation
    samples plus their corrupted copies, as the sequential loop's eval loader gives them); default: the rows
    ``splits[k][1]`` of ``data``.
    loss_scaling: per-fold fp16 loss scaling (:class:`FoldScaler`); None = where fp16 autocast runs
    (``--amp`` on a GPU without bf16), as the sequential loop's GradScaler.
    Raises ParallelUnsupported before any training when the model or the options cannot be stacked.
    """
    start = time.time()
    k_folds = len(splits)
    rng_seed = seeds[0] if rng_seed is None else rng_seed
    fp = FoldParallel(build_model, seeds, opts, device, compile=compile)
    statistics = getattr(fp.template, "input_statistics", None)
    if statistics is not None:   # per-sample statistics the model would otherwise compute at every step
        data, tests = data.with_derived(statistics), [t.with_derived(statistics) for t in tests]
        evals = None if evals is None else [e.with_derived(statistics) for e in evals]
    dev = data.device
    train_idx = [torch.as_tensor(np.ascontiguousarray(tr), dtype=torch.long) for tr, _ in splits]
    if evals is not None:
        if len(evals) != k_folds:
            raise ValueError(f"{len(evals)} validation sets for {k_folds} folds")
        eval_data, eval_idx = DeviceData.concat(evals)
    else:
        eval_data = data
        eval_idx = [torch.as_tensor(np.ascontiguousarray(ev), dtype=torch.long).to(dev) for _, ev in splits]
    e_max = max(len(e) for e in eval_idx)
    eval_pad = torch.stack([torch.cat([e, e[:1].expand(e_max - len(e))]) for e in eval_idx])       # [K, E]
    fp.probe(data, torch.stack([t[:2] for t in train_idx]).to(dev))
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]      # = SplitLoader(seed=seed_k)
    opt = StackedAdam(fp.params, opts)
    if loss_scaling is None:
        loss_scaling = opts.amp and device.type == "cuda" and runtime.amp_dtype(device) == torch.float16
    scaler = FoldScaler(k_folds, device, loss_scaling)
    watch = LossWatch(device)

    def step(batch_index: torch.Tensor, rows: Optional[List[int]], active: List[int], batch_rows: List[int]):
        """One step of the folds ``rows`` (None: the whole stack) on batch_index [K', B]; unscale (fp16), clip
        per fold, step the active folds whose gradients are finite. Returns the losses [K']."""
        batch, emos, vals = data.take(batch_index)
        loss, grads = fp.train_step(batch, emos, vals, rows=rows, scaler=scaler)
        position = {k: j for j, k in enumerate(batch_rows)}
        watch.check(loss, [(k, position[k]) for k in active],
                    lambda k, j, value: engine.nonfinite_loss(value, [data.names[i] for i in batch_index[j].tolist()],
                                                              {n: v[j] for n, v in batch.items()},
                                                              where=f"fold {k + 1}", epoch=epoch + 1, lr=lr,
                                                              clip=fp.clip))
        active = scaler.unscale(grads, rows, active)
        if fp.clip is not None:
            for g in grads:                      # elementwise: clamping the stack is clip_grad_value_ per fold
                g.clamp_(-fp.clip, fp.clip)
        opt.step(active, lr, grads, rows)
        return loss

    lrs = lr_schedule(opts)
    best = [(-math.inf, -1, None) for _ in range(k_folds)]
    best_flat = fp.params.data.clone()
    # the best epoch's buffers (BatchNorm statistics) per fold, beside its weights
    best_fixed = {n: v.clone() if n in fp.params.buffer_names else v for n, v in fp.params.fixed.items()}
    history = [[] for _ in range(k_folds)]
    bad, running = [0] * k_folds, [True] * k_folds
    progress = engine._progress(range(opts.epochs), desc, opts.show_progress)
    for epoch in progress:
        if hasattr(fp.template, "set_epoch"):
            fp.template.set_epoch(epoch)
        fp.template.train()
        lr = lrs[epoch]
        orders = [t[torch.randperm(len(t), generator=g)] for t, g in zip(train_idx, generators)]
        full = [len(o) // batch_size for o in orders]
        steps = max(full)
        # [S, K, B]: fold k's s-th batch, or a stand-in (its first samples) where it has none
        stand_in = [o[torch.arange(batch_size) % len(o)] for o in orders]
        index = [torch.stack([o[s * batch_size:(s + 1) * batch_size] if s < f else x
                              for o, f, x in zip(orders, full, stand_in)]) for s in range(steps)]
        index = torch.stack(index).to(dev) if steps else None
        losses, counted = [], []
        torch.manual_seed(epoch_seed(rng_seed, epoch))
        # stopped folds leave the stack (their checkpoint is kept); the rest run on. Compiled, the stack keeps
        # its shape (a stopped fold computes and is never stepped), so the step is compiled once
        rows = [k for k in range(k_folds) if running[k]]
        sub = None if len(rows) == k_folds else rows
        train_sub = None if compile else sub
        rows_t = torch.tensor(rows, device=dev)
        for s in range(steps):
            active = [k for k in rows if s < full[k]]
            loss = step(index[s] if train_sub is None else index[s][rows_t], train_sub, active,
                        list(range(k_folds)) if train_sub is None else rows)
            losses.append(loss if train_sub is None else torch.zeros(k_folds, device=dev).index_copy_(0, rows_t, loss))
            counted.append([s < f for f in full])
        for k, (o, f) in enumerate(zip(orders, full)):   # the epoch's short last batch of each fold
            if running[k] and len(o) > f * batch_size:
                torch.manual_seed(epoch_seed(rng_seed, epoch, k))
                loss = step(o[f * batch_size:].to(dev).unsqueeze(0), [k], [k], [k])
                losses.append(torch.zeros(k_folds, device=loss.device).index_copy_(0, torch.tensor([k], device=loss.device), loss))
                counted.append([j == k for j in range(k_folds)])
        watch.flush()
        loss_matrix = torch.stack(losses).float().cpu().numpy() if losses else np.zeros((0, k_folds))   # one sync per epoch
        mask = np.asarray(counted, dtype=bool).reshape(loss_matrix.shape)
        emo_logits, val_preds = fp.predict(eval_data, eval_pad[rows_t], rows=sub)
        for j, k in enumerate(rows):
            fold_losses = loss_matrix[mask[:, k], k]
            res = fold_results(emo_logits[j], val_preds[j], eval_data, eval_idx[k], k, opts, calculate_results,
                               fp.cls_loss)
            metric = metric_value(res, opts.metric_name)
            history[k].append({"epoch": epoch + 1, "train_loss": float(fold_losses.mean()) if len(fold_losses) else float("nan"),
                               "eval_loss": res["loss"], "eval_metric": metric, "lr": lr})
            if metric > best[k][0]:
                best[k] = (metric, epoch, res)
                best_flat[k] = fp.params.data[k]
                fp.params.snapshot_buffers(best_fixed, k)
                bad[k] = 0
            else:
                bad[k] += 1
            if opts.early_stop and bad[k] >= opts.early_stop:
                running[k] = False
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(running=sum(running), best=" ".join(f"{b[0]:.3f}" for b in best))
        if not any(running):
            break
    for k, b in enumerate(best):
        if b[2] is None:
            raise RuntimeError(f"fold {k + 1}: no epoch produced a finite eval metric; check the data and --lr")
    test_results = [[] for _ in range(k_folds)]
    for t in tests:
        emo_logits, val_preds = fp.predict(t, None, flat=best_flat, fixed=best_fixed)
        for k in range(k_folds):
            test_results[k].append(fold_results(emo_logits[k], val_preds[k], t, torch.arange(len(t), device=t.device),
                                                k, opts, calculate_results, fp.cls_loss))
    seconds = (time.time() - start) / k_folds       # wall time shared by the K folds
    return [engine.FoldResult(best_epoch=b[1] + 1, best_metric=b[0], eval_results=b[2], test_results=test_results[k],
                              history=history[k], seconds=seconds,
                              state_dict=fp.params.state_dict(fp.outer, fp.template, best_flat[k], k, best_fixed)
                              if keep_state else None)
            for k, b in enumerate(best)]
