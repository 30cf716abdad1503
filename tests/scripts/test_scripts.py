"""The scripts a person runs keep working: bench (gpunet side, tiny shapes), parity and kernel reports."""
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_module(name):
    """A module of the bench package (scripts/bench/), imported as ``bench.<name>``, as its entry point does."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(f"bench.{name}")


def test_bench_row_worker_and_table(capsys):
    bench = bench_module("row_ops")
    rows = bench.measure("gpunet", "cpu", [(64, 10), (8, 2000)], 2)
    assert {r["op"] for r in rows} == set(bench.MIN_BYTES) and all(r["seconds"] > 0 for r in rows)
    assert all(r["out_seconds"] > 0 for r in rows)  # every gpunet row op has an out= form
    without_out = [dict(r, out_seconds=None) if r["op"] == "softmax fwd" else r for r in rows]
    results = {"row_ops": []}
    bench.print_row_ops("cpu", rows, {"same": rows, "other": without_out}, results["row_ops"])
    table = results["row_ops"]
    assert all(r["gpunet_over_same"] == 1.0 and r["gpunet_out_over_same_out"] == 1.0 for r in table)
    assert all(r["fraction_of_new_copy"] == r["gpunet_gbs"] / r["new_copy_gbs"] > 0 for r in table)
    assert all(r["fraction_of_copy"] == r["gpunet_out_gbs"] / r["copy_gbs"] > 0 for r in table)
    assert [r["gpunet_out_over_other_out"] is None for r in table] == [r["op"] == "softmax fwd" for r in table]
    printed = capsys.readouterr().out
    assert "softmax fwd" in printed and "--- out ---" in printed


def test_bench_training_table_takes_medians_of_alternating_rounds(capsys):
    bench, timing = bench_module("training"), bench_module("timing")
    ours = [[{"network": "n", "batch": 8, "samples_s": v}] for v in (100.0, 300.0, 200.0)]
    theirs = [[{"network": "n", "batch": 8, "samples_s": v}] for v in (100.0, 100.0, 400.0)]
    results = {"training": []}
    bench.print_training("cpu", timing.median_runs(ours), timing.median_runs(theirs), results["training"])
    row = results["training"][0]
    assert row["gpunet_samples_s"] == 200.0 and row["torch_samples_s"] == 100.0 and row["gpunet_over_torch"] == 2.0
    assert row["gpunet_over_torch_rounds"] == [1.0, 3.0, 0.5]
    assert "rounds: 1.00x 3.00x 0.50x" in capsys.readouterr().out
    assert timing.median_runs([ours[0], None]) is None  # a failed round fails the figure, not the bench


def test_bench_products_bound_is_batch_over_median_product_time(capsys):
    bench, timing = bench_module("training"), bench_module("timing")
    ours = [[{"network": "n", "batch": 8, "samples_s": 100.0, "products_s": p, "products_update_s": p * 2}]
            for p in (0.02, 0.04, 0.08)]
    theirs = [[{"network": "n", "batch": 8, "samples_s": 50.0}] for _ in range(3)]
    results = {"training": []}
    bench.print_training("cpu", timing.median_runs(ours), timing.median_runs(theirs), results["training"])
    row = results["training"][0]
    assert row["products_bound_samples_s"] == 200.0  # 8 samples in the median 0.04 s
    assert row["gpunet_over_bound"] == 0.5 and row["bound_over_torch"] == 4.0
    assert row["update_bound_samples_s"] == 100.0  # with the update: 8 samples in 0.08 s
    assert row["gpunet_over_update_bound"] == 1.0 and row["update_bound_over_torch"] == 2.0
    printed = capsys.readouterr().out
    assert " 50% " in printed and " 100% " in printed and "+update" in printed
    del ours[0][0]["products_update_s"]  # a round without the figure: dashes, not a crash
    bench.print_training("cpu", timing.median_runs(ours), timing.median_runs(theirs), [])


def test_bench_update_bound_runs_the_products_then_the_update():
    """The '+update' step: the step's products, then one SGD update of the network's parameters."""
    import gpunet
    bench = bench_module("products")
    dev = gpunet.device("cpu")
    calls = []
    original = dev.run
    try:
        dev.run = lambda op, *a, **k: (calls.append(op.name), original(op, *a, **k))[1]
        bench.products_and_update(dev, [6, 5, 3], 4)()
    finally:
        del dev.run
    assert calls == ["sgd_update"]


def test_bench_matrix_products_are_those_of_a_training_step():
    """Forward and weight gradient for every layer, input gradient for all but the first, in backprop order."""
    bench = bench_module("products")
    calls = []

    class RecordingDevice:
        xp = np
        asarray = staticmethod(np.asarray)

        @staticmethod
        def matmul(a, b, out):
            calls.append((a.shape, b.shape))
            np.matmul(a, b, out=out)
            assert np.all(np.isfinite(out)) and np.any(out != 0)
    bench.matrix_products(RecordingDevice, [5, 4, 3], batch=2)()
    assert calls == [((2, 5), (5, 4)), ((2, 4), (4, 3)),     # forward
                     ((4, 2), (2, 3)), ((2, 3), (3, 4)),     # last layer: dW, dx
                     ((5, 2), (2, 4))]                       # first layer: dW only


def test_bench_prints_the_machine_it_ran_on(capsys):
    bench = bench_module("report")
    machine = bench.machine_header(" (test)")
    out = capsys.readouterr().out
    assert machine["cpu_model"] in out and f"ISA: {' '.join(machine['isa_flags'])}" in out
    assert "BLAS: NumPy's " in out and machine["numpy_blas"] in out and "GPUNET_BLAS=numpy" in out


def test_compare_cpu_kernels_against_this_commit_prints_a_ratio_per_op_and_width():
    done = subprocess.run([sys.executable, str(SCRIPTS / "compare_cpu_kernels.py"), "--against", "HEAD", "--rounds",
                           "1", "--calls", "1", "--shapes", "8x10,4x100"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[:2] for row in rows] == [["10", "8"], ["100", "4"]]
    assert all(len(row) == 6 and all(float(cell.rstrip("x")) > 0 for cell in row[2:]) for row in rows)


def test_parity_report_runs_and_reports_small_errors():
    done = subprocess.run([sys.executable, str(SCRIPTS / "parity_report.py"), "--dtypes", "float64"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    errors = [float(line.split()[-3]) for line in done.stdout.splitlines() if line.startswith("cpu-sim")]
    assert len(errors) == 10 and max(errors) < 1e-12


def test_kernel_report_shows_no_spills():
    pytest.importorskip("nvidia")
    done = subprocess.run([sys.executable, str(SCRIPTS / "kernel_report.py"), "--arch", "sm_80", "--dtype",
                           "float32"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "no register spills" in done.stdout, done.stdout + done.stderr


def test_bench_row_rounds_take_medians():
    bench = bench_module("timing")
    runs = [[{"op": "softmax fwd", "shape": [2, 3], "seconds": s, "out_seconds": o, "copy_seconds": c,
              "new_copy_seconds": n, "bytes": 48}]
            for s, o, c, n in ((1.0, 3.0, 4.0, 7.0), (3.0, 1.0, 2.0, 5.0), (2.0, 8.0, 9.0, 6.0))]
    assert bench.median_rows(runs) == [{"op": "softmax fwd", "shape": [2, 3], "seconds": 2.0, "out_seconds": 3.0,
                                        "copy_seconds": 4.0, "new_copy_seconds": 6.0, "bytes": 48}]
    runs[1][0]["out_seconds"] = None  # a framework without an out form in some round: none
    assert bench.median_rows(runs)[0]["out_seconds"] is None
    assert bench.median_rows(runs + [None]) is None


def test_bench_nproc_mode_prints_the_data_parallel_table(tmp_path):
    """--nproc 2 with a few steps: one process and two MPI ranks, the table's columns and a JSON row per batch."""
    pytest.importorskip("mpi4py", reason="pip install 'gpunet[mpi]'")
    out = tmp_path / "dp.json"
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench"), "--nproc", "2", "--rounds", "1", "--steps", "1",
                           "--warmup", "1", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for column in ("1 process samples/s", "2 ranks samples/s", "ratio", "allreduce ms/step", "share of step"):
        assert column in done.stdout, done.stdout
    import json
    results = json.loads(out.read_text())
    assert "row_ops" not in results and "training" not in results  # --nproc benches data parallelism alone
    rows = results["distributed"]
    assert [r["batch"] for r in rows] == [128, 1024] and all(r["ranks"] == 2 for r in rows)
    assert all(r["ratio"] == r["ranks_samples_s"] / r["single_samples_s"] and 0 < r["allreduce_share"] < 1
               for r in rows)
    assert rows[0]["allreduce_bytes"] == ((784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10) + 1) * 4


