"""`python install.py MERBENCH_DIR [...]` / `python -m merbench_plugins install MERBENCH_DIR [...]`."""
import argparse
import sys

from . import core
from ..cli import refuse, run_cli
from .patching import PatchError

EPILOG = f"""\
what it changes (all undone by --uninstall, byte for byte):
  toolkit/models/__init__.py, toolkit/data/__init__.py, toolkit/dataloader/__init__.py
      a marked block after MODEL_MAP / MODEL_DATASET_MAP / DATALOADER_MAP that adds our models/datasets
  toolkit/model-tune.yaml    a marked block with the tuning grids of our models
  main-robust.py             a launcher into merbench_plugins' runner
  {core.BACKUP_DIR}/   the originals of the files above
exit status: 0 done (or, with --check, installed and current); 1 refused (name collisions,
read-only files) or not current; 2 bad arguments or not a MERBench checkout.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="install.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Register the merbench-plugins models in a MERBench checkout (MERTools/MERBench, "
                    "MER2024, MER2025 toolkits), or check or undo that.")
    p.add_argument("merbench_dir", metavar="MERBENCH_DIR", help="the folder with main-release.py and toolkit/")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="write nothing; exit 0 only if every patch is present and current")
    mode.add_argument("--uninstall", action="store_true",
                      help="remove our blocks, main-robust.py, the vendored copy and the backups")
    p.add_argument("--dry-run", action="store_true", help="print the unified diff of what would change; write nothing")
    p.add_argument("--force", action="store_true",
                   help="install despite name collisions (our map entries win; existing YAML grids are kept) "
                        "and replace a foreign main-robust.py (backed up)")
    p.add_argument("--vendor", action="store_true",
                   help=f"also copy this package to MERBENCH_DIR/{core.VENDOR_DIR}/, for a MERBench Python "
                        f"that cannot import it")
    p.add_argument("--python", metavar="PY", default=None,
                   help="the Python that runs MERBench, to test that it can import merbench_plugins "
                        "(default: this one)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.check and (args.dry_run or args.force or args.vendor):
        parser.error("--check writes nothing; it takes no --dry-run, --force or --vendor")
    if args.uninstall and (args.force or args.vendor):
        parser.error("--uninstall takes no --force or --vendor (it removes whatever install.py added)")
    try:
        if args.check:
            return core.check(args.merbench_dir, python=args.python)
        if args.uninstall:
            return core.uninstall(args.merbench_dir, dry_run=args.dry_run)
        return core.install(args.merbench_dir, force=args.force, vendor=args.vendor, dry_run=args.dry_run,
                            python=args.python)
    except (core.InstallerError, PatchError) as exc:
        return refuse(exc, getattr(exc, "code", 1))


if __name__ == "__main__":
    sys.exit(run_cli(main))
