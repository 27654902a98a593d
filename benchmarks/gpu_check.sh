#!/usr/bin/env bash
# One short GPU check of the fold-parallel engine (< 5 minutes on one H100). From the repo root:
#     OUT=/some/dir PYTHONPATH=$PWD bash benchmarks/gpu_check.sh                 # CUDA
#     OUT=/tmp/gc PYTHONPATH=$PWD bash benchmarks/gpu_check.sh --device cpu --quick   # the same steps, tiny, on CPU
# Writes small text/markdown files under $OUT: whole_run_v2.md, amp_check.md, step_time.md, whole_run_others.md,
# env.txt and one log per stage. Stages run in priority order, each capped so the whole script stays in budget.
set -u
DEVICE=cuda
QUICK=0
BUDGET=280                       # seconds for everything after the data generation
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2;;
    --quick) QUICK=1; shift;;
    --budget) BUDGET="$2"; shift 2;;
    *) echo "unknown argument $1 (use --device cpu|cuda, --quick, --budget SECONDS)"; exit 2;;
  esac
done
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-$PWD}"
PY="${PYTHON:-python}"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
stage() {  # stage NAME CAP_SECONDS command...: runs with min(CAP, time left), logs to $OUT/NAME.log
  local name=$1 cap=$2; shift 2
  local t; t=$(left); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 10 ]; then echo "skipped: out of time" > "$OUT/$name.log"; echo "$name: skipped (out of time)"; return; fi
  echo "== $name (limit ${t}s)"
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $(( $(date +%s) - START ))s" | tee -a "$OUT/stages.txt"
  tail -n 25 "$OUT/$name.log"
}

$PY - > "$OUT/env.txt" 2>&1 <<'PYEOF'
import torch, platform
print("torch", torch.__version__, "python", platform.python_version(), "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PYEOF
cat "$OUT/env.txt"

DATA=$(mktemp -d /tmp/gpu_check_data.XXXX)
if [ "$QUICK" = 1 ]; then
  SIZE="n_train=120, n_test=40, dims=(16, 24, 8)"; EPOCHS=2; SEQ_EPOCHS=1; STEPS="--steps 2 --rounds 1 --models attention,attention_robust_v2 --feat_types utt"
else
  SIZE="n_train=3373, n_test=412, dims=(1024, 5120, 768)"; EPOCHS=20; SEQ_EPOCHS=2; STEPS="--steps 10 --rounds 3"
fi
$PY -c "from merbench_plugins.data.synthetic import generate; generate('$DATA', seed=0, frames=False, $SIZE)" \
  && echo "data: $DATA ($SIZE)"
START=$(date +%s)

# 1. V2 whole run: sequential (timed on $SEQ_EPOCHS epochs, scaled) vs fold-parallel vs --compile, 5 folds x $EPOCHS epochs,
#    with the run's counted FLOPs and the GPU's measured matmul rate (the floor columns); the table's test metric per
#    configuration shows that the compiled step trains like the eager one
stage whole_run_v2 150 $PY benchmarks/whole_run.py "$DATA" --device "$DEVICE" --models attention_robust_v2 \
  --epochs $EPOCHS --seq_epochs $SEQ_EPOCHS --compile --out "$OUT/whole_run_v2.md"
# 2. --amp run of the standalone runner: must print no FutureWarning (torch.amp.autocast, bf16 where supported)
stage amp 60 $PY -W always::FutureWarning -m merbench_plugins train "$DATA" --model attention_robust_v2 --amp \
  --device "$DEVICE" --epochs 2 --out "$OUT/amp_runs"
{ echo "# --amp check ($DEVICE)"; echo
  echo "FutureWarning lines: $(grep -c FutureWarning "$OUT/amp.log")"
  echo "autocast deprecation lines: $(grep -c 'torch.cuda.amp' "$OUT/amp.log")"
  echo "fold-parallel used: $(grep -c 'fold-parallel: the' "$OUT/amp.log")"
  echo; grep -E "^\| attention_robust_v2|^\| model" "$OUT/amp.log"; } > "$OUT/amp_check.md"
cat "$OUT/amp_check.md"
# 3. step times (the SPEC's 2.0x / 2.3x bars), utt and frames
stage step_time 45 $PY benchmarks/step_time.py --device "$DEVICE" $STEPS
cp "$OUT/step_time.log" "$OUT/step_time.md"
# 4. the other models' whole runs (no FLOP counting: it costs 3 epochs per model)
stage whole_run_others 120 $PY benchmarks/whole_run.py "$DATA" --device "$DEVICE" \
  --models attention_robust_v4,mrg_net,attention --epochs $EPOCHS --seq_epochs $SEQ_EPOCHS --no_flops \
  --out "$OUT/whole_run_others.md"
rm -rf "$DATA"
echo "done in $(( $(date +%s) - START ))s (after data generation); results in $OUT"
