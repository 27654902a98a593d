# shellcheck shell=bash
# The body of train_v2.sh / train_v4.sh (sourced after common.sh with MP_NAME and MP_MODEL set).

mp_train_usage() {
    cat <<USAGE
usage: ./$MP_NAME.sh [--dry-run] [--out DIR] [--standalone DATA_DIR] [-- FLAGS...]

Train $MP_MODEL with MERBench's protocol, one run per seed: inside MERBench
(MERBENCH_ROOT/main-robust.py, installed by install.py) or, with --standalone DATA_DIR, on a
MERBench-layout feature folder with \`python -m merbench_plugins train\` (no MERBench needed).
Jobs go round-robin over GPUS, one job per GPU at a time (on CPU, JOBS at a time); each run writes
OUT/$MP_MODEL/seed<seed>/run.log, and at the end OUT/summary.md + summary.csv hold mean ± std over
the seeds. Rerunning with the same --out skips finished seeds and retries failed ones.

options:
  -h, --help              this help
  -n, --dry-run           print the jobs (seed, device, command) and run nothing
  --out DIR               output folder (default: runs/$MP_NAME/<time>)
  --standalone DATA_DIR   train without MERBench on a MERBench-layout feature folder
  -- FLAGS...             passed to every run (e.g. -- --kl_weight 0.02 --batch_size 64 --quiet)

$(mp_env_help)

examples:
  MERBENCH_ROOT=~/MERTools/MERBench GPUS=0,1 SEEDS="0 1 2 3 4" ./$MP_NAME.sh
  GPUS=cpu JOBS=2 EPOCHS=5 ./$MP_NAME.sh --standalone demo_out/data -- --quiet
USAGE
}

mp_parse_args mp_train_usage "" "$@"
[[ -n "$MP_OUT" ]] || MP_OUT="runs/$MP_NAME/$(date +%Y%m%d-%H%M%S)"
mp_setup
mp_add_variant 0 "$MP_MODEL" "$MP_MODEL"
mp_main
