"""restore.py: files, folders and globs of any size and colour nature; nothing overwritten."""
import cv2
import numpy as np

from src.image_io import read_image
from tests.conftest import DATASETS, ROOT, run_cli


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def test_restore_small_gray_and_colour(tmp_path, tiny_ckpt):
    src = cv2.imread(str(DATASETS / "CSet5" / "baby.png"))
    _write(tmp_path / "in" / "tiny.png", src[100:130, 200:240])            # 40x30
    _write(tmp_path / "in" / "gray.png", cv2.cvtColor(src[:90, :70], cv2.COLOR_BGR2GRAY))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    _write(tmp_path / "in" / "broken.png", np.zeros((1, 1), np.uint8))
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n garbage")
    proc = run_cli("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", tiny_ckpt,
                   "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    tiny = read_image(tmp_path / "out" / "tiny.png", keep_gray=True)
    gray = read_image(tmp_path / "out" / "gray.png", keep_gray=True)
    assert tiny.shape == (60, 80, 3)
    assert gray.shape == (180, 140)
    assert "broken.png" in proc.stderr and "skipped" in proc.stderr
    again = run_cli("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", tiny_ckpt,
                    "--input", tmp_path / "in" / "tiny.png", "--output", tmp_path / "out")
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_restore_large_image(tmp_path):
    """A 2800x2100 photo: ~6k tiles in batches; model options come from the checkpoint.

    A one-layer, 8-feature IPT keeps the test fast; the tiling path is the same for any size.
    """
    import mindspore as ms
    from src.checkpoint import save_checkpoint
    from src.config import load_config
    from src.ipt import IPT
    ms.set_seed(0)
    cfg = load_config("ipt_tiny", {"tasks": ["denoise_30"], "n_feats": 8, "num_heads": 2, "num_layers": 1})
    ckpt = save_checkpoint(IPT(cfg), tmp_path / "micro.ckpt", cfg)
    src = cv2.imread(str(DATASETS / "CBSD68" / "101085.png"))
    big = cv2.resize(src, (2800, 2100), interpolation=cv2.INTER_LINEAR)
    path = _write(tmp_path / "big.jpg", big)
    proc = run_cli("restore.py", "--task", "denoise_30", "--ckpt", ckpt, "--input", path,
                   "--output", tmp_path / "out", "--tile_batch", 32, "--out_format", "same", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert read_image(tmp_path / "out" / "big.jpg").shape == (2100, 2800, 3)
    assert "n_feats=8" in proc.stderr


def test_shipped_weights_restore_out_of_the_box(tmp_path):
    """The README's first command, as written there: no --ckpt, the shipped weights remove most of
    the rain (the README states 21.66 -> 31.63 dB on Y; at least +5 dB here)."""
    import re
    import shlex
    from src.metrics import psnr
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):]
    line = re.search(r"^python restore\.py .*$", quick_start, re.M).group(0)
    args = shlex.split(line)[2:]
    assert args[args.index("--task") + 1] == "derain" and "--ckpt" not in args
    rainy = ROOT / args[args.index("--input") + 1]
    args[args.index("--output") + 1] = str(tmp_path)
    proc = run_cli("restore.py", *args)
    assert proc.returncode == 0, proc.stderr
    assert "shipped weights" in proc.stderr
    from src.pairs import find_pairs
    pair = next(p for p in find_pairs(rainy.parent.parent) if p.lq.resolve() == rainy.resolve())
    clean = read_image(pair.gt)
    assert psnr(read_image(tmp_path / rainy.name), clean, mode="y") > psnr(read_image(rainy), clean, mode="y") + 5.0
