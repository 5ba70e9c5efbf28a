#!/bin/bash
# Build ascend310_infer/out/main, the Ascend 310 runner, against the MindSpore C++ inference library.
#   bash ascend310_infer/build.sh                                   # MindSpore from the pip package
#   MINDSPORE_PATH=/usr/local/lib/python3.9/site-packages/mindspore bash ascend310_infer/build.sh
# MINDSPORE_PATH holds include/api/model.h and one of lib/libmindspore.so (the MindSpore Ascend 310
# inference package), lib/libmindspore-lite.so (the runtime/ folder of a MindSpore Lite tarball) or
# lib/libmindspore-extendrt_python.so (the mindspore_lite folder of the MindSpore Lite pip wheel).
# Builds with cmake and make when both are installed, else with g++ directly (same flags, -Wall -Werror);
# IPT_310_BUILDER=cmake|g++ chooses. IPT_310_OUT_DIR puts the build elsewhere than ascend310_infer/out.
# Stops with one clear line where the library is absent (the CPU/GPU pip wheels do not ship it).
# To run a MindIR the runtime must read its MindIR version: MindSpore >= 2.5 (2.10 here) writes version 3,
# which only MindSpore Lite >= 2.5 reads; the MindSpore Ascend 310 inference packages (last with 2.1) and
# Lite <= 2.4 cannot ("can only support the maximum mind ir version"). scripts/check_310_build.sh checks
# a real build (against Lite 2.0.0, the one C++ runtime on PyPI).
set -u
cd "$(dirname "$0")" || exit 1
src=$(pwd)
LIB_NAMES="libmindspore.so libmindspore-lite.so libmindspore-extendrt_python.so"

find_mindspore() {
    if [ -n "${MINDSPORE_PATH:-}" ]; then
        echo "$MINDSPORE_PATH"
        return
    fi
    local pkg dir loc
    for pkg in mindspore-ascend:mindspore mindspore:mindspore mindspore-lite:mindspore_lite; do
        dir=${pkg#*:}
        loc=$(pip3 show "${pkg%%:*}" 2>/dev/null | awk '/^Location:/ {print $2}')
        if [ -n "$loc" ] && [ -f "$loc/$dir/include/api/model.h" ]; then
            echo "$loc/$dir"
            return
        fi
    done
}

ms_path=$(find_mindspore)
lib=""
if [ -n "$ms_path" ] && [ -f "$ms_path/include/api/model.h" ]; then
    for name in $LIB_NAMES; do
        if [ -e "$ms_path/lib/$name" ]; then
            lib=$name
            break
        fi
    done
fi
if [ -z "$lib" ]; then
    echo "error: MindSpore C++ inference library not found${ms_path:+ in $ms_path} (needs include/api/model.h" \
         "and one of lib/{${LIB_NAMES// /,}}): install the MindSpore Ascend 310 inference package or MindSpore" \
         "Lite on the 310 host, or set MINDSPORE_PATH to its folder; the CPU/GPU pip wheels do not ship it" >&2
    exit 1
fi
ms_path=$(cd "$ms_path" && pwd)
echo "MindSpore: $ms_path (lib/$lib)"

builder=${IPT_310_BUILDER:-}
if [ -z "$builder" ]; then
    if command -v cmake >/dev/null 2>&1 && command -v make >/dev/null 2>&1; then
        builder=cmake
    else
        builder=g++
    fi
fi
case "$builder" in
    cmake) tools="cmake make" ;;
    g++) tools="${CXX:-g++}" ;;
    *) echo "error: IPT_310_BUILDER must be cmake or g++, not '$builder'" >&2; exit 1 ;;
esac
for tool in $tools; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found: install it (or a C++17 compiler) to build ascend310_infer" >&2
        exit 1
    fi
done

out=${IPT_310_OUT_DIR:-$src/out}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
if [ "$builder" == cmake ]; then
    cmake -S "$src" -B "$out" -DMINDSPORE_PATH="$ms_path" || { echo "error: cmake failed (see above)" >&2; exit 1; }
    make -C "$out" -j"$(nproc 2>/dev/null || echo 2)" ||
        { echo "error: compiling ascend310_infer failed (see above)" >&2; exit 1; }
else
    # What CMakeLists.txt does, in one line.
    cmd=("${CXX:-g++}" -std=c++17 -O2 -Wall -Werror -fPIE -D_GLIBCXX_USE_CXX11_ABI=0 -I"$ms_path"
         -I"$ms_path/include" -I"$src" "$src/src/main.cc" "$src/src/utils.cc" -o "$out/main"
         -L"$ms_path/lib" -l:"$lib" -Wl,--allow-shlib-undefined,--disable-new-dtags,-rpath,"$ms_path/lib")
    echo "${cmd[*]}"
    "${cmd[@]}" || { echo "error: compiling ascend310_infer failed (see above)" >&2; exit 1; }
fi
echo "built $out/main"
