"""The bench's linear cross-entropy section keeps working: its worker on a tiny problem (gpunet's side: CI has no
PyTorch), the medians and the goals of its table, and ``python scripts/bench --lce`` as a whole."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def section():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from bench import linear_cross_entropy
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return linear_cross_entropy


def test_the_worker_measures_a_step(section):
    result = section.measure("gpunet", (64, 8, 300), repeats=2)
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


def test_the_section_runs_alone(tmp_path):
    """``--lce`` runs this section and no other, through the bench's own workers, and writes its row."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--lce", "--lce-shape", "64,8,300",
                           "--lce-rounds", "1", "--lce-repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "linear cross-entropy, (N, d, V) = (64, 8, 300)" in done.stdout
    results = json.loads(out.read_text())
    assert set(results) == {"machine", "linear_cross_entropy"}
    (row,) = results["linear_cross_entropy"]
    assert row["shape"] == [64, 8, 300] and row["gpunet"]["seconds"] > 0
