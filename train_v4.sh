#!/usr/bin/env bash
# Train attention_robust_v4 inside MERBench (main-robust.py), one job per seed over the GPUs, then mean ± std.
set -euo pipefail
MP_NAME=train_v4
MP_MODEL=attention_robust_v4
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/common.sh"
# shellcheck source=scripts/train_one_model.sh
source "$MP_REPO/scripts/train_one_model.sh"
