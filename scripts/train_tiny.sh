#!/usr/bin/env bash
# The recipe of the shipped ipt_tiny weights (pretrained/), on CPU, from scratch to the shipped files:
#   0. split ../shared/datasets/train: held-out images (src/holdout.py) for validation, the rest for training
#      (OUT_ROOT/data/{train,val}, symbolic links; no benchmark image is used to choose anything),
#   1. train each task alone (L1, cosine lr, EMA) from random initialisation, except sr_x3 and sr_x4,
#      which start from sr_x2's weights (warm_start_of); validated on the held-out images, the
#      best validated EMA weights are kept (best_TASK.ckpt). At this budget a
#      task trained alone beats six-task pre-training + fine-tuning at equal compute (README, "Does
#      multi-task pre-training help?"), so the default has no pre-training stage; --pretrain_steps N
#      adds one (all six tasks, L1 + contrastive), fine-tunes every task from it and ships it too,
#   2. ship the weights (scripts/ship_weights.py: weights only, float16) as pretrained/ipt_tiny_*.ckpt,
#   3. plot the loss and validation curves (pretrained/loss_curves.png),
#   4. record how it was made in pretrained/TRAINING.txt (command, git revision, times per stage).
#
#   bash scripts/train_tiny.sh [OUT_ROOT] [--task_steps M] [--pretrain_steps N] [options]
#
# Resumable: run the same command again after an interruption. A stage whose out_dir has
# checkpoints continues from the newest (--resume true); a stage that reached its steps is skipped.
# Paths are relative to the repository root. Nothing in the ship folder is replaced without --overwrite
# (checked before any training starts).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Names the Python code owns, asked from it (no copies here): the task list (src/tasks.py), the
# checkpoint and shipped file names (src/weights.py). These imports do not load MindSpore.
py() { (cd "$ROOT" && python -c "$@"); }
ALL_TASKS="$(py 'from src.tasks import TASKS; print(",".join(TASKS))')" \
    || { echo "error: python cannot import the project (src/): activate the venv" >&2; exit 2; }
shipped_of() { py 'import sys; from src.weights import shipped_name; print(shipped_name(sys.argv[1]))' "$1"; }
best_of() {  # the best validated checkpoint of a task's run (src/weights.py best_checkpoint_name)
    py 'import sys; from src.weights import best_checkpoint_name; print(best_checkpoint_name(sys.argv[1]))' "$1"
}
PRETRAIN_FILE="$(py 'from src.weights import PRETRAIN_SHIPPED, shipped_name; print(shipped_name(PRETRAIN_SHIPPED))')"

usage() {
    cat >&2 <<EOF
usage: bash scripts/train_tiny.sh [OUT_ROOT] [options]
  OUT_ROOT                 run folder (default runs/ipt_tiny): OUT_ROOT/TASK (and OUT_ROOT/pretrain)
options:
  --task_steps M           training steps of every task (default per task: $(per_task_defaults task_steps_of);
                           batch 8, L1, cosine lr -> 1e-5, EMA 0.999, seed 1)
  --task_lr LR             every task's lr at the start of its cosine decay (default per task:
                           $(per_task_defaults task_lr_of))
  --tasks LIST             tasks to train and ship, in order, comma-separated (default $RECIPE_TASKS);
                           sr_x3 and sr_x4 start from sr_x2's best weights, derain from denoise_30's:
                           the source comes first, or is already trained in OUT_ROOT/SOURCE
  --pretrain_steps N       add six-task pre-training (L1 + contrastive, cosine 1e-3 -> 1e-5) of N steps,
                           fine-tune every task from it and ship it as $PRETRAIN_FILE (default 0: none)
  --pretrain_only          with --pretrain_steps: ship the six-task pre-trained checkpoint only
  --pretrain_dir DIR       pre-training run folder (default OUT_ROOT/pretrain), e.g. an existing run
  --ship_dir DIR           where the shipped files go (default pretrained)
  --device_target T        CPU (default), GPU or Ascend
  --overwrite              replace shipped files, loss plot and TRAINING.txt in the ship folder
  --dry_run                print the stages' commands, run nothing
