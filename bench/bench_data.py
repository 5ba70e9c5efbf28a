"""Training-data throughput and memory: the shipped folder from RAM, or a generated ImageNet-size corpus streamed.

    python bench/bench_data.py [--batch 8] [--seconds 3] [--rounds 2] [--json out.json]
    python bench/bench_data.py --corpus 1000,10000,50000 [--mindrecord 10000]
                               [--train_steps 30 --train_corpus 20000] [--keep DIR] [--json bench/data_corpus_xeon.json]

Without ``--corpus``: pre-training batches (all six tasks) from ../shared/datasets/train decoded
into RAM, the source called directly and through GeneratorDataset worker threads/processes.

With ``--corpus``: N ImageNet-like JPEGs (short side 300-500 px, natural content resized from
../shared/datasets, quality 90; every 1000th file is a CMYK JPEG, a gray JPEG, a truncated JPEG
or a text file named .JPEG, as in ImageNet) are generated once under a temp folder (or --keep).
For each N, in a fresh process: the index build time (and the cached re-open), streamed
samples/s in this process and with 1 and 2 worker processes, and the peak memory of the whole
process tree, workers included (RSS summed, and PSS, which counts shared pages once).
``--mindrecord N`` converts the N-file corpus with scripts/make_mindrecord.py's writer and compares
its MindDataset pipeline with the folder's, same workers. ``--train_controls`` runs the same train.py on the shipped folder in RAM, with six and with two tasks:
the memory the model's compiled graphs take without any streamed data. ``--train_steps`` then runs train.py (ipt_tiny, batch 8) on the ``--train_corpus`` folder and
reports wall time and peak tree memory.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from src.config import load_config  # noqa: E402
from src.cpu_isa import cpu_name  # noqa: E402
from src.tasks import PRETRAIN_ORDER  # noqa: E402

LOG = logging.getLogger("bench_data")
DATASETS = ROOT.parent / "shared" / "datasets"
TRAIN = DATASETS / "train"
PART = 1000  # files per generated sub-folder (ImageNet: ~1300 per class folder)


# ----------------------------------------------------------------------------- process-tree memory


def _children(pid: int) -> List[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def tree_memory_mb(pid: int) -> Dict[str, float]:
    """RSS summed over ``pid`` and all its descendants, and PSS (shared pages split between them)."""
    todo, seen, rss, pss = [pid], set(), 0, 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
        todo.extend(_children(p))
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": len(seen)}


class TreePeak:
    """Samples the memory of a process tree every ``every`` seconds in a thread; keeps the peaks."""

    def __init__(self, pid: int, every: float = 0.25):
        self.pid, self.every = pid, every
        self.peak = {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = tree_memory_mb(self.pid)
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.every)

    def __enter__(self) -> "TreePeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- corpus


def _sources() -> List[Path]:
    from src.image_io import list_images
    return [p for d in ("CBSD68", "CSet14", "train/DIV2K_crop256") for p in list_images(DATASETS / d)]


def _make_file(args) -> None:
    import cv2
    from PIL import Image
    path, source, seed = args
    rng = np.random.default_rng(seed)
    img = cv2.imread(str(source), cv2.IMREAD_COLOR)
    short = int(rng.integers(300, 501))
    aspect = float(rng.uniform(0.75, 1.4))
    h, w = (short, int(short * aspect)) if rng.random() < 0.6 else (int(short * aspect), short)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.clip(img.astype(np.int16) + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8)
    quirk = seed % PART
    if quirk == 1:  # CMYK JPEG
        Image.fromarray(np.ascontiguousarray(img[:, :, ::-1])).convert("CMYK").save(path, quality=90)
    elif quirk == 2:  # grayscale JPEG
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 90])
    elif quirk == 3:  # truncated download
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        Path(path).write_bytes(data[: len(data) // 3])
    elif quirk == 4:  # an HTML error page saved as .JPEG
        Path(path).write_bytes(b"<html><body>Not Found</body></html>\n")
    elif quirk == 5:  # a PNG named .JPEG
        cv2.imwrite(str(path) + ".png", img)
        os.replace(str(path) + ".png", path)
    else:
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def make_corpus(root: Path, n: int) -> float:
    """Generate files 0..n-1 under ``root/part_XXX`` (kept between calls); returns seconds spent."""
    sources = _sources()
    todo = []
    for i in range(n):
        path = root / f"part_{i // PART:04d}" / f"img_{i:08d}.JPEG"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            todo.append((str(path), sources[i % len(sources)], i))
    start = time.perf_counter()
    if todo:
        LOG.info("generating %d JPEGs under %s", len(todo), root)
        with get_context("fork").Pool(os.cpu_count() or 1) as pool:
            for k, _ in enumerate(pool.imap_unordered(_make_file, todo, chunksize=64)):
                if (k + 1) % 5000 == 0:
                    LOG.info("  %d/%d", k + 1, len(todo))
    return time.perf_counter() - start


def corpus_view(root: Path, n: int) -> Path:
    """A folder whose sub-folders are symlinks to the first n/1000 parts (an N-image corpus)."""
    view = root / f"view_{n}"
    if not view.is_dir():
        view.mkdir()
        for k in range((n + PART - 1) // PART):
            os.symlink(root / f"part_{k:04d}", view / f"part_{k:04d}")
    return view


# ----------------------------------------------------------------------------- measuring


def _rate_direct(source, seconds: float) -> dict:
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds and steps < len(source):
        source[steps]
        steps += 1
    return {"steps": steps, "seconds": time.perf_counter() - start}


def _rate_dataset(cfg, source, seconds: float, processes: bool) -> dict:
    from src.dataset import create_train_dataset
    t0 = time.perf_counter()
    dataset = create_train_dataset(cfg, PRETRAIN_ORDER, processes=processes, source=source)
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(iterator)  # worker start-up and first batch are not throughput
    start, steps = time.perf_counter(), 0
    for _ in iterator:
        steps += 1
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    getattr(iterator, "stop", None) and iterator.stop()
    getattr(iterator, "close", None) and iterator.close()
    return {"steps": steps, "seconds": elapsed, "startup_s": start - t0}


def measure_folder(folder: Path, batch: int, seconds: float, source_kind: str, settings) -> dict:
    """Index build (fresh cache) and re-open, then samples/s per (label, workers, processes, crops)."""
    from src.dataset import build_train_source
    from src.image_index import open_index
    cache = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        t0 = time.perf_counter()
        index = open_index(folder, cache / "index.npz")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        open_index(folder, cache / "index.npz")
        reopen_s = time.perf_counter() - t0
        rows = []
        for label, workers, processes, crops in settings:
            cfg = load_config("ipt_tiny", overrides={
                "train_path": str(folder), "batch_size": batch, "steps": 1000000, "data_source": source_kind,
                "data_index": str(cache / "index.npz"), "crops_per_image": crops, "workers": max(workers, 1)})
            source = build_train_source(cfg, PRETRAIN_ORDER)
            res = _rate_direct(source, seconds) if workers == 0 else _rate_dataset(cfg, source, seconds, processes)
            res.update(label=label, workers=workers, processes=processes, crops_per_image=source.crops_per_image,
                       samples_per_s=res["steps"] * batch / res["seconds"])
            rows.append(res)
            LOG.info("  %-32s %7.0f samples/s (%d batches of %d)", label, res["samples_per_s"], res["steps"], batch)
        return {"images": len(index), "skipped": len(index.skipped), "index_build_s": build_s,
                "index_reopen_s": reopen_s, "decoded_gb": index.decoded_bytes() / 1e9, "rates": rows}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


STREAM_SETTINGS = [("in-process, 4 crops/image", 0, False, 4), ("in-process, 1 crop/image", 0, False, 1),
                   ("1 worker process, 4 crops/image", 1, True, 4),
                   ("2 worker processes, 4 crops/image", 2, True, 4)]
RAM_SETTINGS = [("0 workers (direct)", 0, False, 1), ("1 worker", 1, False, 1),
                ("2 worker threads", 2, False, 1), ("2 worker processes", 2, True, 1)]


MINDRECORD_SETTINGS = [("MindRecord, 1 worker process, 4 crops/image", 1, True, 4),
                       ("MindRecord, 2 worker processes, 4 crops/image", 2, True, 4),
                       ("folder, 1 worker process, 4 crops/image", 1, True, 4),
                       ("folder, 2 worker processes, 4 crops/image", 2, True, 4)]


def measure_mindrecord(folder: Path, batch: int, seconds: float) -> dict:
    """Convert the folder to MindRecord (timed), then the same pipelines from both, alternating."""
    from src.dataset import build_train_source
    from src.image_index import open_index
    from src.mindrecord_data import write_mindrecord
    work = Path(tempfile.mkdtemp(prefix="bench-mr-"))
    try:
        index = open_index(folder, work / "index.npz")
        t0 = time.perf_counter()
        write_mindrecord(index, work / "mr", shards=8, workers=os.cpu_count() or 1)
        convert_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (work / "mr").iterdir()) / 2 ** 20
        rows = []
        for label, workers, processes, crops in MINDRECORD_SETTINGS:
            path = work / "mr" if label.startswith("MindRecord") else folder
            cfg = load_config("ipt_tiny", overrides={
                "train_path": str(path), "batch_size": batch, "steps": 1000000, "data_source": "stream",
                "data_index": str(work / "index.npz"), "crops_per_image": crops, "workers": workers})
            source = build_train_source(cfg, PRETRAIN_ORDER)
            res = _rate_dataset(cfg, source, seconds, processes)
            res.update(label=label, workers=workers, samples_per_s=res["steps"] * batch / res["seconds"])
            rows.append(res)
            LOG.info("  %-46s %7.0f samples/s (start-up %.1f s)", label, res["samples_per_s"], res["startup_s"])
        return {"images": len(index), "convert_s": convert_s, "mindrecord_mb": size_mb, "rates": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _child(folder: str, batch: int, seconds: float, kind: str) -> None:
    """One measurement in this fresh process; the parent samples our tree's memory."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    LOG.setLevel(logging.INFO)
    if kind == "mindrecord":
        print(json.dumps(measure_mindrecord(Path(folder), batch, seconds)), flush=True)
        return
    settings = STREAM_SETTINGS if kind == "stream" else RAM_SETTINGS
    print(json.dumps(measure_folder(Path(folder), batch, seconds, kind, settings)), flush=True)


