# shellcheck shell=bash
# The body of train_v2.sh / train_v4.sh (sourced after common.sh with MP_NAME and MP_MODEL set):
# `python -m merbench_plugins seeds MP_MODEL` under the script's name (its help, output folder, SLURM name).
mp_launch seeds "$MP_MODEL" --script "$MP_NAME" "$@"
