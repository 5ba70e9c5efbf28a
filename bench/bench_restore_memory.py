"""Peak memory of restoring one large image: streamed 8-bit output against the float path.

    python bench/bench_restore_memory.py [--size 4000x3000] [--scales 1,2] [--json out.json]

Each case runs in its own process and reports its peak RSS (VmHWM):
- `float`:  quantize(restore_array(...)), the float32 canvas the tiler always built before;
- `stream`: restore_uint8(...), which restore.py uses: the output is quantized band by band;
both with a numpy stand-in network (nearest upsampling, no MindSpore), so the figure is the
tiling's own; and `restore.py`: the real command on a JPEG of that size with a one-layer,
8-feature IPT (MindSpore's own footprint included).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.utils import peak_rss_mb  # noqa: E402


def child(kind: str, w: int, h: int, scale: int) -> dict:
    from src.inference import restore_array, restore_uint8
    from src.metrics import quantize
    from src.tiling import Tiler
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    base = peak_rss_mb()
    tiler = Tiler(lambda x: np.repeat(np.repeat(x, scale, 2), scale, 3), scale, batch_size=32)
    out = restore_uint8(img, tiler) if kind == "stream" else quantize(restore_array(img, tiler)).astype(np.uint8)
    return {"kind": kind, "scale": scale, "shape": list(out.shape), "peak_mb": peak_rss_mb(),
            "before_mb": base}


def real_command(w: int, h: int, scale: int, tmp: Path) -> dict:
    import cv2
    task = {1: "denoise_30", 2: "sr_x2", 3: "sr_x3", 4: "sr_x4"}[scale]
    code = ("import sys; sys.path.insert(0, %r); import mindspore as ms; from src.checkpoint import "
            "save_checkpoint; from src.config import load_config; from src.ipt import IPT; ms.set_seed(0); "
            "cfg = load_config('ipt_tiny', {'tasks': [%r], 'n_feats': 8, 'num_heads': 2, 'num_layers': 1}); "
            "save_checkpoint(IPT(cfg), %r, cfg)" % (str(ROOT), task, str(tmp / "micro.ckpt")))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    src = cv2.imread(str(ROOT.parent / "shared" / "datasets" / "CBSD68" / "101085.png"))
    cv2.imwrite(str(tmp / "big.jpg"), cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR))
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "restore.py", "--task", task,
                          "--ckpt", str(tmp / "micro.ckpt"), "--input", str(tmp / "big.jpg"), "--output",
                          str(tmp / f"out{scale}"), "--tile_batch", "32"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return {"kind": "restore.py", "scale": scale, "rc": int(out[0]), "peak_mb": int(out[1]) / 1024.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    parser.add_argument("--scales", default="1,2")
    parser.add_argument("--json", default="")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args._child:
        kind, scale = args._child.split(":")
        print(json.dumps(child(kind, w, h, int(scale))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            for kind in ("float", "stream"):
                proc = subprocess.run([sys.executable, __file__, "--size", args.size, "--_child", f"{kind}:{scale}"],
                                      capture_output=True, text=True, check=True)
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            rows.append(real_command(w, h, scale, Path(tmp)))
    print(f"\nrestore of one {w}x{h} image, peak RSS of the process (MB):")
    print(f"{'scale':>5} {'float path':>11} {'streamed':>9} {'restore.py':>11}")
    for scale in sorted({r["scale"] for r in rows}):
        get = {r["kind"]: r["peak_mb"] for r in rows if r["scale"] == scale}
        print(f"{scale:>5} {get['float']:>11.0f} {get['stream']:>9.0f} {get['restore.py']:>11.0f}")
    if args.json:
        from src.utils import write_text_atomic
        write_text_atomic(args.json, json.dumps({"size": [w, h], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
