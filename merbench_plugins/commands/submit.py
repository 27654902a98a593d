"""`python -m merbench_plugins submit PRED... --challenge NAME`: predictions -> the exact file a challenge takes.

    # MER2023: one `name,discrete,valence` CSV per test set (main-release.py's write_to_csv_pred)
    python -m merbench_plugins submit test1.npz test2.npz test3.npz --challenge mer2023 --out submission/
    # MER2025 / MER2026 Track 1: `name,discrete` over every row of the track's candidate list, in its order
    python -m merbench_plugins submit ens/test1.npz --challenge mer2025 --candidates track_all_candidates.csv
    python -m merbench_plugins submit ens/test1.npz --challenge mer2026 --merbench . --out submission.csv

Predictions are paired with the candidate list by sample name (upstream's submission.py pairs them by
position). Refused, with one line: a candidate without a prediction, a prediction for a name that is no
candidate, a candidate listed twice, a label set other than the challenge's. Warned: a row count other
than the official checker's, and test labels that are all one class (the placeholders of secret labels).
"""
import argparse
import os
import runpy
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..cli import refuse
from ..constants import MER2023_EMOTIONS
from ..evaluate import predictions
from ..evaluate.predictions import PredictionError, Predictions
from ..fileio import write_csv


@dataclass(frozen=True)
class Challenge:
    columns: Tuple[str, ...]            # the submission's header
    classes: Tuple[str, ...]            # its label set (MERBench's emos_mer)
    raw_dataset: Optional[str] = None   # config.DATA_DIR key of the folder with the candidate list
    candidates: Optional[str] = None    # candidate list file name (column 'name')
    rows: Optional[int] = None          # rows the official evaluation.py asserts
    default_out: str = "submission.csv"


CHALLENGES = {
    "mer2023": Challenge(("name", "discrete", "valence"), MER2023_EMOTIONS, default_out="submission"),
    "mer2025": Challenge(("name", "discrete"), MER2023_EMOTIONS, "MER2025Raw", "track_all_candidates.csv", 20000),
    "mer2026": Challenge(("name", "discrete"), MER2023_EMOTIONS, "MER2026Raw", "track_all_candidates.csv"),
}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m merbench_plugins submit",
                                description="Predictions (result/predict/ensemble npz) -> a challenge's submission file.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("files", nargs="+", help="prediction npz files (mer2023: one per test set; Track 1: one)")
    p.add_argument("--challenge", required=True, choices=sorted(CHALLENGES))
    p.add_argument("--candidates", help="Track 1: the candidate list CSV (default: track_all_candidates.csv in "
                                        "--merbench's config.DATA_DIR['MER202xRaw'])")
    p.add_argument("--merbench", help="Track 1: the toolkit root whose config.py locates the candidate list")
    p.add_argument("--splits", help="mer2023: the test set of each file, comma-separated (default: recorded in the "
                                    "file, or its name's test1_/test2_/test3_ prefix)")
    p.add_argument("--out", help="mer2023: output folder (<split>-pred.csv); Track 1: the CSV (default: submission.csv)")
    return p


def check_classes(pred: Predictions, challenge: str):
    want = CHALLENGES[challenge].classes
    if pred.emo_probs is None:
        raise PredictionError(f"{pred.source} has no emotion probabilities; {challenge} needs a discrete label")
    if set(pred.classes) != set(want):
        raise PredictionError(f"{pred.source} predicts classes {list(pred.classes)}, but {challenge} takes "
                              f"{list(want)}")


def warn_dummy(pred: Predictions):
    if pred.dummy_labels():
        print(f"warning: {pred.dummy_note(pred.split or os.path.basename(pred.source))}", file=sys.stderr)


def candidate_list(name: str, challenge: Challenge, candidates: Optional[str], merbench: Optional[str]) -> str:
    if candidates:
        return candidates
    if not merbench:
        raise PredictionError(f"{name}: pass --candidates {challenge.candidates} or --merbench ROOT")
    config_path = os.path.join(merbench, "config.py")
    if not os.path.isfile(config_path):
        raise PredictionError(f"{merbench} has no config.py: pass the toolkit root")
    raw = (runpy.run_path(config_path).get("DATA_DIR") or {}).get(challenge.raw_dataset)
    if raw is None:
        raise PredictionError(f"{config_path} has no DATA_DIR[{challenge.raw_dataset!r}]; pass --candidates")
    return os.path.join(raw if os.path.isabs(raw) else os.path.join(merbench, raw), challenge.candidates)


