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
. "$ROOT/scripts/train_args.sh"
check_train_args "$CONFIG" "$@"
DEVICE_ID="${DEVICE_ID:-0}"
LOG_FILE="${LOG_FILE:-train_standalone.log}"

cd "$ROOT"
echo "training on $DEVICE_TARGET:$DEVICE_ID with $CONFIG, log: $LOG_FILE"
python train.py --config "$CONFIG" --device_target "$DEVICE_TARGET" --device_id "$DEVICE_ID" "$@" 2>&1 | tee "$LOG_FILE"
exit "${PIPESTATUS[0]}"
