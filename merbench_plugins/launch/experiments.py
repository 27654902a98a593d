"""``python -m merbench_plugins seeds MODEL`` and ``... ablate``: one model over seeds, or the ablation grid
over seeds, with MERBench's protocol, on the launcher (train_v2.sh, train_v4.sh and run_ablation.sh call these).

Inside MERBench (MERBENCH_ROOT/main-robust.py, installed by install.py) or, with --standalone DATA_DIR,
``python -m merbench_plugins train`` on a MERBench-layout feature folder. Each run lives in
OUT/<variant>/seed<seed>/ (variant.json, command.txt, run.log); OUT/summary.csv and summary.md hold
mean ± std over the seeds. Settings come from the environment, as the scripts always took them.
"""
import argparse
import io
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from . import queue, slurm
from .. import runlock
from ..cli import refuse
from ..fileio import OutputError, atomic_write_text, ensure_writable_dir
from .queue import CPU, Job, LaunchError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# variant -> (model, the flags that turn one component off)
ABLATION_GRID = (
    ("attention", "attention", ()),
    ("v2_full", "attention_robust_v2", ()),
    ("v2_no_vae", "attention_robust_v2", ("--no_vae",)),
    ("v2_no_recon", "attention_robust_v2", ("--recon_weight", "0")),
    ("v2_no_cross_kl", "attention_robust_v2", ("--cross_kl_weight", "0")),
    ("v2_no_proxy_attention", "attention_robust_v2", ("--no_proxy_attention",)),
    ("v2_no_modality_dropout", "attention_robust_v2", ("--no_modality_dropout",)),
    ("v2_no_uncertainty_fusion", "attention_robust_v2", ("--no_uncertainty_fusion",)),
    ("v4_full", "attention_robust_v4", ()),
    ("v4_no_contrastive", "attention_robust_v4", ("--no_contrastive",)),
    ("v4_no_gated_fusion", "attention_robust_v4", ("--no_gated_fusion",)),
    ("v4_no_focal_smoothing", "attention_robust_v4", ("--focal_gamma", "0", "--label_smoothing", "0")),
)

ENV_HELP = """\
environment (all optional):
  MERBENCH_ROOT   MERBench checkout with merbench-plugins installed (python install.py MERBENCH_ROOT)
  GPUS            comma-separated GPU ids, one job per GPU at a time (unset: 0 if nvidia-smi sees a GPU,
                  else CPU; empty or "cpu": CPU with --gpu -1 / --device cpu)
  JOBS            parallel jobs on CPU (default 1)
  THREADS         torch threads per job (default on CPU: cores / JOBS; on GPU: the runner's default)
  SEEDS           space- or comma-separated seeds (default "0 1 2")
  DATASET         MERBench dataset name (default MER2023)
  FEAT_TYPE       utt, frm_align or frm_unalign (default utt)
  AUDIO_FEATURE / TEXT_FEATURE / VIDEO_FEATURE
                  feature folders (default: MER2023's chinese-hubert-large, Baichuan-13B-Base,
                  clip-vit-large-patch14 with -UTT or -FRA; standalone mode: from the data folder)
  EPOCHS          maximum epochs per fold (default: the runner's)
  FOLDS           cross-validation folds (standalone mode only; MERBench's dataloader fixes its own)
  EXTRA           more flags for every run (shell words), like the ones after --
  ROBUST_EVAL=1   append --robust_eval to every run (missing-modality / noise evaluation)
  PARALLEL_SEEDS=1
                  one job per variant that trains its unfinished seeds as one stacked model (the runner's
                  --seeds ... --parallel_seeds); same as --parallel-seeds
  OUT_DIR         output folder (same as --out)
  PYTHON          the Python that runs the jobs (default: this one)
  SLURM_PARTITION, SLURM_TIME (04:00:00), SLURM_GPUS (1 per task; 0 = CPU), SLURM_CPUS (4), SLURM_MEM,
  SLURM_ACCOUNT, SLURM_MAX_PARALLEL (array throttle): what each --slurm array task asks for"""


