"""Register the merbench-plugins models in a MERBench checkout: `python install.py /path/to/MERBench --help`."""
import sys

from merbench_plugins.cli import run_cli
from merbench_plugins.installer.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
