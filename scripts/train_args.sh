#!/usr/bin/env bash
# Argument checks shared by run_standalone_train.sh and run_distribute_train.sh (sourced, not run).
# check_train_args CONFIG [--key value ...]: fails through the caller's `usage` on a bad CONFIG or a
# stray argument, and sets DEVICE_TARGET (env, overridden by --device_target among the arguments).
check_train_args() {
    local config="$1"; shift
    if [ ! -f "$config" ] && [ ! -f "$ROOT/configs/$config" ] && [ ! -f "$ROOT/configs/$config.yaml" ] && [ ! -f "$ROOT/$config" ]; then
        echo "error: config '$config' not found (a file, or a name in $ROOT/configs)" >&2
        usage
    fi
    if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
        echo "error: extra arguments must be --key value pairs, got '$1'" >&2
        usage
    fi
    DEVICE_TARGET="${DEVICE_TARGET:-CPU}"
    local argv=("$@") i
    for ((i = 0; i < ${#argv[@]}; i++)); do  # --device_target X among the extra arguments wins
        case "${argv[$i]}" in
            --device_target) DEVICE_TARGET="${argv[$((i + 1))]:-}" ;;
            --device_target=*) DEVICE_TARGET="${argv[$i]#*=}" ;;
        esac
    done
    case "$DEVICE_TARGET" in CPU|GPU|Ascend) ;; *) echo "error: DEVICE_TARGET must be CPU, GPU or Ascend" >&2; usage ;; esac
}