def test_bench_judges_the_cpu_goals_from_its_rows(capsys):
    bench = bench_module("goals")

    def train(batch, ratio, bound=0.95, bound_over=1.2, update_over=1.5):
        return {"device": "cpu", "network": "n", "batch": batch, "gpunet_over_torch": ratio,
                "gpunet_over_bound": bound, "bound_over_torch": bound_over, "update_bound_over_torch": update_over}

    def row(op, cols, new, out, fraction):
        return {"device": "cpu", "op": op, "shape": [10, cols], "gpunet_over_torch": new,
                "gpunet_out_over_torch_out": out, "fraction_of_copy": fraction}
    results = {"training": [train(128, 1.2, update_over=1.25), train(1024, 1.05, bound=0.899), train(64, 1.4)],
               "row_ops": [row("softmax bwd", 10, 0.5, 0.5, 0.1),  # C = 10: no goal
                           row("softmax bwd", 100, 1.1, 0.93, 0.5),  # C = 100: ratios only
                           row("softmax fwd", 1000, 1.5, 1.2, 0.81),
                           row("cross_entropy f+b", 1000, 2.0, None, 0.79)]}
    goals = {goal: (measured, met) for goal, measured, met in bench.cpu_goals(results)}
    assert goals[">= 1.0x PyTorch, every network"][1] is True
    measured, met = goals[">= 1.3x PyTorch, small batches"]
    assert met is False and "n b128 1.20x (its products and update alone: 1.25x)" in measured
    assert "n b64 1.40x" in measured and "alone" not in measured.split("n b64")[1]
    assert goals[">= 90% of the products bound, batch 1024"] == ("n b1024 89.9%", False)
    assert goals[">= 1.0x PyTorch, row ops at C >= 100"] == ("lowest: softmax bwd C=100 out= 0.93x", False)
    assert goals[">= 80% of the copy, row ops at C >= 1000 (out=)"] == ("lowest: cross_entropy f+b C=1000 79%",
                                                                         False)
    results["row_ops"][1]["gpunet_out_over_torch_out"] = 1.01
    results["row_ops"][3]["fraction_of_copy"] = 0.85
    printed = {"training": [], "row_ops": results["row_ops"]}
    bench.print_goals(bench.cpu_goals(results), printed)
    assert [g["met"] for g in printed["goals"]][-2:] == [True, True]
    assert "(d) the CPU goals" in capsys.readouterr().out
    assert bench.cpu_goals({"training": [], "row_ops": []}) == []  # nothing run, nothing judged