@dataclass
class Variant:
    name: str
    model: str
    flags: Tuple[str, ...] = ()
    order: int = 0


@dataclass
class Setup:
    """Everything a run's command depends on, checked once."""
    name: str
    mode: str                       # merbench | standalone
    python: str
    workdir: str
    out: str
    seeds: List[int]
    slots: List[str]
    threads: str = ""
    data: str = ""
    extra: List[str] = field(default_factory=list)      # EXTRA and the flags after --
    parallel_seeds: bool = False    # one job per variant carrying all its unfinished seeds
    slurm: bool = False             # submit SLURM arrays instead of running on the local queue
    dry_run: bool = False           # list the jobs, run nothing
    env: dict = field(default_factory=dict)

    def get(self, key, default=""):
        return self.env.get(key) or default


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise LaunchError(message)


def build_parser(command: str, prog: str, model: Optional[str] = None) -> Parser:
    """The flags; ``model`` set: a script for that one model (no MODEL argument in its usage)."""
    grid = "\n".join(f"  {v:<26}| {m:<20}| {' '.join(f)}".rstrip() for v, m, f in ABLATION_GRID)
    what = ("The ablation grid (each component off in turn, and the attention baseline) x SEEDS" if command == "ablate"
            else f"Train {model} x SEEDS" if model else "One model (MODEL) x SEEDS")
    p = Parser(prog=prog, add_help=False, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
               usage=f"{prog} {'' if command == 'ablate' or model else 'MODEL '}[--dry-run] "
                     f"{'[--only V1,V2,...] ' if command == 'ablate' else ''}[--out DIR] [--standalone DATA_DIR] "
                     "[--parallel-seeds] [--slurm] [-- FLAGS...]",
               description=textwrap.fill(
                   f"{what} with MERBench's protocol: inside MERBench (MERBENCH_ROOT/main-robust.py) or, with "
                   "--standalone DATA_DIR, on a MERBench-layout feature folder (no MERBench needed). Jobs run in "
                   "parallel, one per GPU at a time (on CPU, JOBS at a time); each writes "
                   "OUT/<variant>/seed<seed>/run.log. Resumable: a run with a summary JSON is skipped, a crashed one "
                   "is rerun (its log kept as run.log.1). At the end OUT/summary.csv and OUT/summary.md hold "
                   "mean ± std over seeds per variant, test set and metric.", 100, break_on_hyphens=False),
               epilog=(f"variants:\n{grid}\n\n" if command == "ablate" else "") + ENV_HELP + "\n\nexamples:\n" + (
                   f"  MERBENCH_ROOT=~/MERTools/MERBench GPUS=0,1,2,3 SEEDS=\"0 1 2\" {prog}\n"
                   f"  GPUS=cpu JOBS=2 EPOCHS=10 FOLDS=3 {prog} --standalone demo_out/data --only attention,v2_full"
                   if command == "ablate" else
                   f"  MERBENCH_ROOT=~/MERTools/MERBench GPUS=0,1 SEEDS=\"0 1 2 3 4\" {prog}\n"
                   f"  GPUS=cpu JOBS=2 EPOCHS=5 {prog} --standalone demo_out/data -- --quiet"))
    if command == "seeds":
        p.add_argument("model", help="a registered model (python -m merbench_plugins models)")
    p.add_argument("-h", "--help", action="store_true", help="this help")
    p.add_argument("-n", "--dry-run", action="store_true", help="list the jobs (variant, seed, device, command) "
                                                                "and run nothing")
    if command == "ablate":
        p.add_argument("--only", metavar="V1,V2,...", help="run only these variants")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/ablation, or runs/NAME/<time> for "
                                                "seeds; reuse it to resume)")
    p.add_argument("--standalone", metavar="DATA_DIR",
                   help="train without MERBench on a MERBench-layout feature folder")
    p.add_argument("--parallel-seeds", dest="parallel_seeds", action="store_true",
                   help="one job per variant: its unfinished seeds train in one process as one stacked model (S "
                        "seeds x K folds), each seed still written to OUT/<variant>/seed<seed>/; its log is "
                        "OUT/<variant>/parallel_seeds/run.log (also: PARALLEL_SEEDS=1)")
    p.add_argument("--slurm", action="store_true",
                   help="write OUT/slurm_NAME_<time>.sbatch (one array task per unfinished job) and submit it with "
                        "sbatch, plus a dependent job that writes the summary (SLURM_* below)")
    p.add_argument("--script", help=argparse.SUPPRESS)  # NAME: called by ./NAME.sh
    p.epilog = "-- FLAGS...             passed to every run (the variant's own flags come after them and win)\n\n" \
        + p.epilog
    return p


