"""bench/bench_budget.py: the gain-per-doubling fit and the budget it implies (generated curves, no training)."""
import json
import math

import pytest
from tests.conftest import load_script


@pytest.fixture(scope="module")
def budget():
    return load_script("bench/bench_budget.py")


def _write_run(folder, task, steps, psnr_at, samples_per_s=8.0):
    """A metrics.jsonl like train.py's: train records every 25 steps, validations every 100."""
    (folder / task).mkdir(parents=True)
    lines = [{"kind": "train", "task": task, "step": s, "l1": 1.0, "samples_per_s": samples_per_s}
             for s in range(25, steps + 1, 25)]
    lines += [{"kind": "val", "task": task, "step": s, "val_psnr": psnr_at(s), "val_psnr_rgb": psnr_at(s) - 2}
              for s in range(100, steps + 1, 100)]
    (folder / task / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def _row(task, bench_set, ours_y, base_y, cbm3d=None):
    ev = lambda y: {"psnr_y": y, "psnr_rgb": y - 2}  # noqa: E731
    row = {"task": task, "set": bench_set, "evals": {"ours_y": ev(ours_y), "ours_rgb": ev(ours_y),
                                                     "baseline_y": ev(base_y), "baseline_rgb": ev(base_y)}}
    if cbm3d is not None:
        row["cbm3d"] = {"psnr_y": cbm3d, "psnr_rgb": cbm3d - 2}
    return row


def test_slope_is_fitted_on_the_first_half_only(budget):
    curve = [(s, 30 + 0.2 * math.log2(s)) for s in (100, 200, 400)] + [(800, 0.0), (1000, 0.0)]
    assert budget.gain_per_doubling(curve, 1000) == pytest.approx(0.2)
    assert budget.gain_per_doubling(curve[:1], 1000) is None


def test_budget_from_a_curve_of_known_slope(budget, tmp_path):
    _write_run(tmp_path, "sr_x2", 1000, lambda s: 30 + 0.25 * math.log2(s))
    _write_run(tmp_path, "denoise_30", 800, lambda s: 29.0 + 0.1 * math.log2(s), samples_per_s=4.0)
    results = {"rows": [_row("sr_x2", "Set5", 35.0, 33.7), _row("sr_x2", "Set14", 31.5, 30.2),
                        _row("denoise_30", "CBSD68", 31.0, 23.7, cbm3d=30.96)]}
    entries = {(e["task"], e["set"], e["metric"]): e for e in budget.estimate(tmp_path, results)}
    x2 = entries[("sr_x2", "Set5", "y")]
    assert x2["short_db"] == pytest.approx(1.0) and not x2["met"]
    assert x2["doublings"] == pytest.approx(4.0)            # 1 dB at 0.25 dB per doubling
    assert x2["steps_needed"] == pytest.approx(16000)
    assert x2["hours_needed"] == pytest.approx(16000 * 1.0 / 3600)   # batch 8 at 8 samples/s
    assert entries[("sr_x2", "Set14", "y")]["met"]          # +1.3 over bicubic
    assert entries[("denoise_30", "CBSD68", "y")]["met"]     # 31.0 >= CBM3D 30.96
    assert entries[("denoise_30", "CBSD68", "rgb")]["met"]
    # tasks without a stage of their own in the run are left out, not guessed
    assert not any(t == "derain" for t, _, _ in entries)
    table = budget.markdown(list(entries.values()))
    assert "16,000 (x16)" in table and "| met |" in table


def test_cli_refuses_a_missing_results_file(budget, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        budget.main(["--run_dir", str(tmp_path), "--results", str(tmp_path / "none.json")])