@dataclass(frozen=True)
class SubmitRequest:
    """The command line resolved once: the challenge, its input files and where its file(s) go."""

    name: str                                    # the --challenge name
    challenge: Challenge
    files: Tuple[str, ...]
    out: str                                     # MER2023: a folder; Track 1: the CSV
    splits: Tuple[Optional[str], ...] = ()       # MER2023: the test set of each file (None: the file says)
    candidates: Optional[str] = None             # Track 1: the candidate list

    @classmethod
    def resolve(cls, ns: argparse.Namespace) -> "SubmitRequest":
        challenge, files = CHALLENGES[ns.challenge], tuple(ns.files)
        out = ns.out or challenge.default_out
        if ns.challenge == "mer2023":
            splits = tuple(ns.splits.split(",")) if ns.splits else (None,) * len(files)
            if len(splits) != len(files):
                raise PredictionError(f"--splits names {len(splits)} test sets for {len(files)} files")
            return cls(ns.challenge, challenge, files, out, splits=splits)
        if len(files) != 1:
            raise PredictionError(f"{ns.challenge} takes one prediction file (ensemble several first), got {len(files)}")
        return cls(ns.challenge, challenge, files, out,
                   candidates=candidate_list(ns.challenge, challenge, ns.candidates, ns.merbench))


def track1(req: SubmitRequest) -> List[str]:
    challenge = req.challenge
    pred = predictions.load(req.files[0])
    check_classes(pred, req.name)
    path = req.candidates
    names = predictions.read_names_csv(path)
    repeated = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if repeated:
        raise PredictionError(f"{path} lists {len(repeated)} name(s) more than once (e.g. {repeated[0]!r})")
    missing = sorted(set(names) - set(pred.names))
    if missing:
        raise PredictionError(f"{len(missing)} of {len(names)} candidates in {path} have no prediction in "
                              f"{pred.source} (e.g. {missing[0]!r}): predict every candidate")
    extra = sorted(set(pred.names) - set(names))
    if extra:
        raise PredictionError(f"{pred.source} predicts {len(extra)} name(s) that are not candidates in {path} "
                              f"(e.g. {extra[0]!r}): wrong candidate list or prediction file?")
    warn_dummy(pred)
    if challenge.rows is not None and len(names) != challenge.rows:
        print(f"warning: {path} has {len(names)} candidates; {req.name}'s evaluation.py asserts "
              f"{challenge.rows} rows, so the server expects the full candidate list", file=sys.stderr)
    out = req.out
    pred = pred.select(names)
    write_csv(out, list(challenge.columns), [[n, c] for n, c in zip(pred.names, pred.predicted)])
    print(f"{req.name}: {len(names)} rows (every candidate once, in the list's order) -> {out}")
    return [out]


def mer2023(req: SubmitRequest) -> List[str]:
    out_dir, written, seen = req.out, [], set()
    for path, split in zip(req.files, req.splits):
        pred = predictions.load(path)
        split = split or pred.split
        if not split:
            raise PredictionError(f"{path}: which test set is it? pass --splits (e.g. --splits test1,test2,test3)")
        if split in seen:
            raise PredictionError(f"two files for {split}: ensemble them first")
        seen.add(split)
        check_classes(pred, req.name)
        if pred.valpreds is None:
            raise PredictionError(f"{path} has no valence predictions; MER2023's files need a valence column")
        warn_dummy(pred)
        out = os.path.join(out_dir, f"{split}-pred.csv")
        write_csv(out, list(req.challenge.columns),
                  [[n, c, repr(float(v))] for n, c, v in zip(pred.names, pred.predicted, pred.valpreds)])
        print(f"{split}: {len(pred)} rows -> {out}")
        written.append(out)
    return written


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        req = SubmitRequest.resolve(args)
        (mer2023 if req.name == "mer2023" else track1)(req)
    except PredictionError as exc:
        return refuse(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
