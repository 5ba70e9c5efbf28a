#!/bin/bash
# Build ascend310_infer/out/main, the Ascend 310 runner, against the MindSpore C++ inference library.
#   bash ascend310_infer/build.sh                                   # MindSpore from the pip package
#   MINDSPORE_PATH=/usr/local/lib/python3.9/site-packages/mindspore bash ascend310_infer/build.sh
# Stops with one clear line where the library is absent (the CPU/GPU pip wheels do not ship it).
set -u
cd "$(dirname "$0")" || exit 1

find_mindspore() {
    if [ -n "${MINDSPORE_PATH:-}" ]; then
        echo "$MINDSPORE_PATH"
        return
    fi
    local pkg loc
    for pkg in mindspore-ascend mindspore; do
        loc=$(pip3 show "$pkg" 2>/dev/null | awk '/^Location:/ {print $2}')
        if [ -n "$loc" ] && [ -d "$loc/mindspore" ]; then
            echo "$loc/mindspore"
            return
        fi
    done
}

ms_path=$(find_mindspore)
if [ -z "$ms_path" ] || [ ! -f "$ms_path/include/api/model.h" ] || [ ! -e "$ms_path/lib/libmindspore.so" ]; then
    echo "error: MindSpore C++ inference library not found${ms_path:+ in $ms_path} (needs include/api/model.h" \
         "and lib/libmindspore.so): install the MindSpore Ascend 310 inference package on the 310 host" \
         "or set MINDSPORE_PATH to its folder; the CPU/GPU pip wheels do not ship it" >&2
    exit 1
fi
for tool in cmake make; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found: install it to build ascend310_infer" >&2
        exit 1
    fi
done

mkdir -p out && cd out || exit 1
cmake .. -DMINDSPORE_PATH="$ms_path" || { echo "error: cmake failed (see above)" >&2; exit 1; }
make -j"$(nproc 2>/dev/null || echo 2)" || { echo "error: compiling ascend310_infer failed (see above)" >&2; exit 1; }
echo "built $(pwd)/main"
