"""Tiling benchmark: tiles evaluated and time per image, exact vs fast; fast-mode overlap study.

    python bench/bench_tiling.py [--size 256x256] [--scale 2] [--net nearest|ipt_tiny|ipt_small_ref]
                                 [--batch-size 8] [--overlap 16] [--blend trim] [--json out.json]
    python bench/bench_tiling.py --measure          # the overlap/window table of src/tiling.py

--net nearest: a numpy nearest-upsampling dummy (pure tiling overhead, no MindSpore);
ipt_tiny: that config with random weights; ipt_small_ref: the official small checkpoint from
../shared/ipt_reference (converted on the fly).  One graph per task, compiled once (warm-up
batch, reported separately), then every tile batch has the same shape.
--measure: max |error| and PSNR of fast mode vs applying a dummy network to the whole image,
for dummies with a receptive field (5x5 box blur radius 2; 4 x box blur radius 8, like
IPT's conv head) and vs exact mode for a dummy with a tile-global term; overlaps 0..24,
all windows.  This is how DEFAULT_OVERLAP / DEFAULT_BLEND were chosen.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.tiling import (DEFAULT_BLEND, DEFAULT_OVERLAP, count_tiles,  # noqa: E402
                        official_tile_count, tiled_forward)

REFERENCE = ROOT.parent / "shared" / "ipt_reference"


# ----------------------------------------------------------------------------- networks
def _up(x, s):
    return np.repeat(np.repeat(x, s, -2), s, -1)


def _box(x, r):
    """(N,3,H,W) box blur of radius r with zero padding (float64)."""
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (r + 1, r), (r + 1, r)))
    c = p.cumsum(2).cumsum(3)
    k = 2 * r + 1
    return (c[:, :, k:, k:] - c[:, :, :-k, k:] - c[:, :, k:, :-k] + c[:, :, :-k, :-k]) / k ** 2


def _blur8(x):
    return _box(_box(_box(_box(x, 2), 2), 2), 2)


DUMMIES = {
    "blur_r2": lambda x: _box(x, 2),
    "blur_r8": _blur8,
    "global": lambda x: 0.8 * _blur8(x) + 0.2 * x.mean((2, 3), keepdims=True),
}


def _ms_runner(net_name: str, scale: int, threads: int):
    import mindspore as ms
    from src.config import load_config
    from src.ipt import IPT
    ms.set_device("CPU")
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:
        pass
    ms.set_context(mode=ms.GRAPH_MODE)
    task = {1: "denoise_30", 2: "sr_x2", 3: "sr_x3", 4: "sr_x4"}[scale]
    if net_name == "ipt_small_ref":
        from src.checkpoint import load_params_strict
        from src.convert_weights import convert_state_dict
        from src.pt_reader import load_pt_state_dict
        cfg = load_config("ipt_small_ref")
        model = IPT(cfg)
        expected = {p.name: tuple(p.shape) for p in model.get_parameters()}
        params = convert_state_dict(load_pt_state_dict(REFERENCE / "small_pretrain6.pt"), expected,
                                    list(cfg.tasks))
        load_params_strict(model, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()},
                           "ref")
    else:
        model = IPT(load_config(net_name, {"tasks": [task]}))
    model.set_train(False)
    net = model.task_net(task)
    return lambda x: net(ms.Tensor(x)).asnumpy()


# ----------------------------------------------------------------------------- modes
def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _images(h, w, seed):
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (3, h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    sm = _box(rng.uniform(0, 255, (1, 3, h, w)), 3)[0]
    smooth = (0.5 * sm + 60 * np.sin(xx / 9.0) + 50 * np.cos(yy / 13.0) + 60).clip(0, 255)
    return {"noise": noise, "smooth": smooth.astype(np.float32)}


def measure(overlaps=(0, 4, 8, 12, 16, 20, 24), blends=("linear", "cosine", "trim", "crop")):
    """Print the fast-mode error table (see module docstring)."""
    sizes, rows = [(256, 256), (101, 127)], []
    for kind, f in DUMMIES.items():
        for blend in blends:
            for ov in overlaps:
                err = {"noise": [0.0, 99.0], "smooth": [0.0, 99.0]}
                for s in (1, 2):
                    fn = lambda x: _up(f(x), s).astype(np.float32)  # noqa: E731
                    for h, w in sizes:
                        for name, img in _images(h, w, h).items():
                            ref = (tiled_forward(img, fn, s, mode="exact") if kind == "global"
                                   else fn(img[None])[0])
                            out = tiled_forward(img, fn, s, overlap=ov, blend=blend)
                            err[name][0] = max(err[name][0], float(np.abs(out - ref).max()))
                            err[name][1] = min(err[name][1], _psnr(out, ref))
                row = {"dummy": kind, "blend": blend, "overlap": ov,
                       "tiles_256": count_tiles(256, 256, "fast", ov),
                       **{f"max_err_{k}": v[0] for k, v in err.items()},
                       **{f"min_psnr_{k}": v[1] for k, v in err.items()}}
                rows.append(row)
                print(f"{kind:8s} {blend:6s} overlap {ov:2d}  tiles(256x256) {row['tiles_256']:4d}  "
                      f"max|err| noise {err['noise'][0]:7.3f} smooth {err['smooth'][0]:7.3f}  "
                      f"min PSNR noise {err['noise'][1]:6.2f} smooth {err['smooth'][1]:6.2f}",
                      flush=True)
    return rows


def bench(args) -> list:
    h, w = (int(v) for v in args.size.lower().split("x"))
    s = args.scale
    img = np.random.default_rng(0).uniform(0, 255, (3, h, w)).astype(np.float32)
    if args.net == "nearest":
        fn = lambda x: _up(x, s)  # noqa: E731
        compile_s = 0.0
    else:
        fn = _ms_runner(args.net, s, args.threads)
        t0 = time.perf_counter()
        fn(np.zeros((args.batch_size, 3, 48, 48), np.float32))  # compile once
        compile_s = time.perf_counter() - t0
    print(f"image {h}x{w} x{s}, net {args.net}, batch {args.batch_size}, compile {compile_s:.1f} s; "
          f"official forward_chop would evaluate {official_tile_count(h, w)} tiles")
    rows, outs = [], {}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        out, st = tiled_forward(img, fn, s, mode=mode, batch_size=args.batch_size,
                                overlap=args.overlap, blend=args.blend,
                                self_ensemble=args.self_ensemble, return_stats=True)
        dt = time.perf_counter() - t0
        outs[mode] = out
        row = {"mode": mode, "size": [h, w], "scale": s, "net": args.net, "tiles": st.tiles,
               "batches": st.batches, "pad_tiles": st.pad_tiles, "seconds": dt,
               "ms_per_tile": 1e3 * dt / max(st.tiles, 1), "compile_s": compile_s,
               "overlap": args.overlap if mode == "fast" else None}
        rows.append(row)
        print(f"{mode:5s}: tiles evaluated {st.tiles:5d} in {st.batches} batches "
              f"({st.pad_tiles} padding), {dt:.2f} s, {row['ms_per_tile']:.2f} ms/tile")
    if "exact" in outs and "fast" in outs:
        print(f"fast vs exact: max |diff| {np.abs(outs['fast'] - outs['exact']).max():.4f}, "
              f"PSNR {_psnr(outs['fast'], outs['exact']):.2f} dB")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", action="store_true", help="print the overlap/window study")
    p.add_argument("--size", default="256x256", help="HxW of the input image")
    p.add_argument("--scale", type=int, default=2, choices=(1, 2, 3, 4))
    p.add_argument("--net", default="nearest", choices=("nearest", "ipt_tiny", "ipt_small_ref"))
    p.add_argument("--modes", default="exact,fast")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    p.add_argument("--blend", default=DEFAULT_BLEND)
    p.add_argument("--self-ensemble", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    rows = measure() if args.measure else bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