def run_measured(cmd: List[str], env: Optional[dict] = None, timeout: float = 7200) -> dict:
    """Run ``cmd``, sampling the peak memory of its process tree; returns its last stdout line as JSON."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env, cwd=ROOT)
    with TreePeak(proc.pid) as peak:
        out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    result.update(wall_s=time.perf_counter() - start, peak_tree=peak.peak)
    return result


def train_run(folder: Path, steps: int, batch: int, extra=()) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        cmd = [sys.executable, "train.py", "--config", "ipt_tiny", "--train_path", str(folder),
               "--batch_size", str(batch), "--steps", str(steps), "--log_every", "10", "--save_every", str(steps),
               "--workers", "2", "--out_dir", str(out / "run"), "--data_index", str(out / "index.npz"), *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        with TreePeak(proc.pid) as peak:
            _, err = proc.communicate(timeout=7200)
        if proc.returncode != 0:
            raise RuntimeError(f"train.py exited {proc.returncode}: {err.strip().splitlines()[-1:]}")
        return {"steps": steps, "batch": batch, "args": list(extra), "wall_s": time.perf_counter() - start,
                "peak_tree": peak.peak, "log_tail": err.strip().splitlines()[-4:]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per setting")
    parser.add_argument("--corpus", default="", help="comma-separated corpus sizes to generate and stream")
    parser.add_argument("--keep", default="", help="generate the corpus here and keep it (default: a temp folder)")
    parser.add_argument("--mindrecord", type=int, default=0,
                        help="also convert a corpus of this size to MindRecord and compare its pipeline")
    parser.add_argument("--train_steps", type=int, default=0, help="also time train.py for this many steps")
    parser.add_argument("--train_corpus", type=int, default=20000, help="corpus size of the train.py run")
    parser.add_argument("--train_controls", action="store_true",
                        help="also train.py on the shipped folder in RAM, with six and with two tasks (what the "
                             "model's graphs take, without the streamed data)")
    parser.add_argument("--json", default="", help="write the results to this file")
    parser.add_argument("--_child", nargs=2, metavar=("FOLDER", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        return _child(args._child[0], args.batch, args.seconds, args._child[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    env = dict(os.environ, IPT_CACHE_DIR=tempfile.mkdtemp(prefix="bench-cache-"))
    result = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "batch": args.batch, "seconds": args.seconds}
    me = [sys.executable, str(Path(__file__).resolve()), "--batch", str(args.batch), "--seconds", str(args.seconds)]
    if args.train_controls:
        result["train_controls"] = []
        for extra in (["--data_source", "ram"], ["--data_source", "ram", "--tasks", "[sr_x2,sr_x3]"]):
            LOG.info("train.py: %d steps of ipt_tiny on %s, %s", args.train_steps or 30, TRAIN, " ".join(extra))
            row = train_run(TRAIN, args.train_steps or 30, args.batch, extra)
            LOG.info("  %.0f s wall, peak tree RSS %.0f MB, PSS %.0f MB", row["wall_s"], row["peak_tree"]["rss_mb"],
                     row["peak_tree"]["pss_mb"])
            result["train_controls"].append(row)
    if not args.corpus and not args.train_controls:
        LOG.info("shipped training folder %s, decoded into RAM", TRAIN)
        result["ram"] = run_measured(me + ["--_child", str(TRAIN), "ram"], env=env)
    elif args.corpus:
        sizes = sorted(int(n) for n in args.corpus.split(","))
        base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-corpus-"))
        base.mkdir(parents=True, exist_ok=True)
        largest = max(sizes + ([args.train_corpus] if args.train_steps else []) + [args.mindrecord])
        result["generate_s"] = make_corpus(base, largest)
        result["corpus"] = []
        for n in sizes:
            LOG.info("corpus of %d files: streamed", n)
            row = run_measured(me + ["--_child", str(corpus_view(base, n)), "stream"], env=env)
            row["files"] = n
            LOG.info("  index %.1f s (re-open %.2f s), %d images, %d skipped; peak tree RSS %.0f MB, PSS %.0f MB "
                     "(%d processes)", row["index_build_s"], row["index_reopen_s"], row["images"], row["skipped"],
                     row["peak_tree"]["rss_mb"], row["peak_tree"]["pss_mb"], row["peak_tree"]["processes"])
            result["corpus"].append(row)
        if args.mindrecord:
            LOG.info("MindRecord against the folder, %d files", args.mindrecord)
            result["mindrecord"] = run_measured(me + ["--_child", str(corpus_view(base, args.mindrecord)),
                                                      "mindrecord"], env=env)
        if args.train_steps:
            LOG.info("train.py: %d steps of ipt_tiny, batch %d, on %d files", args.train_steps, args.batch,
                     args.train_corpus)
            result["train"] = train_run(corpus_view(base, args.train_corpus), args.train_steps, args.batch)
            result["train"]["files"] = args.train_corpus
            LOG.info("  %.0f s wall, peak tree RSS %.0f MB, PSS %.0f MB", result["train"]["wall_s"],
                     result["train"]["peak_tree"]["rss_mb"], result["train"]["peak_tree"]["pss_mb"])
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    result["loadavg_1min"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
