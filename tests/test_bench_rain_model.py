"""bench/bench_rain_model.py's command line: every `--set` override is applied, none silently dropped."""
import pytest

from tests.conftest import load_script


def test_repeated_set_flags_all_apply():
    bench = load_script("bench/bench_rain_model.py")
    args = bench.build_parser().parse_args(["--set", "length=10,80", "--set", "density=0.00035,0.001",
                                            "near_vertical=0.3"])
    assert bench.parse_overrides(args.set) == {"length": (10, 80), "density": (0.00035, 0.001),
                                               "near_vertical": 0.3}


def test_unknown_override_is_a_one_line_error():
    bench = load_script("bench/bench_rain_model.py")
    with pytest.raises(SystemExit, match="expected NAME=LOW,HIGH"):
        bench.parse_overrides(["lenght=10,80"])
