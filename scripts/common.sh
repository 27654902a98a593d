# shellcheck shell=bash
# Shared by train_v2.sh, train_v4.sh and run_ablation.sh (sourced, not run): option parsing, checks,
# the job list, a scheduler (one job per GPU at a time, round-robin; JOBS parallel on CPU), resume,
# SLURM array scripts and the final mean ± std table.
#
# A job is one (variant, model, seed, flags) run in its own folder OUT/<variant>/seed<seed>/ with
# variant.json, command.txt and run.log; it is finished when a run summary JSON exists there.

MP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

mp_die() { printf 'error: %s\n' "$*" >&2; exit 2; }
mp_note() { printf '%s\n' "$*"; }

mp_abspath() {  # absolute path without requiring it to exist
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/${1#./}" ;;
    esac
}

mp_quote() {  # the words, shell-quoted, space-separated (for printing and eval)
    local out="" w
    for w in "$@"; do out+="$(printf '%q' "$w") "; done
    printf '%s' "${out% }"
}

mp_json_str() {  # a JSON string literal
    local s="$1"
    s="${s//\\/\\\\}"; s="${s//\"/\\\"}"; s="${s//$'\t'/\\t}"; s="${s//$'\n'/\\n}"
    printf '"%s"' "$s"
}

mp_pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || mp_die "PYTHON=$PYTHON is not a command"
        MP_PY="$PYTHON"
    elif command -v python >/dev/null 2>&1; then
        MP_PY=python
    elif command -v python3 >/dev/null 2>&1; then
        MP_PY=python3
    else
        mp_die "no python on PATH; set PYTHON=/path/to/python (the one with merbench-plugins installed)"
    fi
}

# ---------------------------------------------------------------------------------------------------
# options

MP_DRY_RUN=0
MP_SLURM=0
MP_STANDALONE=""
MP_OUT="${OUT_DIR:-}"
MP_ONLY=""
MP_PASSTHROUGH=()

# mp_parse_args USAGE_FUNCTION ALLOWED_EXTRA_OPTIONS "$@"   (extra: "only slurm")
mp_parse_args() {
    local usage_fn="$1" allowed=" $2 "
    shift 2
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -h|--help) "$usage_fn"; exit 0 ;;
            -n|--dry-run) MP_DRY_RUN=1 ;;
            --standalone)
                [[ $# -ge 2 && -n "$2" ]] || mp_die "--standalone needs a DATA_DIR (a MERBench-layout feature folder)"
                MP_STANDALONE="$2"; shift ;;
            --standalone=*) MP_STANDALONE="${1#*=}" ;;
            --out)
                [[ $# -ge 2 && -n "$2" ]] || mp_die "--out needs a folder"
                MP_OUT="$2"; shift ;;
            --out=*) MP_OUT="${1#*=}" ;;
            --only|--only=*)
                [[ "$allowed" == *" only "* ]] || mp_die "unknown option $1 (see --help)"
                if [[ "$1" == --only ]]; then
                    [[ $# -ge 2 && -n "$2" ]] || mp_die "--only needs a comma-separated list of variants"
                    MP_ONLY="$2"; shift
                else
                    MP_ONLY="${1#*=}"
                fi ;;
            --slurm)
                [[ "$allowed" == *" slurm "* ]] || mp_die "unknown option $1 (see --help)"
                MP_SLURM=1 ;;
            --) shift; MP_PASSTHROUGH=("$@"); break ;;
            *) mp_die "unknown option $1 (flags for the training runs go after --; see --help)" ;;
        esac
        shift
    done
}

