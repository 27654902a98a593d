"""`python -m merbench_plugins demo`: synthetic MER2023-shaped data -> train the robust models and the
`attention` baseline with MERBench's protocol -> side-by-side table, then a robustness evaluation
(modality subsets, missing rates, noise) with a plot. A few minutes on 2 CPU cores."""
import argparse
import os
import sys
import time

from ..data.synthetic import generate
from ..train import runner

DEFAULT_MODELS = "attention,attention_robust_v2,attention_robust_v4"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins demo", description=__doc__.split(": ", 1)[1])
    p.add_argument("--out", default="demo_out", help="folder for the data (data/) and the runs (runs/)")
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated registered models")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs per fold")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", type=int, default=800, help="synthetic training samples")
    p.add_argument("--test", type=int, default=300, help="synthetic samples per test set")
    p.add_argument("--no_robust_eval", action="store_true", help="skip the missing-modality / noise evaluation")
    a = p.parse_args(argv)
    start = time.time()
    data = os.path.join(a.out, "data")
    if not os.path.isfile(os.path.join(data, "label-6way.npz")):
        info = generate(data, n_train=a.train, n_test=a.test, seed=0)
        print(f"synthetic data -> {data}: " + ", ".join(f"{k} {v['samples']} ({v['samples_with_missing']} with missing "
                                                          f"modalities)" for k, v in info["splits"].items()))
    else:
        print(f"using existing synthetic data in {data}")
    print("test1 = clean, test2 = missing + noisy modalities, test3 = no valence labels\n")
    code = runner.main([data, "--model", a.models, "--epochs", str(a.epochs), "--early_stop", "8", "--folds",
                        str(a.folds), "--seed", str(a.seed), "--device", a.device,
                        "--out", os.path.join(a.out, "runs")] + ([] if a.no_robust_eval else ["--robust_eval"]))
    print(f"\ndemo finished in {time.time() - start:.0f}s; summaries and result files in {os.path.join(a.out, 'runs')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
