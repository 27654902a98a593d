#!/usr/bin/env bash
# The V2/V4 ablation grid (each component off in turn, baseline attention) x seeds, resumable; mean ± std table.
# `./run_ablation.sh --help` lists flags, variants and settings; the grid and the launcher live in
# merbench_plugins/launch/ (this is `python -m merbench_plugins ablate`).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/common.sh"
mp_launch ablate --script run_ablation "$@"