EOF
    exit 2
}

die() { echo "error: $*" >&2; exit 2; }

# Steps per task, set from the pilot runs in pretrained/logs/pilots/ (README there): the denoising
# and deraining curves were still rising when their pilots' cosine ended, so they got 4500. At SR's
# 3e-3, 4000 sr_x2 steps beat 2000 by 0.6 dB held out and still rose at the end, so sr_x2 takes 6000.
# sr_x3 and sr_x4 start from sr_x2's best weights (warm_start_of) and take 2500, which keeps the
# recipe within its 2.5 h on the 2-vCPU AMD EPYC Zen 4 of pretrained/TRAINING.txt.
task_steps_of() {
    if [ -n "$TASK_STEPS" ]; then echo "$TASK_STEPS"; return; fi
    case "$1" in
        sr_x2) echo 6000 ;; sr_x3) echo 2500 ;; sr_x4) echo 2500 ;;
        derain) echo 4500 ;; denoise_30) echo 4500 ;; denoise_50) echo 4500 ;;
        *) echo 2000 ;;
    esac
}
# Peak lr per task, from the same pilots: at 800 sr_x2 steps the held-out PSNR rose with the lr
# (3e-4 / 1e-3 / 3e-3; 1e-2 diverged; pretrained/logs/pilots/README.md), so sr_x2 takes 3e-3. sr_x3
# from random weights at 3e-3 over 4000 steps diverged near step 1090 (pilot
# sr_x3_lr3e-3_4000_diverged); warm-started from sr_x2, sr_x3 and sr_x4 fine-tune at 1e-3. The
# denoising and deraining runs keep the 1e-3 of their pilots.
task_lr_of() {
    if [ -n "$TASK_LR" ]; then echo "$TASK_LR"; return; fi
    case "$1" in
        sr_x2) echo 3e-3 ;;
        *) echo 1e-3 ;;
    esac
}
# The task whose best weights start a task's run (src/weights.py load_warm_start: body, head, query and
# the tail layers that fit), as EDSR starts x3/x4 from x2: the larger SR scales learn from sr_x2's
# features instead of from random ones, and deraining from denoising's (the same scale-1 model: all of
# it is loaded; pilot derain_from_denoise_30 in pretrained/logs/pilots/). Empty: random initialisation.
# Not used with --pretrain_steps.
warm_start_of() {
    case "$1" in
        sr_x3|sr_x4) echo sr_x2 ;;
        derain) echo denoise_30 ;;
        *) echo "" ;;
    esac
}
# Every task, each after the task it starts from (warm_start_of): sr_x2,sr_x3,sr_x4,denoise_30,derain,denoise_50
recipe_order() {
    local t src out=","
    for t in ${ALL_TASKS//,/ }; do
        src="$(warm_start_of "$t")"
        [ -n "$src" ] && [[ "$out" != *",$src,"* ]] && out+="$src,"
        [[ "$out" != *",$t,"* ]] && out+="$t,"
    done
    out="${out#,}"; echo "${out%,}"
}
RECIPE_TASKS="$(recipe_order)"
# "sr_x2 V, sr_x3 V, ...": a per-task function's defaults (no --task_steps / --task_lr), for the usage text
per_task_defaults() { local t out=""; for t in ${ALL_TASKS//,/ }; do out+="$t $(TASK_STEPS="" TASK_LR="" "$1" "$t"), "; done; echo "${out%, }"; }
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_float() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }

OUT_ROOT="runs/ipt_tiny"
PRETRAIN_STEPS=0    # 0: every task trains alone from random initialisation
TASK_STEPS=""       # empty: task_steps_of each task
TASK_LR=""         # empty: task_lr_of each task
TASKS="$RECIPE_TASKS"
PRETRAIN_ONLY=0
PRETRAIN_DIR=""
SHIP_DIR="pretrained"
DEVICE_TARGET="CPU"
OVERWRITE=0
DRY_RUN=0

ORIGINAL_ARGS=("$@")
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then OUT_ROOT="$1"; shift; fi
while [ $# -gt 0 ]; do
    opt="$1"
    case "$opt" in
        -h|--help) usage ;;
        --pretrain_only) PRETRAIN_ONLY=1; shift; continue ;;
        --overwrite) OVERWRITE=1; shift; continue ;;
        --dry_run) DRY_RUN=1; shift; continue ;;
        --pretrain_steps|--task_steps|--task_lr|--tasks|--pretrain_dir|--ship_dir|--device_target)
            [ $# -ge 2 ] && [[ "$2" != --* ]] || { echo "error: $opt needs a value" >&2; usage; } ;;
        *) echo "error: unknown argument '$opt'" >&2; usage ;;
    esac
    val="$2"; shift 2
    case "$opt" in
        --pretrain_steps) is_int "$val" || die "--pretrain_steps must be an integer >= 0, got '$val'"; PRETRAIN_STEPS=$((10#$val)) ;;
        --task_steps) { is_int "$val" && [ "$((10#$val))" -gt 0 ]; } || die "--task_steps must be a positive integer, got '$val'"; TASK_STEPS=$((10#$val)) ;;
        --task_lr) is_float "$val" || die "--task_lr must be a number, got '$val'"; TASK_LR="$val" ;;
        --tasks) TASKS="$val" ;;
        --pretrain_dir) PRETRAIN_DIR="$val" ;;
        --ship_dir) SHIP_DIR="$val" ;;
        --device_target) DEVICE_TARGET="$val" ;;
    esac