def test_bench_rounds_alternate_the_order_of_the_contenders():
    timing = bench_module("timing")
    calls = []
    runs = timing.alternating_rounds(3, ["a", "b", "c"], lambda c: calls.append(c) or f"{c}{len(calls)}")
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert runs == {"a": ["a1", "a6", "a7"], "b": ["b2", "b5", "b8"], "c": ["c3", "c4", "c9"]}
    joined = timing.joined_rounds([[[1], [2], None], [[3], [4], [5]]])  # two networks' rounds, one failed
    assert joined == [[1, 3], [2, 4], None]


def test_bench_sections_keep_the_interface_and_scripts_stay_short():
    """Every registered section has what the core calls (scripts/bench/__init__.py), under a name of its own;
    no script is over 400 lines."""
    bench = bench_module("cli")
    sections = importlib.import_module("bench").SECTIONS
    assert len({s.NAME for s in sections}) == len(sections)
    for section in sections:
        assert callable(section.add_arguments) and callable(section.wanted) and callable(section.run), section
    args = bench.parser().parse_args(["--nproc", "2"])
    assert [s.NAME for s in sections if s.wanted(args)] == ["row_ops", "training", "distributed", "goals"]
    assert [s.NAME for s in sections if getattr(s, "ALONE", False)] == ["distributed", "linear_cross_entropy"]
    lce = bench.parser().parse_args(["--lce"])
    assert [s.NAME for s in sections if s.wanted(lce)] == ["row_ops", "training", "linear_cross_entropy", "goals"]
    long = [(p.name, n) for p in SCRIPTS.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long


def test_bench_step_reads_nothing_back_on_a_kernel_device():
    """The timed gpunet step does not check labels in the loss (on a GPU the check reads the kernel's flag back,
    a host sync per step): on the simulator a bad label is not raised by the step, while the loss that checks
    raises; the labels are checked once up front instead. The step launches kernels the counter sees."""
    import gpunet
    from gpunet import nn

    training, step = bench_module("training"), bench_module("step")
    sim = gpunet.device("sim")
    x = sim.asarray(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    bad = sim.asarray(np.array([0, 1, 7, 2]))  # 7 is out of range for 3 classes
    train = training.gpunet_trainer(sim, [6, 5, 3], "relu")
    launches = bench_module("step_counts").count_gpunet_launches(sim, lambda: train(x, bad))
    assert launches > 0
    with pytest.raises(ValueError, match="out of range"):
        nn.SoftmaxCrossEntropy(device=sim).forward(x[:, :3], bad)
    with pytest.raises(ValueError, match="label 7 of sample 2 is out of range"):
        step.require_labels(np.array([0, 1, 7, 2]), 3)
    assert bench_module("step_counts").count_gpunet_launches(gpunet.device("cpu"), lambda: None) is None


def test_stop_check_cost_prints_the_three_modes():
    """A round of two steps on two ranks: the script runs and prints each mode's figure."""
    pytest.importorskip("mpi4py", reason="pip install 'gpunet[mpi]'")
    from gpunet.distributed.launch import mpiexec

    done = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", str(SCRIPTS / "stop_check_cost.py"),
                           "--rounds", "1", "--steps", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" over ")[0] for line in lines] == ["median", "min"], done.stdout
    for mode in ("none", "non-blocking check", "blocking check"):
        assert all(f"{mode} " in line and " us a step (" in line for line in lines), done.stdout
