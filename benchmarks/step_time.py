"""Training-step time of every registered feature model relative to the `attention` baseline.

Batch 32 at MER2023 feature sizes (audio 1024, text 5120, video 768), utt and frames; one step =
forward + loss + backward + AdamW step. Prints a table of milliseconds and ratios and checks the
SPEC bars (V2 <= 2.0x, V4 <= 2.3x the baseline); exit code 1 if a bar is missed.

    python benchmarks/step_time.py [--device cuda] [--frames 32] [--steps 20] [--threads 1]
        [--models attention_robust_v2,attention_robust_v2:recon_mode=sketch,...]

A model may carry flag overrides (``name:flag=value,flag=value``) and switches that put an earlier
formulation back (``name+oldcorrupt+randmask``), as in fold_step.py; the bars apply to the plain names
(the declared defaults).
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from merbench_plugins import create_model, get_model_entry, list_models
from fold_step import parse_config, previous_levers  # noqa: E402 - the sibling script (benchmarks/ is on sys.path when run)

BARS = {"attention_robust_v2": 2.0, "attention_robust_v4": 2.3}
DIMS = dict(audio_dim=1024, text_dim=5120, video_dim=768)


class Stepper:
    """One model with its optimizer and a fixed batch; ``run(n)`` times n training steps."""

    def __init__(self, spec, feat_type, device, batch_size, frames):
        torch.manual_seed(0)
        self.device = device
        name, overrides, _, self.switches = parse_config(spec)
        self.model = create_model(name, dict(DIMS, output_dim1=6, output_dim2=1, feat_type=feat_type,
                                             **overrides)).to(device).train()
        if hasattr(self.model, "set_epoch"):
            self.model.set_epoch(100)  # full modality dropout / KL weight: the steady-state cost
        self.loss_fn = self.model.classification_loss() if hasattr(self.model, "classification_loss") else F.cross_entropy
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        shape = (lambda d: (batch_size, d)) if feat_type == "utt" else (lambda d: (batch_size, frames, d))
        self.batch = {k: torch.randn(*shape(DIMS[k[:-1] + "_dim"]), device=device) for k in ("audios", "texts", "videos")}
        self.emos = torch.randint(0, 6, (batch_size,), device=device)
        self.vals = torch.randn(batch_size, device=device)

    def run(self, steps):
        with previous_levers(self.switches):
            return self._run(steps)

    def _run(self, steps):
        # CPU: process CPU time, so that other processes on a shared machine do not skew the ratios
        clock = time.perf_counter if self.device.type == "cuda" else time.process_time
        times = []
        for _ in range(steps):
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t = clock()
            _, e, v, inter = self.model(self.batch)
            loss = self.loss_fn(e, self.emos) + F.mse_loss(v.squeeze(1), self.vals) + inter
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(clock() - t)
        return statistics.median(times) * 1000


def measure(names, feat_type, device, batch_size, frames, steps, rounds):
    """Round-robin over the models, ``rounds`` times; the best round's median per model.

    Interleaving and taking the minimum keeps the ratios honest on a shared, noisy machine.
    """
    steppers = {n: Stepper(n, feat_type, device, batch_size, frames) for n in names}
    for s in steppers.values():
        s.run(3)  # warm-up
    best = {n: float("inf") for n in names}
    for _ in range(rounds):
        for n, s in steppers.items():
            best[n] = min(best[n], s.run(steps))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--frames", type=int, default=32, help="sequence length of the frame inputs")
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (best round counts)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--models", default=None, help="comma-separated subset (default: every feature model)")
    p.add_argument("--feat_types", default="utt,frm_unalign")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    names = a.models.split(",") if a.models else [n for n in list_models() if get_model_entry(n).dataset == "feat"]
    names = ["attention"] + [n for n in names if n != "attention"]
    ok = True
    print(f"device {device}, batch {a.batch_size}, dims {DIMS}, frames {a.frames}, threads {torch.get_num_threads()}")
    print(f"| {'model':<22} | {'feat_type':<11} | {'ms/step':>8} | {'ratio':>6} | bar   |")
    print(f"|{'-' * 24}|{'-' * 13}|{'-' * 10}|{'-' * 8}|-------|")
    for feat_type in a.feat_types.split(","):
        times = measure(names, feat_type, device, a.batch_size, a.frames, a.steps, a.rounds)
        base = times["attention"]
        for name in names:
            ms = times[name]
            ratio = ms / base
            bar = BARS.get(name)
            verdict = "" if bar is None else ("ok" if ratio <= bar else "MISS")
            ok &= verdict != "MISS"
            print(f"| {name:<22} | {feat_type:<11} | {ms:8.2f} | {ratio:6.2f} | {(f'{bar}x ' + verdict) if bar else '':<5} |",
                  flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
