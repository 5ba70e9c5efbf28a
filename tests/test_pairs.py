"""src.pairs: every declared layout, the one-line layout errors, unpaired files, SR scale folders."""
import json
import logging

import cv2
import numpy as np
import pytest

from src.benchmarks import DerainBenchmark, SRBenchmark
from src.train_sources import PairFolder
from src.metrics import psnr
from src.pairs import (LAYOUTS, MissingScaleError, PairLayoutError, find_pairs, has_pair_layout)
from tests.conftest import run_cli

# One generated folder per declared layout: (scale, degraded path, clean path) patterns of pair i.
CASES = {
    "rain/norain": (1, "rain/rain-{i}.png", "norain/norain-{i}.png"),          # Rain12
    "rainy/norain": (1, "rainy/rain-{i:03d}.png", "norain/norain-{i:03d}.png"),
    "input/target": (1, "input/{i:03d}.png", "target/{i:03d}.png"),
    "LR/HR": (2, "LR/X2/img{i}x2.png", "HR/img{i}.png"),
    "LR_bicubic/HR": (3, "LR_bicubic/X3/{i:04d}x3.png", "HR/{i:04d}.png"),      # EDSR download
    "lq/gt": (1, "lq/im_{i:04d}_lq.png", "gt/im_{i:04d}_gt.png"),              # by number
    "low/high": (1, "Low/{i}.png", "HIGH/{i}.png"),                            # any letter case
    "prenet": (1, "rainy/rain-{i:03d}.png", "norain-{i:03d}.png"),             # Rain100L
    "side-by-side": (1, "rain_{i}.png", "norain_{i}.png"),
}


