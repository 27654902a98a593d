"""Time of one fold-parallel training step (K folds stacked, forward + backward + fused AdamW) per configuration.

For measuring levers: each configuration is a registered model with flag overrides, e.g.
``attention_robust_v2:recon_mode=sketch,dropout=0``; ``@compile`` at the end compiles the step; the
switches ``+bernoulli`` (``F.dropout`` instead of the explicit masks), ``+randmask`` (the dropout mask from
a ``rand_like`` float per element instead of 16-bit words), ``+oldcorrupt`` (the corruption augmentation
as it was: its own normal and uniform draws per modality, ``torch.where`` selections, ``std``),
``+nostats`` (the model computes presence and feature std itself at every step) and ``+accumulate`` (the
gradients also zeroed and accumulated into a flat buffer, as before they went straight to the optimizer)
put one earlier lever back, e.g. ``attention_robust_v2+bernoulli``. Batch 32
at MER2023 sizes (audio 1024, text 5120, video 768) by default, random batches drawn from a device
corpus the engine's way (per-sample statistics computed once). The configurations run interleaved
(``--rounds`` rounds of ``--steps`` steps), CPU time per step on the CPU (so other processes on a shared
machine skew the ratios less), and the table gives the median over rounds and the ratio to the first
configuration, plus the median of the per-round ratios (robust against load that changes between rounds).

    python benchmarks/fold_step.py attention_robust_v2 attention_robust_v2:recon_mode=sketch attention \\
        [--folds 5] [--batch_size 32] [--steps 10] [--rounds 7] [--threads 1] [--device cpu] [--profile]
"""
import argparse
import statistics
import sys
import time

import torch

from merbench_plugins import registry
from merbench_plugins.train import engine, parallel

DIMS = dict(audio_dim=1024, text_dim=5120, video_dim=768)


SWITCHES = ("bernoulli", "randmask", "oldcorrupt", "nostats", "accumulate")


def rand_like_dropout(x, p, training=True):
    """The previous explicit dropout: floor(u + 1 - p) / (1 - p) from one rand_like float per element."""
    if not training or p <= 0:
        return x
    keep = 1.0 - p
    return x * torch.rand_like(x).add_(keep).floor_().mul_(1.0 / keep)


def previous_corrupt_inputs(inputs, present, p, strength=4.0, std=None):
    """The previous corruption augmentation (same kinds and distributions): per modality its own normal and
    uniform draws over every sample, selections by ``torch.where``, ``std`` where not precomputed."""
    import math
    from merbench_plugins.modules import masking

    def corrupt_one(x, kind, active, std):
        b = x.shape[0]
        valid = masking.data_mask(x) if x.dim() == 3 else 1.0
        u = lambda: masking._per_sample(torch.rand(b, device=x.device, dtype=x.dtype), x)   # noqa: E731
        std = masking._per_sample(x.flatten(1).std(dim=1) if std is None else std.to(x.dtype), x)
        amplitude = (0.5 + (strength - 0.5) * u()) * std
        noise = torch.randn_like(x)
        drop_dims = x.shape[-1:] if x.dim() == 2 else (1, x.shape[-1])
        kept = (torch.rand((b,) + tuple(drop_dims), device=x.device) >= 0.3 + 0.6 * u()).to(x.dtype)
        gain = torch.exp((2 * u() - 1) * math.log(max(strength, 1.0)))
        k = masking._per_sample(kind.masked_fill(~active, -1), x)
        one = torch.ones((), device=x.device, dtype=x.dtype)
        scale = torch.where(k == 1, kept, torch.where(k == 2, gain, one))
        out = x * scale + ((k == 0).to(x.dtype) * amplitude) * noise * valid
        return torch.where(k == 3, x.roll(1, dims=0), out)

    b, m = present.shape
    eligible = (present.sum(dim=1) >= 2) & (torch.rand(b, device=present.device) < p)
    scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
    which = torch.nn.functional.one_hot(scores.argmax(dim=1), m).bool() & eligible.unsqueeze(1)
    kind = torch.randint(4, (b,), device=present.device)
    return [corrupt_one(x, kind, which[:, i], None if std is None else std[:, i])
            if masking.any_true(which[:, i]) else x for i, x in enumerate(inputs)], which


class previous_levers:
    """Context manager: the switches' earlier formulations patched in (bernoulli, randmask, oldcorrupt)."""

    def __init__(self, switches):
        self.switches = switches

    def __enter__(self):
        from merbench_plugins.modules import dropout as dropout_module, masking
        self.saved = (dropout_module.dropout, masking.corrupt_inputs)
        if "bernoulli" in self.switches:
            dropout_module.dropout = lambda x, p, training=True: torch.nn.functional.dropout(x, p, training)
        elif "randmask" in self.switches:
            dropout_module.dropout = rand_like_dropout
        if "oldcorrupt" in self.switches:
            masking.corrupt_inputs = previous_corrupt_inputs
        return self

    def __exit__(self, *exc):
        from merbench_plugins.modules import dropout as dropout_module, masking
        dropout_module.dropout, masking.corrupt_inputs = self.saved