def parse(command: str, argv: Sequence[str]):
    argv = list(argv)
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    script = next((a.split("=", 1)[1] if "=" in a else argv[k + 1] for k, a in enumerate(argv)
                   if a.split("=", 1)[0] == "--script" and ("=" in a or k + 1 < len(argv))), None)
    prog = f"./{script}.sh" if script else f"python -m merbench_plugins {command}"
    model = argv[0] if script and command == "seeds" and argv and not argv[0].startswith("-") else None
    parser = build_parser(command, prog, model)
    if "-h" in argv or "--help" in argv:
        return parser, None, flags
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise LaunchError(f"unknown option {unknown[0]} (flags for the training runs go after --; see --help)")
    for name in ("out", "standalone", "only"):
        if getattr(args, name, "x") == "":
            raise LaunchError(f"--{name} needs a value (see --help)")
    return parser, args, flags


# ---------------------------------------------------------------------------------------------------
# checks: python, MERBench or the data folder, devices

def pick_python(env) -> str:
    python = env.get("PYTHON") or sys.executable
    found = shutil.which(python)
    if not found:
        raise LaunchError(f"PYTHON={python} is not a command; set PYTHON to the Python with merbench-plugins installed")
    return python


def check_import(python: str, workdir: str):
    if os.path.abspath(shutil.which(python) or python) == os.path.abspath(sys.executable):
        return   # this very Python runs us
    proc = subprocess.run([python, "-c", "import merbench_plugins"], cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise LaunchError(f"{python} cannot import merbench_plugins ({last}): pip install merbench-plugins "
                          f"(or pip install -e {REPO}), or set PYTHON to the Python that has it")


def check_merbench(root: str, python: str) -> str:
    """The absolute MERBench root, with merbench-plugins installed and current."""
    fix = ("point MERBENCH_ROOT at your MERBench checkout (MERTools/MERBench: the folder with main-release.py and "
           "toolkit/), or train without MERBench: --standalone DATA_DIR")
    if not root:
        raise LaunchError(f"MERBENCH_ROOT is not set: {fix}")
    if not os.path.isdir(root):
        raise LaunchError(f"MERBench not found: {root} is not a folder; {fix}")
    root = os.path.abspath(root)
    if not (os.path.isfile(os.path.join(root, "main-release.py")) and os.path.isdir(os.path.join(root, "toolkit"))):
        raise LaunchError(f"{root} is not a MERBench checkout (no main-release.py and toolkit/); {fix}")
    install = f"{python} -m merbench_plugins install {root}  (or: python install.py {root} in merbench-plugins)"
    if not os.path.isfile(os.path.join(root, "main-robust.py")):
        raise LaunchError(f"merbench-plugins is not installed in {root} (no main-robust.py): run  {install}")
    check_import(python, root)
    from ..installer import core
    report = io.StringIO()
    if core.check(root, python=python, out=report, err=report) != 0:
        raise LaunchError(f"merbench-plugins in {root} is not installed or not current:\n{report.getvalue()}"
                          f"run  {install}")
    return root


def words(text: str) -> List[str]:
    return text.replace(",", " ").split()


def setup(name: str, args, flags: List[str], default_out: str, env=None,
          slurm_opts: Optional[slurm.SlurmOptions] = None) -> Setup:
    env = dict(os.environ if env is None else env)
    python = pick_python(env)
    seeds = words(env.get("SEEDS", "0 1 2"))
    if not seeds:
        raise LaunchError('SEEDS is empty; e.g. SEEDS="0 1 2"')
    bad = [s for s in seeds if not s.isdigit()]
    if bad:
        raise LaunchError(f"SEEDS must be non-negative integers, got '{bad[0]}'")
    feat_type = env.get("FEAT_TYPE") or "utt"
    if feat_type not in ("utt", "frm_align", "frm_unalign"):
        raise LaunchError(f"FEAT_TYPE must be utt, frm_align or frm_unalign, got '{feat_type}'")
    if env.get("PARALLEL_SEEDS", "") not in ("", "0", "1"):
        raise LaunchError(f"PARALLEL_SEEDS must be 1 (on) or 0 (off), got '{env['PARALLEL_SEEDS']}'")
    for key in ("EPOCHS", "FOLDS", "THREADS"):
        if env.get(key) and not env[key].isdigit():
            raise LaunchError(f"{key} must be an integer, got '{env[key]}'")
    out = os.path.abspath(args.out or env.get("OUT_DIR") or default_out)
    try:
        ensure_writable_dir(out, "--out (or OUT_DIR)")
    except OutputError as exc:
        raise LaunchError(str(exc)) from None
    s = Setup(name=name, mode="standalone" if args.standalone else "merbench", python=python, workdir=os.getcwd(),
              out=out, seeds=[int(x) for x in seeds], slots=[], env=env,
              parallel_seeds=bool(getattr(args, "parallel_seeds", False)) or env.get("PARALLEL_SEEDS") == "1",
              slurm=bool(args.slurm), dry_run=bool(args.dry_run))
    if args.standalone:
        s.data = os.path.abspath(args.standalone)
        if not os.path.isdir(s.data):
            raise LaunchError(f"data folder not found: {s.data} "
                              "(create one with: python -m merbench_plugins synth DIR)")
        if not any(f.startswith("label") and f.endswith(".npz") for f in os.listdir(s.data)):
            raise LaunchError(f"no label*.npz in {s.data}: not a MERBench-layout feature folder")
        check_import(python, s.workdir)
    else:
        s.workdir = check_merbench(env.get("MERBENCH_ROOT", ""), python)
        if env.get("FOLDS"):
            print(f"note: FOLDS={env['FOLDS']} is ignored in MERBench mode (MERBench's dataloader sets the folds)")
    if slurm_opts is not None:        # every array task: GPU 0 of its own allocation, or its CPUs
        s.python = shutil.which(python) or python    # the compute nodes may have another PATH
        s.slots = [slurm_opts.device]
        s.threads = env.get("THREADS") or (str(slurm_opts.cpus) if slurm_opts.device == CPU else "")
    else:
        s.slots = queue.parse_slots(env["GPUS"] if "GPUS" in env else detect_gpus(), env.get("JOBS") or "1")
        cores = os.cpu_count() or 1
        s.threads = env.get("THREADS") or (str(max(1, cores // len(s.slots))) if s.slots[0] == CPU else "")
    try:
        s.extra = shlex.split(env.get("EXTRA", "")) + list(flags)
    except ValueError as exc:
        raise LaunchError(f"EXTRA is not valid shell words ({exc}): {env.get('EXTRA')!r}")
    return s


def detect_gpus() -> str:
    """GPUS unset: GPU 0 when nvidia-smi lists a GPU, else CPU."""
    if shutil.which("nvidia-smi") is None:
        return CPU
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return CPU
    return "0" if any(line.startswith("GPU") for line in listing.splitlines()) else CPU


# ---------------------------------------------------------------------------------------------------
# jobs

def feature_flags(s: Setup) -> List[str]:
    """MERBench: MER2023's features by default; standalone: only those set (the data folder has the rest)."""
    feat_type = s.get("FEAT_TYPE", "utt")
    level = "UTT" if feat_type == "utt" else "FRA"
    defaults = {"audio": f"chinese-hubert-large-{level}", "text": f"Baichuan-13B-Base-{level}",
                "video": f"clip-vit-large-patch14-{level}"}
    flags = ["--feat_type", feat_type]
    for m, default in defaults.items():
        value = s.get(f"{m.upper()}_FEATURE", default if s.mode == "merbench" else "")
        flags += [f"--{m}_feature", value] if value else []
    return flags


def command(s: Setup, v: Variant, seed, device: str, run_dir: str) -> List[str]:
    """The run's argv; the order matters (argparse: the last one wins): ours, the user's, the variant's.
    ``seed`` a list: one run of all those seeds as one stacked model, ``run_dir`` holding ``{seed}``."""
    seeds = ["--seeds", ",".join(map(str, seed)), "--parallel_seeds"] if isinstance(seed, list) else ["--seed", str(seed)]
    if s.mode == "merbench":
        cmd = [s.python, "main-robust.py", "--dataset", s.get("DATASET", "MER2023"), "--model", v.model,
               *feature_flags(s), "--gpu", "-1" if device == CPU else device, *seeds,
               "--save_root", os.path.join(run_dir, "saved")]
    else:
        cmd = [s.python, "-m", "merbench_plugins", "train", s.data, "--dataset", s.get("DATASET", "MER2023"),
               "--model", v.model, *feature_flags(s), "--device", CPU if device == CPU else f"cuda:{device}",
               *seeds, "--out", run_dir]
        cmd += ["--folds", s.env["FOLDS"]] if s.get("FOLDS") else []
    cmd += ["--epochs", s.env["EPOCHS"]] if s.get("EPOCHS") else []
    cmd += ["--threads", s.threads] if s.threads else []
    cmd += s.extra + list(v.flags)
    return cmd + (["--robust_eval"] if s.get("ROBUST_EVAL") == "1" else [])


SEEDS_DIR = "parallel_seeds"     # OUT/<variant>/parallel_seeds/: the log and job.json of a variant's seeds job


def plan(s: Setup, variants: List[Variant]) -> Tuple[List[Job], List[Job]]:
    """(all jobs in grid order, the unfinished ones dealt round-robin to the slots). With parallel seeds,
    a variant's unfinished seeds (two or more) form one job; its seeds are in ``meta["seeds"]``."""
    jobs = []
    for v in variants:
        todo = [seed for seed in s.seeds if not queue.has_summary(seed_dir(s, v, seed))]
        group = s.parallel_seeds and len(todo) > 1
        for seed in s.seeds:
            if group and seed in todo:
                if seed == todo[0]:
                    jobs.append(Job(name=v.name, command=[], run_dir=os.path.join(s.out, v.name, SEEDS_DIR),
                                    workdir=s.workdir, label=f"seeds={','.join(map(str, todo))}",
                                    lock_dirs=[seed_dir(s, v, x) for x in todo],
                                    meta={"variant": v.name, "order": v.order, "model": v.model, "seeds": todo,
                                          "flags": list(v.flags), "mode": s.mode}))
                continue
            jobs.append(Job(name=v.name, command=[], run_dir=seed_dir(s, v, seed), workdir=s.workdir,
                            label=f"seed={seed}", meta_name="variant.json", lock_dirs=[seed_dir(s, v, seed)],
                            meta={"variant": v.name, "order": v.order, "model": v.model, "seed": seed,
                                  "flags": list(v.flags), "mode": s.mode}))
    pending = queue.deal([j for j in jobs if not finished(j)], s.slots)
    todo_ids, by_name = {id(j) for j in pending}, {v.name: v for v in variants}
    for job in jobs:
        job.device = job.device if id(job) in todo_ids else s.slots[0]
        v = by_name[job.name]
        if "seeds" in job.meta:
            job.command = command(s, v, job.meta["seeds"], job.device, os.path.join(s.out, v.name, "seed{seed}"))
        else:
            job.command = command(s, v, job.meta["seed"], job.device, job.run_dir)
    return jobs, pending


def seed_dir(s: Setup, v: Variant, seed: int) -> str:
    return os.path.join(s.out, v.name, f"seed{seed}")


def seed_folders(job: Job) -> List[str]:
    """The run folders a job writes: its own, or (a parallel-seeds job) its seeds' folders."""
    if "seeds" not in job.meta:
        return [job.run_dir]
    return [os.path.join(os.path.dirname(job.run_dir), f"seed{seed}") for seed in job.meta["seeds"]]


def finished(job: Job) -> bool:
    return all(queue.has_summary(d) for d in seed_folders(job))


def finished_test(jobs: List[Job]):
    """The queue's test on a job folder (a parallel-seeds job: each of its seeds has a summary)."""
    by_dir = {j.run_dir: j for j in jobs}
    return lambda run_dir: finished(by_dir[run_dir]) if run_dir in by_dir else queue.has_summary(run_dir)


SEED_DIRS = "seed_dirs.txt"      # a parallel-seeds job's folder: its seeds' run folders, one a line (for SLURM)
# the SLURM tasks' test on $DIR: a parallel-seeds job is finished when every folder in seed_dirs.txt has a summary
_HAS_SUMMARY_D = slurm.HAS_SUMMARY.replace('"$DIR"', '"$D"').replace("-quit)", "-quit 2>/dev/null)")
FINISHED = ('{ if [[ -f "$DIR/%s" ]]; then ok=1; while IFS= read -r D; do %s || ok=0; done < "$DIR/%s"; '
            '[[ $ok == 1 ]]; else %s; fi; }' % (SEED_DIRS, _HAS_SUMMARY_D, SEED_DIRS, slurm.HAS_SUMMARY))


def write_seed_meta(job: Job):
    """variant.json and command.txt in every seed folder of a parallel-seeds job (as its per-seed jobs write),
    and the list of those folders in the job's own folder."""
    if "seeds" in job.meta:
        os.makedirs(job.run_dir, exist_ok=True)
        atomic_write_text(os.path.join(job.run_dir, SEED_DIRS), "".join(d + "\n" for d in seed_folders(job)))
    for seed, folder in zip(job.meta.get("seeds", []), seed_folders(job)):
        meta = {k: v for k, v in job.meta.items() if k != "seeds"}
        queue.write_meta(Job(name=job.name, command=job.command, run_dir=folder, device=job.device,
                             workdir=job.workdir, meta_name="variant.json", meta=dict(meta, seed=seed,
                                                                                     seeds=job.meta["seeds"])))


def listing(jobs: List[Job], pending: List[Job]) -> List[str]:
    n, lines, todo = len(jobs), [], {id(j) for j in pending}
    for k, job in enumerate(jobs):
        if id(job) in todo:
            lines.append(f"[{k + 1}/{n}] run  {job.name:<28} {job.label:<9} {queue.device_label(job.device):<6} "
                         f"{job.shell_line()}")
        else:
            lines.append(f"[{k + 1}/{n}] skip {job.name:<28} {job.label:<9} (finished: {job.run_dir} has a summary)")
    return lines


def summarize_command(s: Setup) -> List[str]:
    return [s.python, "-m", "merbench_plugins", "summarize", s.out, "--out", s.out, "--group-by", "variant"]


def submit(s: Setup, pending: List[Job], opts: slurm.SlurmOptions, dry_run: bool) -> int:
    if not pending:
        print("every job has finished: nothing to submit")
        return 0
    path = slurm.script_path(s.out, s.name)
    text = slurm.array_script(s.name, pending, s.out, opts, finished=FINISHED,
                              about=" (variant x seed, or variant x its unfinished seeds)" if s.parallel_seeds
                              else " (variant x seed)")
    if dry_run:
        print(f"\ndry run: would write {path} and submit it:\n{text}")
        return 0
    for job in pending:
        queue.write_meta(job)
        write_seed_meta(job)
    os.makedirs(os.path.join(s.out, "slurm-logs"), exist_ok=True)
    slurm.write_script(path, text)
    print(f"wrote {path} ({len(pending)} array tasks)")
    status = slurm.submit(path, s.name, opts, then=summarize_command(s), then_what=f" (writes {s.out}/summary.md)")
    print("rerun with --slurm and the same settings to resubmit only unfinished jobs")
    return 1 if status == slurm.REFUSED else 0


def run(s: Setup, variants: List[Variant]) -> int:
    jobs, pending = plan(s, variants)
    n = len(jobs)
    grouped = "; unfinished seeds of a variant as one job (parallel seeds)" if s.parallel_seeds else ""
    print(f"{s.name}: {n} jobs = {len(variants)} variant(s) x {len(s.seeds)} seed(s) "
          f"({' '.join(map(str, s.seeds))}){grouped}; mode {s.mode}; out {s.out}")
    print("\n".join(listing(jobs, pending)), flush=True)
    if s.slurm:
        return submit(s, pending, slurm.SlurmOptions.from_env(s.env), s.dry_run)
    slots = f"{len(s.slots)} slot(s): {' '.join(s.slots)}"
    if s.dry_run:
        print(f"dry run: {len(pending)} to run, {n - len(pending)} finished (skipped); on {slots}")
        return 0
    os.makedirs(s.out, exist_ok=True)
    failed, busy = [], []
    if pending:
        print(f"running {len(pending)} jobs ({n - len(pending)} finished, skipped) on {slots}", flush=True)
        try:
            for job in pending:
                if not runlock.owners(job.lock_dirs):     # a busy job is skipped: its folders are not ours
                    write_seed_meta(job)
            q = queue.Queue(pending, threads=s.threads if s.slots[0] == CPU else "", finished=finished_test(pending))
            failed, busy = q.run(), q.skipped
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to resume", file=sys.stderr)
            return 130
    else:
        print(f"all {n} jobs finished already (skipped)")
    rc = 0
    if not queue.has_summary(s.out):
        print(f"no finished runs under {s.out}: nothing to summarize", file=sys.stderr)
        rc = 1
    else:
        from ..evaluate import summarize
        print(flush=True)
        rc = 1 if summarize.main([s.out, "--out", s.out, "--group-by", "variant"]) else 0
    if failed:
        print(f"\n{len(failed)} job(s) failed (rerun the same command to retry just those):", file=sys.stderr)
        for job, code in failed:
            print(f"  {job.name} {job.label} (exit {code}, log {job.log})", file=sys.stderr)
        rc = 1
    if busy:
        print(f"\n{len(busy)} job(s) not run: another live process trains them (named above); rerun the same "
              "command once it has finished", file=sys.stderr)
        rc = 1
    return rc


# ---------------------------------------------------------------------------------------------------
# the commands

def _main(command: str, argv) -> int:
    parser, args, flags = parse(command, sys.argv[1:] if argv is None else argv)
    if args is None:
        print(parser.format_help())
        return 0
    if command == "ablate":
        known = [v for v, _, _ in ABLATION_GRID]
        only = [v for v in (args.only or "").replace(" ", "").split(",") if v]
        for v in only:
            if v not in known:
                raise LaunchError(f"unknown variant '{v}' in --only; known: {' '.join(known)}")
        variants = [Variant(v, m, f, k) for k, (v, m, f) in enumerate(ABLATION_GRID) if not only or v in only]
        name, default_out = args.script or "ablate", "runs/ablation"
    else:
        variants = [Variant(args.model, args.model)]
        name = args.script or f"seeds_{args.model}"
        default_out = f"runs/{name}/{time.strftime('%Y%m%d-%H%M%S')}"
    opts = slurm.SlurmOptions.from_env() if args.slurm else None
    s = setup(name, args, flags, default_out, slurm_opts=opts)
    return run(s, variants)


def main_for(command: str):
    def main(argv=None) -> int:
        try:
            return _main(command, argv)
        except LaunchError as exc:
            sys.stdout.flush()
            return refuse(exc)
    main.__doc__ = f"``python -m merbench_plugins {command}``"
    return main


seeds_main = main_for("seeds")
ablate_main = main_for("ablate")
