#!/usr/bin/env bash
# Data-parallel IPT training: the global batch_size is split over WORKERS processes (one per device).
#   bash scripts/run_distribute_train.sh WORKERS CONFIG [--key value ...]
#   e.g. bash scripts/run_distribute_train.sh 2 ipt_tiny --steps 100 --out_dir runs/tiny_dp
#        DEVICE_TARGET=GPU bash scripts/run_distribute_train.sh 8 default_config.yaml --batch_size 64
#        DEVICE_TARGET=Ascend RANK_TABLE_FILE=/path/hccl_8p.json bash scripts/run_distribute_train.sh 8 default_config.yaml
# CPU and GPU (and Ascend without RANK_TABLE_FILE) start through msrun; on CPU the collectives use
# mccl. Ascend with RANK_TABLE_FILE starts one process per device with DEVICE_ID/RANK_ID set.
# Multi-node (msrun): WORKERS is the total over all nodes; run the same command on every node with
#   MASTER_ADDR=<node 0's address> NODE_RANK=<0..nodes-1> LOCAL_WORKERS=<processes on this node>, e.g. 2 x 8 devices:
#        node 0: MASTER_ADDR=10.0.0.1 NODE_RANK=0 LOCAL_WORKERS=8 DEVICE_TARGET=GPU bash scripts/run_distribute_train.sh 16 default_config.yaml
#        node 1: MASTER_ADDR=10.0.0.1 NODE_RANK=1 LOCAL_WORKERS=8 DEVICE_TARGET=GPU bash scripts/run_distribute_train.sh 16 default_config.yaml
# Env: DEVICE_TARGET (CPU|GPU|Ascend, default CPU; or pass --device_target), MASTER_PORT (msrun, default 8118),
#      MASTER_ADDR (default 127.0.0.1), NODE_RANK (default 0), LOCAL_WORKERS (default WORKERS),
#      LOG_DIR (default ./log_distribute), RANK_TABLE_FILE and DEVICE_START (Ascend, default 0).
# Only rank 0 logs progress and writes checkpoints.
set -euo pipefail

usage() {
    echo "usage: bash $0 WORKERS CONFIG [--key value ...]" >&2
    echo "  WORKERS: number of processes/devices (>= 1); batch_size must be divisible by it" >&2
    echo "  CONFIG: a yaml file or a name in configs/ (e.g. ipt_tiny, default_config.yaml)" >&2
    echo "  env: DEVICE_TARGET=CPU|GPU|Ascend MASTER_PORT=N LOG_DIR=dir RANK_TABLE_FILE=json DEVICE_START=N" >&2
    echo "  multi-node env: MASTER_ADDR=host NODE_RANK=N LOCAL_WORKERS=N (WORKERS = total over all nodes)" >&2
    exit 2
}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 2 ] || usage
WORKERS="$1"; CONFIG="$2"; shift 2
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: WORKERS must be a positive integer, got '$WORKERS'" >&2
    usage
fi
. "$ROOT/scripts/train_args.sh"
check_train_args "$CONFIG" "$@"
MASTER_PORT="${MASTER_PORT:-8118}"
LOG_DIR="$(mkdir -p "${LOG_DIR:-log_distribute}" && cd "${LOG_DIR:-log_distribute}" && pwd)"
ARGS=(--config "$CONFIG" --distribute true --device_target "$DEVICE_TARGET" "$@")

cd "$ROOT"
if [ "$DEVICE_TARGET" = "Ascend" ] && [ -n "${RANK_TABLE_FILE:-}" ]; then
    [ -f "$RANK_TABLE_FILE" ] || { echo "error: RANK_TABLE_FILE $RANK_TABLE_FILE not found" >&2; exit 2; }
    export RANK_TABLE_FILE RANK_SIZE="$WORKERS"
    DEVICE_START="${DEVICE_START:-0}"
    PIDS=()
    for ((i = 0; i < WORKERS; i++)); do
        DEVICE_ID=$((DEVICE_START + i)) RANK_ID=$i \
            python train.py "${ARGS[@]}" > "$LOG_DIR/rank_$i.log" 2>&1 &
        PIDS+=($!)
        echo "rank $i on Ascend device $((DEVICE_START + i)), pid ${PIDS[-1]}, log $LOG_DIR/rank_$i.log"
    done
    STATUS=0
    for i in "${!PIDS[@]}"; do
        if ! wait "${PIDS[$i]}"; then
            echo "rank $i failed, see $LOG_DIR/rank_$i.log" >&2
            STATUS=1
        fi
    done
    exit $STATUS
fi

LOCAL_WORKERS="${LOCAL_WORKERS:-$WORKERS}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
if ! [[ "$LOCAL_WORKERS" =~ ^[1-9][0-9]*$ ]] || [ "$LOCAL_WORKERS" -gt "$WORKERS" ] || ! [[ "$NODE_RANK" =~ ^[0-9]+$ ]]; then
    echo "error: LOCAL_WORKERS must be 1..WORKERS ($WORKERS) and NODE_RANK >= 0, got '$LOCAL_WORKERS' and '$NODE_RANK'" >&2
    exit 2
fi
command -v msrun > /dev/null || { echo "error: msrun not found (install MindSpore >= 2.3 into this environment)" >&2; exit 2; }
echo "msrun: $LOCAL_WORKERS of $WORKERS worker(s) on $DEVICE_TARGET (node $NODE_RANK, master $MASTER_ADDR:$MASTER_PORT), logs in $LOG_DIR"
msrun --worker_num="$WORKERS" --local_worker_num="$LOCAL_WORKERS" --master_addr="$MASTER_ADDR" \
    --master_port="$MASTER_PORT" --node_rank="$NODE_RANK" --log_dir="$LOG_DIR" --join=True train.py "${ARGS[@]}"
