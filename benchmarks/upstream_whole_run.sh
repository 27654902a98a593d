#!/bin/bash
# Whole-run time, one machine: MERBench's own attention under main-release.py vs our models under the
# installed main-robust.py, on the same generated MER2023-size utterance features, 5 folds x EPOCHS epochs.
#   bash benchmarks/upstream_whole_run.sh MERBENCH_DIR OUT [TRAIN=3373] [DIMS=1024,5120,768] [GPU=0]
# MERBENCH_DIR is copied (never changed). main-release.py needs omegaconf and thop, and MERBench's toolkit
# imports openai: put them (or stand-ins) on EXTRA_PATH. GPU=-1 skips main-release.py (it needs CUDA).
set -u
SRC=$1; OUT=$2; TRAIN=${3:-3373}; DIMS=${4:-1024,5120,768}; GPU=${5:-0}; EPOCHS=${EPOCHS:-20}
REPO=$(cd "$(dirname "$0")/.." && pwd); mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$REPO${EXTRA_PATH:+:$EXTRA_PATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
D=$(mktemp -d /tmp/mer2023gen.XXXX); M=$(mktemp -d /tmp/MERBench.XXXX)
python -m merbench_plugins synth "$D" --train "$TRAIN" --test 412 --dims "$DIMS" --no_frames > "$OUT/synth.log" 2>&1 \
  || { cat "$OUT/synth.log"; exit 1; }
cp -r "$SRC"/. "$M"
sed -i "s#^\(\s*\)'MER2023': '[^']*'#\1'MER2023': '$D'#" "$M/config.py"
python "$REPO/install.py" "$M" > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
printf "attention:\n  hidden_dim: 128\n  dropout: 0.3\n  grad_clip: -1\n  lr: 1e-3\n" > "$M/attn.yaml"
cd "$M" || exit 1
FEATS="--audio_feature chinese-hubert-large-UTT --text_feature Baichuan-13B-Base-UTT --video_feature clip-vit-large-patch14-UTT --feat_type utt"
timeit() {  # timeit NAME command...: wall seconds and the last lines, appended to OUT/times.txt
  local name=$1; shift; local t0; t0=$(date +%s.%N); "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  printf "%-34s rc=%s %7.1f s\n" "$name" "$rc" "$(echo "$(date +%s.%N) - $t0" | bc)" | tee -a "$OUT/times.txt"
}
[ "$GPU" != "-1" ] && timeit release_attention python main-release.py --dataset MER2023 --model attention $FEATS \
  --epochs "$EPOCHS" --gpu "$GPU" --hyper_path attn.yaml
for m in ${MODELS:-attention_robust_v2 attention_robust_v4 mrg_net}; do
  timeit "robust_$m" python main-robust.py --dataset MER2023 --model "$m" $FEATS --epochs "$EPOCHS" --gpu "$GPU"
done
ls saved-trimodal/result | sed 's/^/  /' >> "$OUT/times.txt"
rm -rf "$D" "$M"