def _png(path, size=(8, 8), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _make(root, scale, lq_fmt, gt_fmt, ids=(1, 2, 3), size=8):
    """Pairs ``ids`` in the given layout; returns {pair index: (lq path, gt path)}."""
    out = {}
    for i in ids:
        lq = _png(root / lq_fmt.format(i=i), (size, size), seed=i)
        gt = _png(root / gt_fmt.format(i=i), (size * scale, size * scale), seed=100 + i)
        out[i] = (lq, gt)
    return out


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_every_declared_layout_has_a_case():
    assert set(CASES) == {layout.name for layout in LAYOUTS}
    assert len({(l.lq_dir.lower(), l.gt_dir.lower(), l.lq_prefixes, l.gt_prefixes) for l in LAYOUTS}) \
        == len(LAYOUTS)


@pytest.mark.parametrize("layout", sorted(CASES))
def test_each_layout_pairs_its_files(tmp_path, layout, caplog):
    scale, lq_fmt, gt_fmt = CASES[layout]
    made = _make(tmp_path, scale, lq_fmt, gt_fmt)
    (tmp_path / "README.txt").write_text("not an image")
    assert has_pair_layout(tmp_path)
    with caplog.at_level(logging.WARNING):
        found = find_pairs(tmp_path, scale)
    assert found.layout == layout and not found.skipped and not caplog.records
    assert [(p.lq, p.gt) for p in found] == [made[i] for i in (1, 2, 3)]
    assert [p.name for p in found] == sorted(p.name for p in found)
    assert found.lq_dir == made[1][0].parent and found.gt_dir == made[1][1].parent


def test_names_are_degraded_stems_without_the_scale_suffix(tmp_path):
    _make(tmp_path, 2, "LR/X2/Baby{i}x2.png", "HR/Baby{i}.png", ids=(1,))
    assert [p.name for p in find_pairs(tmp_path, 2)] == ["Baby1"]
    rain = tmp_path / "r"
    _make(rain, 1, "rainy/rain-{i:03d}.png", "norain-{i:03d}.png", ids=(1,))
    assert [p.name for p in find_pairs(rain)] == ["rain-001"]


def test_ambiguous_folder_is_a_one_line_error_naming_both_layouts(tmp_path):
    _make(tmp_path, 1, "rain/rain-{i}.png", "norain/norain-{i}.png")
    _make(tmp_path, 1, "input/{i}.png", "target/{i}.png")
    with pytest.raises(PairLayoutError) as err:
        find_pairs(tmp_path)
    message = _one_line(err)
    assert "ambiguous" in message and "rain/norain" in message and "input/target" in message
    with pytest.raises(PairLayoutError):
        has_pair_layout(tmp_path)  # never guessed, even for the yes/no question


def test_prenet_plus_side_by_side_is_ambiguous(tmp_path):
    _make(tmp_path, 1, "rainy/rain-{i}.png", "norain-{i}.png")
    _png(tmp_path / "rain-9.png")
    with pytest.raises(PairLayoutError) as err:
        find_pairs(tmp_path)
    assert "prenet" in _one_line(err) and "side-by-side" in _one_line(err)


def test_folder_without_layout_is_a_one_line_error_listing_the_layouts(tmp_path):
    _png(tmp_path / "photos" / "a.png")
    _png(tmp_path / "rain-1.png")  # side by side needs norain-N too
    assert not has_pair_layout(tmp_path)
    with pytest.raises(PairLayoutError) as err:
        find_pairs(tmp_path)
    message = _one_line(err)
    assert "no paired layout" in message and "photos/" in message
    for layout in LAYOUTS:
        assert layout.describe() in message


def test_unmatched_files_are_skipped_with_one_warning(tmp_path, caplog):
    made = _make(tmp_path, 1, "rain/rain-{i}.png", "norain/norain-{i}.png", ids=(1, 2))
    orphan = _png(tmp_path / "rain" / "rain-3.png")
    extra = _png(tmp_path / "norain" / "extra.png")
    with caplog.at_level(logging.WARNING, logger="src.pairs"):
        found = find_pairs(tmp_path)
    assert [(p.lq, p.gt) for p in found] == [made[1], made[2]]
    assert sorted(u.path for u in found.skipped) == sorted([orphan, extra])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "2 unpaired" in warnings[0]
    assert "rain-3.png" in warnings[0] and "extra.png" in warnings[0]


def test_side_by_side_strays_and_duplicate_keys_are_skipped(tmp_path):
    made = _make(tmp_path, 1, "rain-{i}.png", "norain-{i}.png", ids=(1, 2))
    stray = _png(tmp_path / "notes.png")
    twin = _png(tmp_path / "rain-1.jpg")  # same key as rain-1.png
    found = find_pairs(tmp_path)
    assert [(p.lq, p.gt) for p in found] == [made[2]]  # rain-1.png or .jpg? not guessed
    assert {u.path for u in found.skipped} == {stray, twin, made[1][0], made[1][1]}


def test_number_fallback_pairs_only_unique_numbers(tmp_path):
    _png(tmp_path / "input" / "rain-012.png")
    _png(tmp_path / "target" / "norain-12.png")  # different stem, same number
    _png(tmp_path / "input" / "a_7.png")
    _png(tmp_path / "input" / "b_7.png")
    _png(tmp_path / "target" / "c_7.png")  # 7 twice on the degraded side: not guessed
    found = find_pairs(tmp_path)
    assert [(p.lq.name, p.gt.name) for p in found] == [("rain-012.png", "norain-12.png")]
    assert sorted(u.path.name for u in found.skipped) == ["a_7.png", "b_7.png", "c_7.png"]


def test_sr_scale_folders_and_suffix(tmp_path):
    made2 = _make(tmp_path, 2, "LR/X2/baby{i}x2.png", "HR/baby{i}.png", ids=(1, 2))
    _make(tmp_path, 3, "LR/x3/baby{i}X3.png", "HR/baby{i}.png", ids=(1,))  # x3/X3: any case
    found = find_pairs(tmp_path, 2)
    assert found.lq_dir == tmp_path / "LR" / "X2" and [(p.lq, p.gt) for p in found] == [made2[1], made2[2]]
    found3 = find_pairs(tmp_path, 3)
    assert [p.name for p in found3] == ["baby1"] and [u.path.name for u in found3.skipped] == ["baby2.png"]
    with pytest.raises(MissingScaleError) as err:
        find_pairs(tmp_path, 4)
    assert "X4" in _one_line(err) and "X2, X3" in _one_line(err)


def test_sr_suffix_without_scale_folder(tmp_path):
    made = _make(tmp_path, 2, "LR/{i:04d}x2.png", "HR/{i:04d}.png", ids=(1, 2))
    assert [(p.lq, p.gt) for p in find_pairs(tmp_path, 2)] == [made[1], made[2]]


def test_sr_benchmark_makes_lr_when_the_scale_folder_is_missing(tmp_path):
    _make(tmp_path, 2, "LR_bicubic/X2/{i}x2.png", "HR/{i}.png", ids=(1, 2), size=12)
    paired = list(SRBenchmark(tmp_path, 2))
    assert [it.input.shape for it in paired] == [(12, 12, 3)] * 2
    made = list(SRBenchmark(tmp_path, 4))  # no X4: bicubic LR from HR/, as before
    assert [it.name for it in made] == ["1", "2"] and made[0].input.shape == (6, 6, 3)


def test_benchmark_reports_unpaired_files_as_skipped(tmp_path):
    _make(tmp_path, 1, "rain/rain-{i}.png", "norain/norain-{i}.png", ids=(1, 2))
    orphan = _png(tmp_path / "rain" / "rain-3.png")
    bench = DerainBenchmark(tmp_path)
    assert len(bench) == 2 and bench.names == ["rain-1", "rain-2"]
    assert [it.name for it in bench] == ["rain-1", "rain-2"]
    assert [s.path for s in bench.skipped] == [str(orphan)]


def test_pair_folder_reads_any_layout(tmp_path):
    _make(tmp_path, 1, "low/{i}.png", "high/{i}.png", ids=(1, 2), size=48)
    _png(tmp_path / "low" / "9.png", (48, 48))
    folder = PairFolder(tmp_path, "derain")
    assert folder.names == ["1", "2"] and len(folder.pairs) == 2
    assert folder.lq_dir == tmp_path / "low" and folder.gt_dir == tmp_path / "high"
    with pytest.raises(PairLayoutError):
        PairFolder(tmp_path / "low", "derain")


def test_eval_scores_every_pair_of_a_rain12_style_folder(tmp_path):
    data, out = tmp_path / "Rain12", tmp_path / "r.json"
    made = _make(data, 1, "rain/rain-{i}.png", "norain/norain-{i}.png", ids=range(1, 13), size=24)
    proc = run_cli("eval.py", "--task", "derain", "--baseline", "--data_path", data, "--json", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["images"] == 12 and result["skipped"] == []
    assert sorted(r["name"] for r in result["rows"]) == sorted(f"rain-{i}" for i in range(1, 13))
    want = np.mean([psnr(cv2.imread(str(lq))[:, :, ::-1], cv2.imread(str(gt))[:, :, ::-1])
                    for lq, gt in made.values()])
    assert result["psnr"] == pytest.approx(want, abs=1e-6)


def test_eval_on_a_folder_without_layout_is_one_line(tmp_path):
    _png(tmp_path / "rain" / "rain-1.png")
    proc = run_cli("eval.py", "--task", "derain", "--baseline", "--data_path", tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and "no paired layout" in lines[0] and "rain/ + norain/" in lines[0]


def test_prenet_root_strays_are_skipped(tmp_path):
    made = _make(tmp_path, 1, "rainy/rain-{i:03d}.png", "norain-{i:03d}.png", ids=(1, 2))
    stray = _png(tmp_path / "preview.png")
    found = find_pairs(tmp_path)
    assert [(p.lq, p.gt) for p in found] == [made[1], made[2]]
    assert [u.path for u in found.skipped] == [stray]
