#!/bin/bash
# Manual check (not run by CI) that ascend310_infer builds and links against a real MindSpore C++ runtime,
# and fails cleanly on a MindIR that runtime cannot read:
#   bash scripts/check_310_build.sh [MINDIR ...]
#   1. fetches MindSpore Lite 2.0.0's x86_64 pip wheel (~169 MB, the one MindSpore C++ runtime on PyPI that
#      runs on any x86_64 Linux) into ${IPT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ipt}, unless it is there;
#   2. unpacks it there (the wheel is a zip: mindspore_lite/include/api/*.h, mindspore_lite/lib/*.so);
#   3. builds ascend310_infer/out/main with ascend310_infer/build.sh against it (-Wall -Werror; cmake when
#      installed, else g++ directly; IPT_310_BUILDER=cmake|g++ chooses);
#   4. runs out/main: without options (usage, exit 2), then on a 24-byte MindIR that claims MindIR version 3
#      (what MindSpore >= 2.5 writes; Lite 2.0 reads version 1 and throws) and on each MINDIR given: each
#      must end in one "error: ..." line and exit 1, never an abort.
# Lite 2.0 cannot run a MindIR from this repository's MindSpore (2.10): this checks the build, the C++ API
# and the error handling, not inference. Needs python3 with pip (PYTHON=... to choose), g++, network once.
# Prints each step; exits non-zero on the first failure.
set -u

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
version=2.0.0
wheel=mindspore_lite-$version-cp37-cp37m-manylinux1_x86_64.whl
sha256=199cd0605cc985b88eddb273db9dfe9000a585ba10ca2292b6b36ebfff07b3ec  # as PyPI serves it
cache=${IPT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ipt}
unpacked=$cache/mindspore_lite-$version
ms_path=$unpacked/mindspore_lite
main=$repo/ascend310_infer/out/main

step() { echo "== $*"; }
fail() {
    echo "error: $*" >&2
    exit 1
}

mkdir -p "$cache" || fail "cannot create the cache folder $cache"

step "1/4 MindSpore Lite $version wheel in $cache"
if [ -f "$cache/$wheel" ]; then
    echo "cached: $cache/$wheel"
else
    "$python" -m pip --version >/dev/null 2>&1 || fail "$python has no pip (set PYTHON to a python with pip)"
    echo "$python -m pip download mindspore-lite==$version --no-deps --python-version 3.7 --only-binary=:all:" \
         "--platform manylinux1_x86_64 -d $cache"
    "$python" -m pip download "mindspore-lite==$version" --no-deps --python-version 3.7 --only-binary=:all: \
        --platform manylinux1_x86_64 -d "$cache" || fail "pip download of mindspore-lite==$version failed"
    [ -f "$cache/$wheel" ] || fail "pip did not write $cache/$wheel"
fi
echo "$sha256  $cache/$wheel" | sha256sum -c --quiet - ||
    fail "$cache/$wheel does not have the SHA-256 of PyPI's file ($sha256): delete it and run again"
echo "SHA-256 ok"

step "2/4 unpack into $unpacked"
if [ -f "$unpacked/.complete" ]; then
    echo "already unpacked"
else
    rm -rf "$unpacked" "$unpacked.part"
    "$python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
        "$cache/$wheel" "$unpacked.part" || fail "cannot unpack $cache/$wheel"
    mv "$unpacked.part" "$unpacked" && touch "$unpacked/.complete" || fail "cannot write $unpacked"
fi
for f in include/api/model.h include/api/context.h include/api/serialization.h include/api/types.h \
         lib/libmindspore-extendrt_python.so; do
    [ -e "$ms_path/$f" ] || fail "the wheel has no mindspore_lite/$f: not the layout build.sh expects"
done
echo "MINDSPORE_PATH=$ms_path"

step "3/4 build $main"
MINDSPORE_PATH=$ms_path bash "$repo/ascend310_infer/build.sh" || fail "ascend310_infer/build.sh failed (see above)"
[ -x "$main" ] || fail "build.sh did not produce $main"
missing=$(ldd "$main" 2>&1 | grep "not found")
[ -z "$missing" ] || fail "$main cannot find its libraries: $missing"
echo "$main links to $(ldd "$main" | awk '/mindspore/ {print $1}' | head -1)"

step "4/4 run $main"
tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
"$main" > "$tmp/out" 2> "$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "^usage: main --mindir_path" "$tmp/err" ||
    fail "out/main without options: exit $rc, expected 2 and the usage; stderr: $(cat "$tmp/err")"
echo "no options: exit 2 with the usage"

# A ModelProto with ir_version "1", producer "MindSpore", model_version "2.10.0" and mind_ir_version 3.
printf '\x0a\x011\x12\x09MindSpore\x2a\x062.10.0\x68\x03' > "$tmp/mindir_v3.mindir"
mkdir "$tmp/tiles" && head -c 4 /dev/zero > "$tmp/tiles/0000.bin"
status=0
for mindir in "$tmp/mindir_v3.mindir" "$@"; do
    "$main" --mindir_path="$mindir" --input_path="$tmp/tiles" --output_path="$tmp/result" > "$tmp/out" 2> "$tmp/err"
    rc=$?
    errors=$(grep -c "^error: " "$tmp/err")
    last=$(tail -n 1 "$tmp/err")
    echo "$mindir: exit $rc"
    echo "  $last"
    if [ $rc -ne 1 ] || [ "$errors" -ne 1 ] || [ "${last#error: }" == "$last" ]; then
        echo "error: expected exit 1 and one final 'error: ...' line; stderr:" >&2
        cat "$tmp/err" >&2
        status=1
    fi
done
if [ $status -eq 0 ]; then
    echo "ok: ascend310_infer builds against MindSpore Lite $version and fails cleanly on MindIRs it cannot run"
fi
exit $status
