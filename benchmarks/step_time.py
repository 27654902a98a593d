"""Training-step time of every registered feature model relative to the `attention` baseline.

Batch 32 at MER2023 feature sizes (audio 1024, text 5120, video 768), utt and frames; one step =
forward + loss + backward + AdamW step. Prints a table of milliseconds and ratios and checks the
SPEC bars (V2 <= 2.0x, V4 <= 2.3x the baseline); exit code 1 if a bar is missed.

    python benchmarks/step_time.py [--device cuda] [--frames 32] [--steps 20] [--threads 1]
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from merbench_plugins import create_model, get_model_entry, list_models

BARS = {"attention_robust_v2": 2.0, "attention_robust_v4": 2.3}
DIMS = dict(audio_dim=1024, text_dim=5120, video_dim=768)


def step_time(name, feat_type, device, batch_size, frames, steps, warmup=5):
    torch.manual_seed(0)
    args = dict(DIMS, output_dim1=6, output_dim2=1, feat_type=feat_type)
    model = create_model(name, args).to(device).train()
    if hasattr(model, "set_epoch"):
        model.set_epoch(100)  # full modality dropout / KL weight: the steady-state cost
    loss_fn = model.classification_loss() if hasattr(model, "classification_loss") else F.cross_entropy
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = (lambda d: (batch_size, d)) if feat_type == "utt" else (lambda d: (batch_size, frames, d))
    batch = {k: torch.randn(*shape(DIMS[k[:-1] + "_dim"]), device=device) for k in ("audios", "texts", "videos")}
    emos = torch.randint(0, 6, (batch_size,), device=device)
    vals = torch.randn(batch_size, device=device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        _, e, v, inter = model(batch)
        loss = loss_fn(e, emos) + F.mse_loss(v.squeeze(1), vals) + inter
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--frames", type=int, default=32, help="sequence length of the frame inputs")
    p.add_argument("--steps", type=int, default=20)
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
        base = None
        for name in names:
            ms = step_time(name, feat_type, device, a.batch_size, a.frames, a.steps)
            base = base or ms
            ratio = ms / base
            bar = BARS.get(name)
            verdict = "" if bar is None else ("ok" if ratio <= bar else "MISS")
            ok &= verdict != "MISS"
            print(f"| {name:<22} | {feat_type:<11} | {ms:8.2f} | {ratio:6.2f} | {(f'{bar}x ' + verdict) if bar else '':<5} |",
                  flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
