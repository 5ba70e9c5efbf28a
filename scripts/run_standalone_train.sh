#!/usr/bin/env bash
# Train IPT on one device (pre-training or fine-tuning), logging to LOG_FILE and the terminal.
#   bash scripts/run_standalone_train.sh CONFIG [--key value ...]
#   e.g. bash scripts/run_standalone_train.sh ipt_tiny --steps 1000 --out_dir runs/tiny
#        DEVICE_TARGET=GPU DEVICE_ID=1 bash scripts/run_standalone_train.sh default_config.yaml \
#            --train_mode finetune --task sr_x2 --pretrained runs/pre/ipt_step00300000.ckpt --lr_schedule constant
# Env: DEVICE_TARGET (CPU|GPU|Ascend, default CPU; or pass --device_target), DEVICE_ID (default 0),
#      LOG_FILE (default train_standalone.log).
set -euo pipefail

usage() {
    echo "usage: bash $0 CONFIG [--key value ...]" >&2
    echo "  CONFIG: a yaml file or a name in configs/ (e.g. ipt_tiny, default_config.yaml)" >&2
    echo "  env: DEVICE_TARGET=CPU|GPU|Ascend DEVICE_ID=N LOG_FILE=path" >&2
    exit 2
}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 1 ] || usage
CONFIG="$1"; shift
case "$CONFIG" in -h|--help) usage ;; --*) echo "error: CONFIG must come first, got '$CONFIG'" >&2; usage ;; esac
if [ ! -f "$CONFIG" ] && [ ! -f "$ROOT/configs/$CONFIG" ] && [ ! -f "$ROOT/configs/$CONFIG.yaml" ] && [ ! -f "$ROOT/$CONFIG" ]; then
    echo "error: config '$CONFIG' not found (a file, or a name in $ROOT/configs)" >&2
    usage
fi
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
    echo "error: extra arguments must be --key value pairs, got '$1'" >&2
    usage
fi
DEVICE_TARGET="${DEVICE_TARGET:-CPU}"
ARGV=("$@")
for ((i = 0; i < ${#ARGV[@]}; i++)); do  # --device_target X among the extra arguments wins
    case "${ARGV[$i]}" in
        --device_target) DEVICE_TARGET="${ARGV[$((i + 1))]:-}" ;;
        --device_target=*) DEVICE_TARGET="${ARGV[$i]#*=}" ;;
    esac
done
case "$DEVICE_TARGET" in CPU|GPU|Ascend) ;; *) echo "error: DEVICE_TARGET must be CPU, GPU or Ascend" >&2; usage ;; esac
DEVICE_ID="${DEVICE_ID:-0}"
LOG_FILE="${LOG_FILE:-train_standalone.log}"

cd "$ROOT"
echo "training on $DEVICE_TARGET:$DEVICE_ID with $CONFIG, log: $LOG_FILE"
python train.py --config "$CONFIG" --device_target "$DEVICE_TARGET" --device_id "$DEVICE_ID" "$@" 2>&1 | tee "$LOG_FILE"
exit "${PIPESTATUS[0]}"
