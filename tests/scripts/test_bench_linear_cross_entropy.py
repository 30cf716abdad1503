"""The bench's linear cross-entropy section keeps working: its worker on a tiny problem (gpunet's side: CI has no
PyTorch), the medians and the goals of its table, and the section run as a whole."""
import argparse
import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "linear_cross_entropy.py"


@pytest.fixture(scope="module")
def section():
    spec = importlib.util.spec_from_file_location("bench_linear_cross_entropy", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_worker_measures_a_step(section):
    result = section.worker("gpunet", (64, 8, 300), repeats=2)
    assert result["framework"] == "gpunet" and len(result["seconds"]) == 2 and min(result["seconds"]) > 0
    assert result["extra_bytes"] >= 0 and result["baseline_bytes"] > 0 and result["loss"] > 0
    assert result["blas"] in ("numpy", "mkl")


def run(seconds, extra, loss=5.0):
    return {"seconds": seconds, "first_step_s": 9.0, "extra_bytes": extra, "loss": loss}


def test_the_table_takes_medians_and_judges_the_goals(section, capsys):
    ours = section.summary([run([1.0, 3.0], 10), run([2.0, 2.0], 30), run([9.0], 20)])
    theirs = section.summary([run([2.5], 400), run([2.5], 600), run([2.5], 500)])
    assert ours["seconds"] == 2.0 and ours["extra_bytes"] == 20 and theirs["extra_bytes"] == 500
    result = section.report((4, 2, 8), ours, theirs)
    assert result["speed_ratio"] == 1.25 and result["memory_ratio"] == 20 / 500
    assert result["goals"] == {"speed": True, "memory": True}
    printed = capsys.readouterr().out
    assert "1.25x (goal >= 1.0x: met)" in printed and "1/25.0 (goal <= 1/20: met)" in printed
    slow = section.report((4, 2, 8), section.summary([run([3.0], 100)]), theirs)
    assert slow["goals"] == {"speed": False, "memory": False}
    assert section.summary([run([1.0], 1), None]) is None  # a failed process fails the figure, not the bench
    rounds = {"gpunet": [run([1.0, 3.0], 1), None, run([2.0], 1)], "torch": [run([4.0], 1), run([1.0], 1),
                                                                            run([3.0], 1)]}
    assert section.round_ratios(rounds) == [2.0, 1.5]  # round by round; a failed process drops its round


def test_the_section_runs_alone(section, capsys):
    parser = argparse.ArgumentParser()
    section.add_arguments(parser)
    args = parser.parse_args(["--lce-shape", "64,8,300", "--lce-rounds", "1", "--lce-repeats", "1"])
    result = section.run(args)
    assert result["shape"] == [64, 8, 300] and result["gpunet"]["seconds"] > 0
    assert "linear cross-entropy, (N, d, V) = (64, 8, 300)" in capsys.readouterr().out
