#!/bin/bash
# Score an exported IPT MindIR on an Ascend 310: preprocess.py -> ascend310_infer (C++) -> postprocess.py.
#   bash scripts/run_infer_310.sh MINDIR_PATH DATA_PATH TASK [DEVICE_ID]
# DEVICE_ID defaults to 0; "cpu" runs the MindIR with MindSpore on this machine's CPU instead of the
# C++ runner (same files, same scoring: a check of the data path without a 310).
# Work files and logs go to ./infer_310_TASK (or $IPT_INFER_DIR); extra preprocess options (tiling)
# can be given in $IPT_EXTRA_ARGS, e.g. IPT_EXTRA_ARGS="--tiling exact".

usage() {
    echo "Usage: bash scripts/run_infer_310.sh MINDIR_PATH DATA_PATH TASK [DEVICE_ID]
    MINDIR_PATH  a fixed-batch MindIR from export.py --file_format MINDIR --export_batch N
    DATA_PATH    a benchmark folder, e.g. ../shared/datasets/CSet5
    TASK         sr_x2 | sr_x3 | sr_x4 | derain | denoise_30 | denoise_50 (the task the file was exported for)
    DEVICE_ID    Ascend device id (default 0), or cpu for the MindSpore CPU stand-in" >&2
}

error() {
    echo "error: $*" >&2
    usage
    exit 2
}

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    error "expected 3 or 4 arguments, got $#"
fi

get_real_path() {
    if [ "${1:0:1}" == "/" ]; then echo "$1"; else realpath -m "$PWD/$1"; fi
}

mindir=$(get_real_path "$1")
data_path=$(get_real_path "$2")
task=$3
device_id=${4:-0}

[ -f "$mindir" ] || error "MINDIR_PATH not found: $1"
[ "${mindir##*.}" == "mindir" ] || error "MINDIR_PATH must be a .mindir file: $1"
[ -d "$data_path" ] || error "DATA_PATH is not a folder: $2"
case "$task" in
    sr_x2|sr_x3|sr_x4|derain|denoise_30|denoise_50) ;;
    *) error "unknown TASK '$task'" ;;
esac
if [ "$device_id" != "cpu" ] && ! [[ "$device_id" =~ ^[0-9]+$ ]]; then
    error "DEVICE_ID must be a number or cpu, not '$device_id'"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(get_real_path "${IPT_INFER_DIR:-./infer_310_$task}")
python=${PYTHON:-python3}
mkdir -p "$work" || exit 1
echo "mindir: $mindir"
echo "data:   $data_path ($task)"
echo "device: $device_id"
echo "work:   $work"

run_step() {  # name log command...: runs, and shows the end of the log on failure
    local name=$1 log=$2
    shift 2
    if ! "$@" > "$log" 2>&1; then
        echo "error: $name failed; end of $log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
}

# shellcheck disable=SC2086  # IPT_EXTRA_ARGS is split on purpose
run_step preprocess "$work/preprocess.log" "$python" "$repo/preprocess.py" --task "$task" \
    --data_path "$data_path" --output "$work/preprocess_Result" --ckpt "$mindir" --overwrite true \
    ${IPT_EXTRA_ARGS:-}

if [ "$device_id" == "cpu" ]; then
    run_step "CPU stand-in + postprocess" "$work/acc.log" "$python" "$repo/postprocess.py" \
        --pre_path "$work/preprocess_Result" --result_path "$work/result_Files" --stand_in "$mindir" \
        --overwrite true --json "$work/acc.json"
else
    run_step build "$work/build.log" bash "$repo/ascend310_infer/build.sh"
    run_step "ascend310_infer" "$work/infer.log" "$repo/ascend310_infer/out/main" --mindir_path="$mindir" \
        --input_path="$work/preprocess_Result" --output_path="$work/result_Files" --device_id="$device_id"
    grep "average time" "$work/infer.log"
    run_step postprocess "$work/acc.log" "$python" "$repo/postprocess.py" \
        --pre_path "$work/preprocess_Result" --result_path "$work/result_Files" --overwrite true \
        --json "$work/acc.json"
fi
tail -n 1 "$work/acc.log"