mp_env_help() {
    cat <<'EOF'
Environment (all optional):
  MERBENCH_ROOT   MERBench checkout with merbench-plugins installed (python install.py MERBENCH_ROOT)
  GPUS            comma-separated GPU ids, one job per GPU at a time (unset: 0 if nvidia-smi sees a GPU,
                  else CPU; empty or "cpu": CPU with --gpu -1 / --device cpu)
  JOBS            parallel jobs on CPU (default 1)
  THREADS         torch threads per job (default on CPU: cores / JOBS; on GPU: the runner's default)
  SEEDS           space- or comma-separated seeds (default "0 1 2")
  DATASET         MERBench dataset name (default MER2023)
  FEAT_TYPE       utt, frm_align or frm_unalign (default utt)
  AUDIO_FEATURE / TEXT_FEATURE / VIDEO_FEATURE
                  feature folders (default: MER2023's chinese-hubert-large, Baichuan-13B-Base,
                  clip-vit-large-patch14 with -UTT or -FRA; standalone mode: from the data folder)
  EPOCHS          maximum epochs per fold (default: the runner's)
  FOLDS           cross-validation folds (standalone mode only; MERBench's dataloader fixes its own)
  EXTRA           more flags for every run (word-split), like the ones after --
  ROBUST_EVAL=1   append --robust_eval to every run (missing-modality / noise evaluation)
  OUT_DIR         output folder (same as --out)
  PYTHON          the Python to run (default: python, else python3)
EOF
}

# ---------------------------------------------------------------------------------------------------
# setup: mode checks, devices, common flags

mp_setup() {
    mp_pick_python
    local s seeds="${SEEDS-0 1 2}"
    MP_SEEDS=()
    read -r -a MP_SEEDS <<< "${seeds//,/ }" || true
    [[ ${#MP_SEEDS[@]} -gt 0 ]] || mp_die "SEEDS is empty; e.g. SEEDS=\"0 1 2\""
    for s in "${MP_SEEDS[@]}"; do
        [[ "$s" =~ ^[0-9]+$ ]] || mp_die "SEEDS must be non-negative integers, got '$s'"
    done
    MP_DATASET="${DATASET:-MER2023}"
    MP_FEAT_TYPE="${FEAT_TYPE:-utt}"
    case "$MP_FEAT_TYPE" in utt|frm_align|frm_unalign) ;; *) mp_die "FEAT_TYPE must be utt, frm_align or frm_unalign, got '$MP_FEAT_TYPE'" ;; esac
    [[ -z "${EPOCHS:-}" || "$EPOCHS" =~ ^[0-9]+$ ]] || mp_die "EPOCHS must be an integer, got '$EPOCHS'"
    [[ -z "${FOLDS:-}" || "$FOLDS" =~ ^[0-9]+$ ]] || mp_die "FOLDS must be an integer, got '$FOLDS'"

    if [[ -n "$MP_STANDALONE" ]]; then
        MP_MODE=standalone
        MP_DATA="$(mp_abspath "$MP_STANDALONE")"
        [[ -d "$MP_DATA" ]] || mp_die "data folder not found: $MP_DATA (create one with: $MP_PY -m merbench_plugins synth DIR)"
        compgen -G "$MP_DATA/label*.npz" >/dev/null || mp_die "no label*.npz in $MP_DATA: not a MERBench-layout feature folder"
        MP_WORKDIR="$PWD"
        mp_check_import
    else
        MP_MODE=merbench
        mp_check_merbench
        [[ -z "${FOLDS:-}" ]] || mp_note "note: FOLDS=$FOLDS is ignored in MERBench mode (MERBench's dataloader sets the folds)"
    fi

    # devices: one slot per GPU, or JOBS CPU slots
    local gpus
    if [[ -z "${GPUS+set}" ]]; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then gpus=0; else gpus=cpu; fi
    else
        gpus="$GPUS"
    fi
    MP_SLOTS=()
    if [[ -z "${gpus// /}" || "$gpus" == cpu ]]; then
        local jobs="${JOBS:-1}"
        [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || mp_die "JOBS must be a positive integer, got '$jobs'"
        local i
        for ((i = 0; i < jobs; i++)); do MP_SLOTS+=(cpu); done
        local cores
        cores="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
        MP_THREADS="${THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}"
    else
        local g
        IFS=',' read -r -a MP_SLOTS <<< "${gpus// /}"
        for g in "${MP_SLOTS[@]}"; do
            [[ "$g" =~ ^[0-9]+$ ]] || mp_die "GPUS must be comma-separated GPU ids (or empty/cpu for CPU), got '$gpus'"
        done
        MP_THREADS="${THREADS:-}"
    fi
    [[ -z "$MP_THREADS" || "$MP_THREADS" =~ ^[0-9]+$ ]] || mp_die "THREADS must be an integer, got '$MP_THREADS'"

    MP_EXTRA=()
    [[ -z "${EXTRA:-}" ]] || read -r -a MP_EXTRA <<< "$EXTRA" || true
    MP_OUT="$(mp_abspath "$MP_OUT")"
}

mp_check_import() {
    local out
    if ! out="$(cd "$MP_WORKDIR" && "$MP_PY" -c 'import merbench_plugins' 2>&1)"; then
        mp_die "$MP_PY cannot import merbench_plugins (${out##*$'\n'}): pip install merbench-plugins (or pip install -e $MP_REPO), or set PYTHON to the Python that has it"
    fi
}

mp_check_merbench() {
    local fix="point MERBENCH_ROOT at your MERBench checkout (MERTools/MERBench: the folder with main-release.py and toolkit/), or train without MERBench: --standalone DATA_DIR"
    [[ -n "${MERBENCH_ROOT:-}" ]] || mp_die "MERBENCH_ROOT is not set: $fix"
    [[ -d "$MERBENCH_ROOT" ]] || mp_die "MERBench not found: $MERBENCH_ROOT is not a folder; $fix"
    MERBENCH_ROOT="$(cd "$MERBENCH_ROOT" && pwd)"
    MP_WORKDIR="$MERBENCH_ROOT"
    [[ -f "$MERBENCH_ROOT/main-release.py" && -d "$MERBENCH_ROOT/toolkit" ]] \
        || mp_die "$MERBENCH_ROOT is not a MERBench checkout (no main-release.py and toolkit/); $fix"
    local install_cmd="$MP_PY $MP_REPO/install.py $MERBENCH_ROOT"
    [[ -f "$MERBENCH_ROOT/main-robust.py" ]] \
        || mp_die "merbench-plugins is not installed in $MERBENCH_ROOT (no main-robust.py): run  $install_cmd"
    mp_check_import
    local out
    if ! out="$("$MP_PY" -m merbench_plugins install "$MERBENCH_ROOT" --check 2>&1)"; then
        printf '%s\n' "$out" >&2
        mp_die "merbench-plugins in $MERBENCH_ROOT is not installed or not current (above); run  $install_cmd"
    fi
}

mp_feature_flags() {  # feature flags for one run (MERBench: MER2023 defaults; standalone: only those set)
    local level=UTT
    [[ "$MP_FEAT_TYPE" == utt ]] || level=FRA
    MP_FEATURE_FLAGS=(--feat_type "$MP_FEAT_TYPE")
    if [[ "$MP_MODE" == merbench ]]; then
        MP_FEATURE_FLAGS+=(--audio_feature "${AUDIO_FEATURE:-chinese-hubert-large-$level}"
                           --text_feature "${TEXT_FEATURE:-Baichuan-13B-Base-$level}"
                           --video_feature "${VIDEO_FEATURE:-clip-vit-large-patch14-$level}")
    else
        [[ -z "${AUDIO_FEATURE:-}" ]] || MP_FEATURE_FLAGS+=(--audio_feature "$AUDIO_FEATURE")
        [[ -z "${TEXT_FEATURE:-}" ]] || MP_FEATURE_FLAGS+=(--text_feature "$TEXT_FEATURE")
        [[ -z "${VIDEO_FEATURE:-}" ]] || MP_FEATURE_FLAGS+=(--video_feature "$VIDEO_FEATURE")
    fi
}

# ---------------------------------------------------------------------------------------------------
# jobs

MP_JOB_VARIANT=(); MP_JOB_ORDER=(); MP_JOB_MODEL=(); MP_JOB_SEED=(); MP_JOB_FLAGS=()

# mp_add_variant ORDER NAME MODEL [FLAGS...]: one job per seed
mp_add_variant() {
    local order="$1" name="$2" model="$3" seed
    shift 3
    for seed in "${MP_SEEDS[@]}"; do
        MP_JOB_VARIANT+=("$name"); MP_JOB_ORDER+=("$order"); MP_JOB_MODEL+=("$model"); MP_JOB_SEED+=("$seed")
        MP_JOB_FLAGS+=("$(mp_quote "$@")")
    done
}

mp_run_dir() { printf '%s/%s/seed%s' "$MP_OUT" "${MP_JOB_VARIANT[$1]}" "${MP_JOB_SEED[$1]}"; }

mp_job_done() {  # a run summary JSON exists (standalone: summary_*.json; MERBench: */summary/*.json)
    local dir="$1"
    [[ -d "$dir" ]] || return 1
    [[ -n "$(find "$dir" -type f -name '*.json' ! -name '.*' \( -name 'summary_*' -o -path '*/summary/*' \) -print -quit)" ]]
}

# mp_job_command I DEVICE: sets MP_CMD (a shell-quoted string, run in MP_WORKDIR)
mp_job_command() {
    local i="$1" device="$2" dir
    dir="$(mp_run_dir "$i")"
    mp_feature_flags
    local cmd=()
    if [[ "$MP_MODE" == merbench ]]; then
        local gpu=-1
        [[ "$device" == cpu ]] || gpu="$device"
        cmd=("$MP_PY" main-robust.py --dataset "$MP_DATASET" --model "${MP_JOB_MODEL[$i]}" "${MP_FEATURE_FLAGS[@]}"
             --gpu "$gpu" --seed "${MP_JOB_SEED[$i]}" --save_root "$dir/saved")
    else
        local dev=cpu
        [[ "$device" == cpu ]] || dev="cuda:$device"
        cmd=("$MP_PY" -m merbench_plugins train "$MP_DATA" --dataset "$MP_DATASET" --model "${MP_JOB_MODEL[$i]}"
             "${MP_FEATURE_FLAGS[@]}" --device "$dev" --seed "${MP_JOB_SEED[$i]}" --out "$dir")
        [[ -z "${FOLDS:-}" ]] || cmd+=(--folds "$FOLDS")
    fi
    [[ -z "${EPOCHS:-}" ]] || cmd+=(--epochs "$EPOCHS")
    [[ -z "$MP_THREADS" ]] || cmd+=(--threads "$MP_THREADS")
    # order matters (argparse: the last one wins): user flags, then the variant's own, which must hold
    MP_CMD="$(mp_quote "${cmd[@]}" ${MP_EXTRA[@]+"${MP_EXTRA[@]}"} ${MP_PASSTHROUGH[@]+"${MP_PASSTHROUGH[@]}"})"
    [[ -z "${MP_JOB_FLAGS[$i]}" ]] || MP_CMD+=" ${MP_JOB_FLAGS[$i]}"
    if [[ "${ROBUST_EVAL:-0}" == 1 ]]; then MP_CMD+=" --robust_eval"; fi
}

mp_write_run_meta() {  # variant.json (read by summarize) and command.txt, atomically
    local i="$1" dir="$2" cmd="$3" tmp
    mkdir -p "$dir"
    tmp="$(mktemp "$dir/.variant.XXXXXX")"
    printf '{"variant": %s, "order": %s, "model": %s, "seed": %s, "flags": %s, "mode": %s}\n' \
        "$(mp_json_str "${MP_JOB_VARIANT[$i]}")" "${MP_JOB_ORDER[$i]}" "$(mp_json_str "${MP_JOB_MODEL[$i]}")" \
        "${MP_JOB_SEED[$i]}" "$(mp_json_str "${MP_JOB_FLAGS[$i]}")" "$(mp_json_str "$MP_MODE")" > "$tmp"
    mv -f "$tmp" "$dir/variant.json"
    tmp="$(mktemp "$dir/.command.XXXXXX")"
    printf 'cd %s && %s\n' "$(printf '%q' "$MP_WORKDIR")" "$cmd" > "$tmp"
    mv -f "$tmp" "$dir/command.txt"
}

mp_rotate_log() {  # keep the log of a crashed attempt as run.log.1, .2, ...
    local log="$1" k=1
    [[ -e "$log" ]] || return 0
    while [[ -e "$log.$k" ]]; do k=$((k + 1)); done
    mv -f "$log" "$log.$k"
}

mp_device_label() { if [[ "$1" == cpu ]]; then printf 'cpu'; else printf 'gpu:%s' "$1"; fi; }

# mp_plan: MP_PENDING (ids of unfinished jobs; mp_run_all deals them round-robin to the slots), one line per job
mp_plan() {
    local n=${#MP_JOB_VARIANT[@]} i k=0 nslots=${#MP_SLOTS[@]} dir status device
    MP_PENDING=()
    for ((i = 0; i < n; i++)); do
        dir="$(mp_run_dir "$i")"
        if mp_job_done "$dir"; then
            status=skip; device="${MP_SLOTS[0]}"
        else
            status=run; device="${MP_SLOTS[$((k % nslots))]}"; k=$((k + 1)); MP_PENDING+=("$i")
        fi
        mp_job_command "$i" "$device"
        if [[ "$status" == skip ]]; then
            printf '[%d/%d] skip %-28s seed=%-4s (finished: %s has a summary)\n' "$((i + 1))" "$n" \
                "${MP_JOB_VARIANT[$i]}" "${MP_JOB_SEED[$i]}" "$dir"
        else
            printf '[%d/%d] run  %-28s seed=%-4s %-6s cd %s && %s\n' "$((i + 1))" "$n" "${MP_JOB_VARIANT[$i]}" \
                "${MP_JOB_SEED[$i]}" "$(mp_device_label "$device")" "$(printf '%q' "$MP_WORKDIR")" "$MP_CMD"
        fi
    done
}

# one slot: its jobs one after the other; writes "id rc seconds" lines to STATUS_FILE
mp_run_slot() {
    local status_file="$1" device="$2"
    shift 2
    local child="" i dir log rc start
    trap '[[ -z "$child" ]] || kill "$child" 2>/dev/null; exit 143' TERM INT
    for i in "$@"; do
        dir="$(mp_run_dir "$i")"
        if mp_job_done "$dir"; then  # finished by someone else meanwhile (e.g. a second invocation)
            printf '%s skip 0\n' "$i" >> "$status_file"; continue
        fi
        mp_job_command "$i" "$device"
        mp_write_run_meta "$i" "$dir" "$MP_CMD"
        log="$dir/run.log"
        mp_rotate_log "$log"
        printf 'start %-28s seed=%-4s %-6s log: %s\n' "${MP_JOB_VARIANT[$i]}" "${MP_JOB_SEED[$i]}" \
            "$(mp_device_label "$device")" "$log"
        start=$SECONDS
        (
            cd "$MP_WORKDIR" || exit 1
            if [[ "$device" == cpu && -n "$MP_THREADS" ]]; then export OMP_NUM_THREADS="$MP_THREADS" MKL_NUM_THREADS="$MP_THREADS"; fi
            eval "exec $MP_CMD"
        ) > "$log" 2>&1 < /dev/null &
        child=$!
        rc=0
        wait "$child" || rc=$?
        child=""
        if [[ $rc -eq 0 ]] && ! mp_job_done "$dir"; then
            rc=1; printf 'the run exited 0 but wrote no summary JSON in %s\n' "$dir" >> "$log"
        fi
        printf '%s %s %s\n' "$i" "$rc" "$((SECONDS - start))" >> "$status_file"
        if [[ $rc -eq 0 ]]; then
            printf 'done  %-28s seed=%-4s in %ss\n' "${MP_JOB_VARIANT[$i]}" "${MP_JOB_SEED[$i]}" "$((SECONDS - start))"
        else
            printf 'FAIL  %-28s seed=%-4s exit %s after %ss; last lines of %s:\n' "${MP_JOB_VARIANT[$i]}" \
                "${MP_JOB_SEED[$i]}" "$rc" "$((SECONDS - start))" "$log"
            tail -n 5 "$log" | sed 's/^/      /'
        fi
    done
}

mp_run_all() {
    local nslots=${#MP_SLOTS[@]} s k status_dir pids=() ids
    status_dir="$(mktemp -d "${TMPDIR:-/tmp}/mp-jobs.XXXXXX")"
    # shellcheck disable=SC2064
    trap "kill \${pids[*]+\${pids[*]}} 2>/dev/null; wait; rm -rf '$status_dir'; echo 'interrupted: rerun the same command to resume' >&2; exit 130" INT TERM
    for ((s = 0; s < nslots; s++)); do
        ids=()
        for ((k = s; k < ${#MP_PENDING[@]}; k += nslots)); do ids+=("${MP_PENDING[$k]}"); done
        [[ ${#ids[@]} -gt 0 ]] || continue
        mp_run_slot "$status_dir/slot$s" "${MP_SLOTS[$s]}" "${ids[@]}" &
        pids+=($!)
    done
    local p
    for p in ${pids[@]+"${pids[@]}"}; do wait "$p" || true; done
    trap - INT TERM
    MP_FAILED=()
    local id rc secs
    while read -r id rc secs; do
        [[ "$rc" == 0 || "$rc" == skip ]] || MP_FAILED+=("${MP_JOB_VARIANT[$id]} seed ${MP_JOB_SEED[$id]} (exit $rc, log $(mp_run_dir "$id")/run.log)")
    done < <(cat "$status_dir"/slot* 2>/dev/null || true)
    rm -rf "$status_dir"
}

mp_summarize() {  # mean ± std table over all finished runs under MP_OUT
    local found
    found="$(find "$MP_OUT" -type f -name '*.json' ! -name '.*' \( -name 'summary_*' -o -path '*/summary/*' \) -print -quit 2>/dev/null || true)"
    if [[ -z "$found" ]]; then
        printf 'no finished runs under %s: nothing to summarize\n' "$MP_OUT" >&2
        return 1
    fi
    printf '\n'
    "$MP_PY" -m merbench_plugins summarize "$MP_OUT" --out "$MP_OUT" --group-by variant
}

# ---------------------------------------------------------------------------------------------------
# SLURM: one array task per pending job; a dependent job writes the summary

mp_slurm_slots() {  # every array task gets its own allocation: GPU 0 of it, or its CPUs
    MP_PY="$(command -v "$MP_PY")"  # an absolute path: the compute nodes may have another PATH
    if [[ "${SLURM_GPUS:-1}" == 0 ]]; then
        MP_SLOTS=(cpu); MP_THREADS="${THREADS:-${SLURM_CPUS:-4}}"
    else
        MP_SLOTS=(0); MP_THREADS="${THREADS:-}"
    fi
}

mp_slurm() {
    local n=${#MP_PENDING[@]} script stamp i k gpus="${SLURM_GPUS:-1}"
    if [[ $n -eq 0 ]]; then
        mp_note "every job has finished: nothing to submit"; return 0
    fi
    stamp="$(date +%Y%m%d-%H%M%S)"
    script="$MP_OUT/slurm_${MP_NAME}_${stamp}.sbatch"
    local body dirs="" cmds=""
    body="#!/bin/bash
#SBATCH --job-name=mp-${MP_NAME}
#SBATCH --array=0-$((n - 1))${SLURM_MAX_PARALLEL:+%$SLURM_MAX_PARALLEL}
#SBATCH --time=${SLURM_TIME:-04:00:00}
#SBATCH --cpus-per-task=${SLURM_CPUS:-4}
#SBATCH --output=$MP_OUT/slurm-logs/%A_%a.out"
    [[ "$gpus" == 0 ]] || body+=$'\n'"#SBATCH --gres=gpu:$gpus"
    [[ -z "${SLURM_PARTITION:-}" ]] || body+=$'\n'"#SBATCH --partition=$SLURM_PARTITION"
    [[ -z "${SLURM_ACCOUNT:-}" ]] || body+=$'\n'"#SBATCH --account=$SLURM_ACCOUNT"
    [[ -z "${SLURM_MEM:-}" ]] || body+=$'\n'"#SBATCH --mem=$SLURM_MEM"
    for ((k = 0; k < n; k++)); do
        i="${MP_PENDING[$k]}"
        mp_job_command "$i" "${MP_SLOTS[0]}"
        [[ $MP_DRY_RUN == 1 ]] || mp_write_run_meta "$i" "$(mp_run_dir "$i")" "$MP_CMD"
        dirs+=$'\n'"  $k) DIR=$(printf '%q' "$(mp_run_dir "$i")") ;;  # ${MP_JOB_VARIANT[$i]} seed ${MP_JOB_SEED[$i]}"
        cmds+=$'\n'"  $k) $MP_CMD ;;"
    done
    body+="
# written by ${MP_NAME}.sh --slurm: one array task per unfinished job (variant x seed); a task whose
# run has a summary JSON already exits at once, so resubmitting this script is safe.
set -euo pipefail
case \"\$SLURM_ARRAY_TASK_ID\" in$dirs
  *) echo \"no job \$SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;
esac
mkdir -p \"\$DIR\"
if [[ -n \"\$(find \"\$DIR\" -type f -name '*.json' ! -name '.*' \\( -name 'summary_*' -o -path '*/summary/*' \\) -print -quit)\" ]]; then
  echo \"finished already: \$DIR\"; exit 0
fi
LOG=\"\$DIR/run.log\"; k=1
if [[ -e \"\$LOG\" ]]; then while [[ -e \"\$LOG.\$k\" ]]; do k=\$((k + 1)); done; mv -f \"\$LOG\" \"\$LOG.\$k\"; fi
echo \"\$(hostname): \$DIR (log: \$LOG)\"
cd $(printf '%q' "$MP_WORKDIR")
case \"\$SLURM_ARRAY_TASK_ID\" in$cmds
esac > \"\$LOG\" 2>&1
"
    local summary_cmd
    summary_cmd="$(mp_quote "$MP_PY" -m merbench_plugins summarize "$MP_OUT" --out "$MP_OUT" --group-by variant)"
    local sub_flags=()
    [[ -z "${SLURM_PARTITION:-}" ]] || sub_flags+=(--partition "$SLURM_PARTITION")
    [[ -z "${SLURM_ACCOUNT:-}" ]] || sub_flags+=(--account "$SLURM_ACCOUNT")
    if [[ $MP_DRY_RUN == 1 ]]; then
        printf '\ndry run: would write %s and submit it:\n%s\n' "$script" "$body"; return 0
    fi
    mkdir -p "$MP_OUT/slurm-logs"
    local tmp
    tmp="$(mktemp "$MP_OUT/.sbatch.XXXXXX")"
    printf '%s' "$body" > "$tmp"
    chmod +x "$tmp"
    mv -f "$tmp" "$script"
    mp_note "wrote $script ($n array tasks)"
    if command -v sbatch >/dev/null 2>&1; then
        local job_id sum_id
        job_id="$(sbatch --parsable "$script")" || mp_die "sbatch refused $script (its message is above)"
        job_id="${job_id%%;*}"
        mp_note "submitted array job $job_id"
        sum_id="$(sbatch --parsable --dependency="afterany:$job_id" --job-name="mp-${MP_NAME}-summary" \
                  --time=00:30:00 --output="$MP_OUT/slurm-logs/summary_%j.out" ${sub_flags[@]+"${sub_flags[@]}"} \
                  --wrap "$summary_cmd")" || mp_die "sbatch refused the summary job; after the array finishes run: $summary_cmd"
        mp_note "submitted summary job ${sum_id%%;*} (after the array; writes $MP_OUT/summary.md)"
        mp_note "rerun ./${MP_NAME}.sh --slurm with the same settings to resubmit only unfinished jobs"
    else
        mp_note "sbatch not found here; on the cluster's login node run:"
        mp_note "  jid=\$(sbatch --parsable $(printf '%q' "$script"))"
        mp_note "  sbatch --dependency=afterany:\$jid --job-name=mp-${MP_NAME}-summary $(mp_quote ${sub_flags[@]+"${sub_flags[@]}"}) --wrap \"$summary_cmd\""
    fi
}

# ---------------------------------------------------------------------------------------------------
# the whole flow: plan, then dry-run / SLURM / run + summary

mp_main() {
    local n=${#MP_JOB_VARIANT[@]}
    mp_note "$MP_NAME: $n jobs = $((n / ${#MP_SEEDS[@]})) variant(s) x ${#MP_SEEDS[@]} seed(s) (${MP_SEEDS[*]}); mode $MP_MODE; out $MP_OUT"
    [[ $MP_SLURM == 0 ]] || mp_slurm_slots
    mp_plan
    local todo=${#MP_PENDING[@]}
    if [[ $MP_SLURM == 1 ]]; then
        mp_slurm; return 0
    fi
    if [[ $MP_DRY_RUN == 1 ]]; then
        mp_note "dry run: $todo to run, $((n - todo)) finished (skipped); on ${#MP_SLOTS[@]} slot(s): ${MP_SLOTS[*]}"
        return 0
    fi
    mkdir -p "$MP_OUT"
    MP_FAILED=()
    if [[ $todo -gt 0 ]]; then
        mp_note "running $todo jobs ($((n - todo)) finished, skipped) on ${#MP_SLOTS[@]} slot(s): ${MP_SLOTS[*]}"
        mp_run_all
    else
        mp_note "all $n jobs finished already (skipped)"
    fi
    local rc=0
    mp_summarize || rc=1
    if [[ ${#MP_FAILED[@]} -gt 0 ]]; then
        printf '\n%d job(s) failed (rerun the same command to retry just those):\n' "${#MP_FAILED[@]}" >&2
        printf '  %s\n' "${MP_FAILED[@]}" >&2
        rc=1
    fi
    return $rc
}