def parse_config(spec: str):
    """'model[+switch...]:key=value,key=value[@compile]' -> (model, overrides, compile, switches)."""
    compile_ = spec.endswith("@compile")
    spec = spec[:-len("@compile")] if compile_ else spec
    head, _, rest = spec.partition(":")
    name, *switches = head.split("+")
    unknown = set(switches) - set(SWITCHES)
    if unknown:
        raise SystemExit(f"unknown switch {sorted(unknown)[0]!r} in {spec!r}: use {', '.join(SWITCHES)}")
    entry = registry.get_model_entry(name)
    defaults = entry.config.defaults() if getattr(entry, "config", None) else {}
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kind = type(defaults[key]) if key in defaults and defaults[key] is not None else str
        overrides[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return name, overrides, compile_, set(switches)


class FoldStep:
    """One stacked model, its optimizer and a device corpus; ``run(n)`` times n steps (ms per step)."""

    def __init__(self, spec, folds, batch_size, device, dims, n=3373):
        name, overrides, compile_, self.switches = parse_config(spec)
        args = argparse.Namespace(**dict(dims, output_dim1=6, output_dim2=1, feat_type="utt", **overrides))
        opts = engine.TrainOptions(epochs=10, show_progress=False)
        self.fp = parallel.FoldParallel(lambda: registry.create_model(name, args), list(range(folds)), opts, device,
                                        compile=compile_)
        if hasattr(self.fp.template, "set_epoch"):
            self.fp.template.set_epoch(5)
        g = torch.Generator().manual_seed(0)
        features = {k: torch.randn(n, dims[k[:-1] + "_dim"], generator=g) for k in ("audios", "texts", "videos")}
        self.data = parallel.DeviceData(features, torch.randint(0, 6, (n,), generator=g), torch.randn(n, generator=g),
                                        [str(i) for i in range(n)], device)
        statistics_fn = getattr(self.fp.template, "input_statistics", None)
        if statistics_fn is not None and "nostats" not in self.switches:
            self.data = self.data.with_derived(statistics_fn)
        self.opt = parallel.StackedAdam(self.fp.params, opts)
        self.folds, self.batch_size, self.device = folds, batch_size, device
        self.flat_grad = torch.zeros_like(self.fp.params.data) if "accumulate" in self.switches else None
        self.grad_views = None if self.flat_grad is None else list(self.fp.params.views(self.flat_grad).values())

    def run(self, steps):
        with previous_levers(self.switches):
            return self._run(steps)

    def _run(self, steps):
        self.fp.template.train()
        cuda = self.device.type == "cuda"
        clock = time.perf_counter if cuda else time.process_time
        times = []
        for _ in range(steps):
            index = torch.randint(0, len(self.data), (self.folds, self.batch_size), device=self.device)
            if cuda:
                torch.cuda.synchronize()
            t = clock()
            loss, grads = self.fp.train_step(*self.data.take(index))
            if self.flat_grad is not None:   # the earlier path: zero a flat gradient, accumulate into its rows
                self.flat_grad.zero_()
                for view, g, transposed in zip(self.grad_views, grads, self.fp.params.transposed):
                    view.add_(g.transpose(1, 2) if transposed else g)
            self.opt.step(list(range(self.folds)), 1e-3, grads)
            if cuda:
                torch.cuda.synchronize()
            times.append(clock() - t)
        return statistics.median(times) * 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="+", help="model[:flag=value,...][@compile]; the first is the reference")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dims", default="1024,5120,768", help="audio,text,video input widths")
    p.add_argument("--profile", action="store_true", help="profile the first configuration instead (top ops)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dims = dict(zip(("audio_dim", "text_dim", "video_dim"), (int(d) for d in a.dims.split(","))))
    steppers = {c: FoldStep(c, a.folds, a.batch_size, device, dims) for c in a.configs}
    for s in steppers.values():
        s.run(3)                                                      # warm-up (and compilation)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            steppers[a.configs[0]].run(a.steps)
        events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
        print(f"profiled: {sum(e.self_cpu_time_total for e in events) / 1e3 / a.steps:.1f} ms/step (with profiler)")
        for e in events[:40]:
            print(f"{e.key:32s} {e.self_cpu_time_total / 1e3 / a.steps:7.2f} ms/step {e.count // a.steps:5d}x  "
                  f"{str(e.input_shapes)[:80]}")
        return 0
    times = {c: [] for c in a.configs}
    for _ in range(a.rounds):
        for c, s in steppers.items():
            times[c].append(s.run(a.steps))
    ref = a.configs[0]
    print(f"device {device}, threads {torch.get_num_threads()}, {a.folds} folds x batch {a.batch_size}, dims {a.dims}, "
          f"{a.rounds} interleaved rounds of {a.steps} steps")
    print("| configuration | ms/step (median) | ratio | median per-round ratio | min ms/step |")
    print("|---|---|---|---|---|")
    for c in a.configs:
        med = statistics.median(times[c])
        per_round = statistics.median(t / r for t, r in zip(times[c], times[ref]))
        print(f"| `{c}` | {med:.1f} | {med / statistics.median(times[ref]):.2f} | {per_round:.2f} | {min(times[c]):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
