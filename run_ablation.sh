#!/usr/bin/env bash
# The V2/V4 ablation grid (each component off in turn, baseline attention) x seeds, resumable; mean ± std table.
set -euo pipefail
MP_NAME=run_ablation
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/common.sh"

# variant | model | flags that turn one component off
ABLATION_GRID="
attention                 | attention           |
v2_full                   | attention_robust_v2 |
v2_no_vae                 | attention_robust_v2 | --no_vae
v2_no_recon               | attention_robust_v2 | --recon_weight 0
v2_no_cross_kl            | attention_robust_v2 | --cross_kl_weight 0
v2_no_proxy_attention     | attention_robust_v2 | --no_proxy_attention
v2_no_modality_dropout    | attention_robust_v2 | --no_modality_dropout
v2_no_uncertainty_fusion  | attention_robust_v2 | --no_uncertainty_fusion
v4_full                   | attention_robust_v4 |
v4_no_contrastive         | attention_robust_v4 | --no_contrastive
v4_no_gated_fusion        | attention_robust_v4 | --no_gated_fusion
v4_no_focal_smoothing     | attention_robust_v4 | --focal_gamma 0 --label_smoothing 0
"

ablation_usage() {
    cat <<USAGE
usage: ./run_ablation.sh [--dry-run] [--only V1,V2,...] [--out DIR] [--standalone DATA_DIR] [--slurm] [-- FLAGS...]

The ablation grid x SEEDS with MERBench's protocol: inside MERBench (MERBENCH_ROOT/main-robust.py)
or, with --standalone DATA_DIR, on a MERBench-layout feature folder (no MERBench needed). Jobs run in
parallel, one per GPU at a time (on CPU, JOBS at a time); each writes OUT/<variant>/seed<seed>/run.log.
Resumable: a run with a summary JSON is skipped, a crashed one is rerun. At the end OUT/summary.csv
and OUT/summary.md hold mean ± std over seeds per variant, test set and metric.

variants:
$(printf '%s\n' "$ABLATION_GRID" | sed -e '/^$/d' -e 's/^/  /')

options:
  -h, --help              this help
  -n, --dry-run           list the jobs (variant, seed, command) and run nothing
  --only V1,V2,...        run only these variants
  --out DIR               output folder (default: runs/ablation; reuse it to resume)
  --standalone DATA_DIR   train without MERBench on a MERBench-layout feature folder
  --slurm                 write OUT/slurm_run_ablation_<time>.sbatch (one array task per unfinished job)
                          and submit it with sbatch, plus a dependent job that writes the summary;
                          env SLURM_PARTITION, SLURM_TIME (04:00:00), SLURM_GPUS (1 per task; 0 = CPU),
                          SLURM_CPUS (4), SLURM_MEM, SLURM_ACCOUNT, SLURM_MAX_PARALLEL (array throttle)
  -- FLAGS...             passed to every run (the variant's own flags come after them and win)

$(mp_env_help)

examples:
  MERBENCH_ROOT=~/MERTools/MERBench GPUS=0,1,2,3 SEEDS="0 1 2" ./run_ablation.sh
  GPUS=cpu JOBS=2 EPOCHS=10 FOLDS=3 ./run_ablation.sh --standalone demo_out/data --only attention,v2_full,v2_no_vae
USAGE
}

mp_parse_args ablation_usage "only slurm" "$@"
[[ -n "$MP_OUT" ]] || MP_OUT=runs/ablation
mp_setup

known=" "
order=0
while IFS='|' read -r variant model flags; do
    variant="${variant//[[:space:]]/}"; model="${model//[[:space:]]/}"
    [[ -n "$variant" ]] || continue
    known+="$variant "
    if [[ -z "$MP_ONLY" || ",${MP_ONLY// /}," == *",$variant,"* ]]; then
        read -r -a flag_words <<< "$flags" || true
        mp_add_variant "$order" "$variant" "$model" ${flag_words[@]+"${flag_words[@]}"}
    fi
    order=$((order + 1))
done <<< "$ABLATION_GRID"

if [[ -n "$MP_ONLY" ]]; then
    IFS=',' read -r -a wanted <<< "${MP_ONLY// /}"
    for v in "${wanted[@]}"; do
        [[ "$known" == *" $v "* ]] || mp_die "unknown variant '$v' in --only; known:$known"
    done
fi
mp_main
