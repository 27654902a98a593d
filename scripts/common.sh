# shellcheck shell=bash
# Shared by train_v2.sh, train_v4.sh and run_ablation.sh (sourced, not run): find the Python, check that
# it imports merbench_plugins, and hand over to `python -m merbench_plugins seeds|ablate`, which parses
# the flags and the environment, runs the queue or writes the SLURM array (merbench_plugins/launch/).

MP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

mp_die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# mp_launch COMMAND ARGS...: run the launcher's COMMAND with PYTHON (default: python, else python3)
mp_launch() {
    local py="${PYTHON:-}" out
    if [[ -n "$py" ]]; then
        command -v "$py" >/dev/null 2>&1 || mp_die "PYTHON=$py is not a command"
    elif command -v python >/dev/null 2>&1; then
        py=python
    elif command -v python3 >/dev/null 2>&1; then
        py=python3
    else
        mp_die "no python on PATH; set PYTHON=/path/to/python (the one with merbench-plugins installed)"
    fi
    out="$("$py" -c 'import merbench_plugins' 2>&1)" || mp_die "$py cannot import merbench_plugins" \
        "(${out##*$'\n'}): pip install merbench-plugins (or pip install -e $MP_REPO), or set PYTHON to the Python that has it"
    # -c rather than -m: the same entry point, and a PYTHON that wraps python passes plain code through
    exec "$py" -c 'import sys; from merbench_plugins.__main__ import main; sys.exit(main())' "$@"
}