done
case "$DEVICE_TARGET" in CPU|GPU|Ascend) ;; *) die "--device_target must be CPU, GPU or Ascend, got '$DEVICE_TARGET'" ;; esac
IFS=',' read -r -a TASK_LIST <<< "$TASKS"
[ ${#TASK_LIST[@]} -gt 0 ] || die "--tasks is empty"
for t in "${TASK_LIST[@]}"; do
    [[ ",$ALL_TASKS," == *",$t,"* ]] || die "unknown task '$t' in --tasks (choose from $ALL_TASKS)"
done
if [ "$PRETRAIN_ONLY" = 1 ]; then
    [ "$PRETRAIN_STEPS" -gt 0 ] || die "--pretrain_only needs --pretrain_steps N (N > 0)"
    TASK_LIST=()
fi
PRETRAIN_DIR="${PRETRAIN_DIR:-$OUT_ROOT/pretrain}"

cd "$ROOT"
if [ "$DRY_RUN" = 0 ]; then
    [ -d ../shared/datasets/train ] || die "training data not found: ../shared/datasets/train"
    python -c "import mindspore" 2>/dev/null || die "python cannot import mindspore: activate the venv (source .venv/bin/activate)"
fi

# A warm-started task needs its source trained first: earlier in --tasks, or already in OUT_ROOT.
if [ "$PRETRAIN_STEPS" = 0 ]; then
    for t in "${TASK_LIST[@]}"; do
        src="$(warm_start_of "$t")"; [ -n "$src" ] || continue
        before=0
        for u in "${TASK_LIST[@]}"; do [ "$u" = "$t" ] && break; [ "$u" = "$src" ] && before=1; done
        [ "$before" = 1 ] || [ -f "$OUT_ROOT/$src/$(best_of "$src")" ] \
            || die "$t starts from $src's best weights: put $src before $t in --tasks, or train it into $OUT_ROOT/$src first"
    done
fi

# ------------------------------------------------------------------ what will be written, checked first
SHIPPED=()
[ "$PRETRAIN_STEPS" -gt 0 ] && SHIPPED+=("$SHIP_DIR/$PRETRAIN_FILE")
for t in "${TASK_LIST[@]}"; do SHIPPED+=("$SHIP_DIR/$(shipped_of "$t")"); done
if [ "$OVERWRITE" = 0 ] && [ "$DRY_RUN" = 0 ]; then
    for f in "${SHIPPED[@]}" "$SHIP_DIR/loss_curves.png" "$SHIP_DIR/TRAINING.txt"; do
        [ -e "$f" ] && die "$f exists; pass --overwrite to replace the shipped files (nothing was run)"
    done
fi
# A six-task file this run does not make would outlive it as the fallback of every task without a
# file of its own (src/weights.py default_checkpoint), from another recipe: replacing it removes it.
STALE_PRETRAIN=""
if [ "$PRETRAIN_STEPS" = 0 ] && [ -e "$SHIP_DIR/$PRETRAIN_FILE" ]; then
    [ "$OVERWRITE" = 1 ] || [ "$DRY_RUN" = 1 ] \
        || die "$SHIP_DIR/$PRETRAIN_FILE exists and this recipe (no pre-training) does not make it; pass --overwrite to remove it"
    STALE_PRETRAIN="$SHIP_DIR/$PRETRAIN_FILE"
fi
if [ "$PRETRAIN_ONLY" = 1 ]; then
    IFS=',' read -r -a EVERY_TASK <<< "$ALL_TASKS"
    for t in "${EVERY_TASK[@]}"; do
        f="$SHIP_DIR/$(shipped_of "$t")"
        [ -e "$f" ] && echo "warning: $f exists and takes precedence over $PRETRAIN_FILE for its task" >&2
    done
fi

# ------------------------------------------------------------------ held-out split
# Validation images (src/holdout.py: the last 10 DIV2K crops), never trained on. The benchmarks
# (Set5, Set14, CBSD68, Rain100L) only score the finished weights.
DATA_SRC=../shared/datasets/train
TRAIN_DATA="$OUT_ROOT/data/train"
VAL_DATA="$OUT_ROOT/data/val"
HOLDOUT_TEXT="$(py 'from src.holdout import DEFAULT_HOLDOUT as h; print(f"{len(h)} held out for validation ({h[0]} .. {h[-1]})")')"

make_split() {  # OUT_ROOT/data/{train,val}: links to the source images
    py 'import sys; from src.holdout import split_folder; split_folder(sys.argv[1], sys.argv[2])' \
        "$(realpath "$DATA_SRC")" "$(realpath -m "$OUT_ROOT/data")" || die "could not split $DATA_SRC"
    note "split $DATA_SRC: training images in $TRAIN_DATA, $HOLDOUT_TEXT in $VAL_DATA"
}

# ------------------------------------------------------------------ stages
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The source state the run starts from (later the run's own outputs in the ship folder change git status).
REV="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CHANGES="$(git --no-optional-locks status --porcelain 2>/dev/null || true)"
T0=$(date +%s)
STAGE_LINES=()   # one record per stage for TRAINING.txt
RUN_LOG="$OUT_ROOT/train_tiny.log"
[ "$DRY_RUN" = 0 ] && mkdir -p "$OUT_ROOT"

note() {  # a line on the terminal and in OUT_ROOT/train_tiny.log
    echo "[train_tiny $(date -u +%H:%M:%S)] $*"
    [ "$DRY_RUN" = 1 ] || echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >> "$RUN_LOG"
}

latest_step() {  # newest checkpoint step in a run folder, 0 if none (src/weights.py list_checkpoints)
    py 'import sys; from src.weights import list_checkpoints; c = list_checkpoints(sys.argv[1]); print(c[-1][0] if c else 0)' "$1"
}

ckpt_of() {  # the checkpoint of step $2 in run folder $1 (src/weights.py checkpoint_name)
    printf '%s/%s' "$1" "$(py 'import sys; from src.weights import checkpoint_name; print(checkpoint_name(int(sys.argv[1])))' "$2")"
}

# run_stage NAME DIR STEPS CMD...: train.py with --resume true unless DIR already holds step STEPS.
run_stage() {
    local name="$1" dir="$2" steps="$3"; shift 3
    local target status latest start secs
    target="$(ckpt_of "$dir" "$steps")"
    if [ "$DRY_RUN" = 1 ]; then
        echo "$*"; STAGE_LINES+=("$name|dry run|0|$target|$*"); return
    fi
    start=$(date +%s)
    if [ -f "$target" ]; then
        status="already complete (no-op)"
        note "$name: $target exists, nothing to do"
    else
        latest=$(latest_step "$dir")
        [ "$latest" -gt "$steps" ] && die "$dir already went to step $latest, past $steps, and has no $(basename "$target"): use another folder, or ask for $latest steps"
        if [ -f "$dir/train.log" ] && [ $(( $(date +%s) - $(stat -c %Y "$dir/train.log") )) -lt 120 ]; then
            die "$dir/train.log was written in the last 2 minutes: is a run still going there? (not starting a second one)"
        fi
        if [ "$latest" -gt 0 ]; then status="resumed from step $latest"; else status="trained from step 0"; fi
        note "$name: $status to step $steps: $*"
        "$@" --resume true
        [ -f "$target" ] || die "$name finished without writing $target"
    fi
    secs=$(( $(date +%s) - start ))
    note "$name: done in ${secs} s"
    STAGE_LINES+=("$name|$status|$secs|$target|$*")
}

[ "$DRY_RUN" = 1 ] || make_split
# Every stage: the training part of the split, validation on the held-out part (eval.py's protocol),
# an EMA of the weights (validated, kept as best_TASK.ckpt and shipped).
COMMON=(--config ipt_tiny --batch_size 8 --lr_schedule cosine --lr_min 1e-5 --log_every 25 --seed 1
        --train_path "$TRAIN_DATA" --val_path "$VAL_DATA" --ema_decay 0.999 --device_target "$DEVICE_TARGET")
FROM=()   # each task's start: random initialisation, or the pre-training's last checkpoint
if [ "$PRETRAIN_STEPS" -gt 0 ]; then
    PRE_CMD=(python train.py --train_mode pretrain --steps "$PRETRAIN_STEPS" --lr_max 1e-3
             --save_every 250 --keep_last 3 --val_every 500 "${COMMON[@]}" --out_dir "$PRETRAIN_DIR")
    run_stage pretrain "$PRETRAIN_DIR" "$PRETRAIN_STEPS" "${PRE_CMD[@]}"
    PRE_CKPT="$(ckpt_of "$PRETRAIN_DIR" "$PRETRAIN_STEPS")"
    FROM=(--pretrained "$PRE_CKPT")
fi

for t in "${TASK_LIST[@]}"; do
    steps="$(task_steps_of "$t")"
    every=$(( steps / 10 > 100 ? steps / 10 : 100 ))   # about ten validations per run
    START=("${FROM[@]}")
    src="$(warm_start_of "$t")"
    if [ "$PRETRAIN_STEPS" = 0 ] && [ -n "$src" ]; then START=(--init_from "$OUT_ROOT/$src/$(best_of "$src")"); fi
    TASK_CMD=(python train.py --train_mode finetune --task "$t" "${START[@]}" --steps "$steps"
              --lr_max "$(task_lr_of "$t")" --contrastive_weight 0 --save_every "$every" --keep_last 2 "${COMMON[@]}"
              --out_dir "$OUT_ROOT/$t")
    run_stage "$t" "$OUT_ROOT/$t" "$steps" "${TASK_CMD[@]}"
done

# ------------------------------------------------------------------ ship, plot
timed() {  # timed NAME CMD...: run and record like a stage
    local name="$1"; shift
    if [ "$DRY_RUN" = 1 ]; then echo "$*"; STAGE_LINES+=("$name|dry run|0|-|$*"); return; fi
    local start; start=$(date +%s)
    note "$name: $*"
    "$@"
    STAGE_LINES+=("$name|done|$(( $(date +%s) - start ))|-|$*")
}

OW=(); [ "$OVERWRITE" = 1 ] && OW=(--overwrite)
LOGS=()
if [ "$PRETRAIN_STEPS" -gt 0 ]; then
    timed ship-pretrain python scripts/ship_weights.py --src "$PRE_CKPT" --dst "$SHIP_DIR/$PRETRAIN_FILE" "${OW[@]}"
    LOGS+=("$PRETRAIN_DIR")
fi
for t in "${TASK_LIST[@]}"; do
    timed "ship-$t" python scripts/ship_weights.py --src "$OUT_ROOT/$t/$(best_of "$t")" \
        --dst "$SHIP_DIR/$(shipped_of "$t")" "${OW[@]}"
    LOGS+=("$OUT_ROOT/$t")
done
if [ -n "$STALE_PRETRAIN" ]; then
    if [ "$DRY_RUN" = 1 ]; then
        echo "rm $STALE_PRETRAIN"
    else
        rm -f "$STALE_PRETRAIN"; note "removed $STALE_PRETRAIN (this recipe does not make it)"
    fi
fi
timed plot python scripts/plot_losses.py "${LOGS[@]}" --out "$SHIP_DIR/loss_curves.png"

[ "$DRY_RUN" = 1 ] && exit 0

# ------------------------------------------------------------------ TRAINING.txt
FINISHED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
TOTAL=$(( $(date +%s) - T0 ))
if [ -z "$CHANGES" ]; then DIRTY="clean"; else DIRTY="dirty: $(printf '%s\n' "$CHANGES" | wc -l) changed or untracked path(s)"; fi
CPU_TEXT="$(py 'from src.cpu_isa import cpu_name, isa_summary; print(f"{cpu_name()}, {isa_summary()}")' 2>/dev/null || echo unknown)"
VERSIONS="$(python -c 'import mindspore, numpy, platform; print(f"Python {platform.python_version()}, MindSpore {mindspore.__version__}, numpy {numpy.__version__}")' 2>/dev/null || echo unknown)"
NIMG=$(find ../shared/datasets/train -type f \( -iname '*.png' -o -iname '*.bmp' -o -iname '*.jpg' \) | wc -l)
{
    echo "# How the shipped ipt_tiny weights were made (written by scripts/train_tiny.sh)"
    echo
    echo "command:   bash scripts/train_tiny.sh ${ORIGINAL_ARGS[*]}"
    echo "git:       $REV ($DIRTY)"
    echo "started:   $STARTED"
    echo "finished:  $FINISHED (this invocation: $TOTAL s; stages skipped as complete count 0 s)"
    echo "machine:   $(nproc) CPU core(s), device $DEVICE_TARGET; $VERSIONS"
    echo "cpu:       $CPU_TEXT"
    echo "data:      ../shared/datasets/train ($NIMG images: T91 + DIV2K crops, no BSD image);"
    echo "           trained on all but $HOLDOUT_TEXT"
    echo "shipped:   ${SHIPPED[*]} $SHIP_DIR/loss_curves.png"
    echo
    echo "stages (seconds of this invocation; a resumed stage's earlier part is in its train.log):"
    for line in "${STAGE_LINES[@]}"; do
        IFS='|' read -r name status secs ckpt cmd <<< "$line"
        printf '  %-16s %-28s %7s s  %s\n' "$name" "$status" "$secs" "$ckpt"
        printf '      %s\n' "$cmd"
    done
    if [ -n "$CHANGES" ]; then
        echo
        echo "uncommitted paths when the run started (git status --porcelain):"
        printf '%s\n' "$CHANGES" | head -40 | sed 's/^/  /'
    fi
} > "$SHIP_DIR/TRAINING.txt.tmp"
mv "$SHIP_DIR/TRAINING.txt.tmp" "$SHIP_DIR/TRAINING.txt"
note "wrote $SHIP_DIR/TRAINING.txt; shipped: ${SHIPPED[*]}"
du -ch "${SHIPPED[@]}" | tail -1 | sed 's/^/shipped weights: /'
