"""The host BLAS: oneMKL's checked binding, and the choice of one BLAS per process by measurement
(gpunet.devices.mkl, gpunet.devices.blas)."""
import json
import logging
import subprocess

import numpy as np
import pytest

import gpunet
from gpunet.devices import blas as blas_module
from gpunet.devices.blas import HostBlas, best, product_key
from gpunet.devices.mkl import MklUnavailable, load
from tests.helpers import tolerance, train_small_mlp


@pytest.fixture
def mkl():
    try:
        return load(2)
    except MklUnavailable as exc:  # in CI a failure (conftest): the test extra installs the mkl wheel
        pytest.skip(str(exc))


def operand(rng, shape, layout, dtype):
    """A (rows, cols) operand stored as given ("n") or as the transposed view of a row-major array ("t")."""
    if layout == "n":
        return rng.standard_normal(shape).astype(dtype)
    return rng.standard_normal(shape[::-1]).astype(dtype).T


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layouts", ["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (3, 5, 7), (128, 784, 33), (64, 10, 100)])
def test_mkl_products_equal_numpy_in_every_layout(mkl, rng, dtype, layouts, m, k, n):
    a = operand(rng, (m, k), layouts[0], dtype)
    b = operand(rng, (k, n), layouts[1], dtype)
    assert mkl.supports(a, b)
    out = np.full((m, n), np.nan, dtype=dtype)
    assert mkl.gemm(a, b, out) is out
    # Each entry against its own scale: the sum of |a_ik b_kj| (the products' rounding is relative to it).
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(out - a.astype(np.float64) @ b.astype(np.float64)) <= 4 * k * eps * scale + 1e-300)
    np.testing.assert_array_equal(mkl.gemm(a, b), out)  # a new array when no out is given


def test_mkl_refuses_what_cblas_cannot_read(mkl):
    a, b = np.ones((4, 6), np.float32), np.ones((6, 5), np.float32)
    strided = np.ones((4, 12), np.float32)[:, ::2]
    for x, y in [(a.astype(np.float16), b.astype(np.float16)), (a.astype(np.int32), b.astype(np.int32)),
                 (a, b.astype(np.float64)), (strided, b), (a, b.astype(">f4")), (a[:0], b), (a.ravel(), b)]:
        assert not mkl.supports(x, y)
        with pytest.raises(TypeError, match="MKL gemm takes"):
            mkl.gemm(x, y)
    with pytest.raises(ValueError, match="do not chain"):
        mkl.gemm(a, a)
    readonly = np.empty((4, 5), np.float32)
    readonly.flags.writeable = False
    for out in [np.empty((4, 4), np.float32), np.empty((4, 5), np.float64), np.empty((5, 4), np.float32).T,
                readonly, [[0.0] * 5] * 4]:
        with pytest.raises(ValueError, match="writes a C-contiguous"):
            mkl.gemm(a, b, out)
    square = np.ones((6, 6), np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        mkl.gemm(square, square, square)


def test_a_planted_transpose_mixup_fails_the_layout_test(mkl, rng, monkeypatch):
    """Mutation: a binding that passed every operand as stored row-major (no transpose flag) must fail the
    layout test above, else that test proves nothing about the flags."""
    from gpunet.devices import mkl as mkl_module
    monkeypatch.setattr(mkl_module, "_layout", lambda m: (mkl_module.NO_TRANS, m.shape[1]))
    with pytest.raises(AssertionError):
        test_mkl_products_equal_numpy_in_every_layout(mkl, rng, "float64", "tn", 5, 5, 5)


@pytest.fixture
def host_blas(tmp_path, monkeypatch):
    """A HostBlas of its own over an empty cache folder, choosing by measurement."""
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path))
    monkeypatch.setenv("GPUNET_BLAS", "auto")
    return HostBlas(2)


def test_the_setting_picks_the_blas(host_blas, mkl, monkeypatch):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    for setting, expected in [("numpy", "numpy"), ("mkl", "mkl"), ("MKL", "mkl")]:
        monkeypatch.setenv("GPUNET_BLAS", setting)
        assert host_blas.choose(a, b) == expected
    assert host_blas.choose(a.astype(np.float16), b.astype(np.float16)) == "numpy"  # what cblas does not take
    monkeypatch.setenv("GPUNET_BLAS", "openblas")
    with pytest.raises(ValueError, match="GPUNET_BLAS='openblas': must be one of auto, numpy, mkl"):
        host_blas.choose(a, b)


def test_mkl_wanted_but_missing_is_an_error_and_auto_uses_numpy(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path))

    def missing(threads):
        raise MklUnavailable("oneMKL not found (pip install gpunet[mkl])")
    monkeypatch.setattr(blas_module, "load_mkl", missing)
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    monkeypatch.setenv("GPUNET_BLAS", "mkl")
    with pytest.raises(RuntimeError, match=r"GPUNET_BLAS=mkl: oneMKL not found \(pip install gpunet\[mkl\]\)"):
        HostBlas(2).choose(a, b)
    monkeypatch.setenv("GPUNET_BLAS", "auto")
    blas = HostBlas(2)
    assert blas.choose(a, b) == "numpy"
    assert blas.summary()["mkl_error"].startswith("oneMKL not found")


def test_auto_times_the_first_steps_products_in_processes_of_their_own_and_saves_them(host_blas, mkl,
                                                                                       monkeypatch):
    """Nothing is timed during the first step; at the second, each candidate times the first step's products in
    processes of its own, NumPy's BLAS, oneMKL, oneMKL, NumPy's BLAS; the timings are saved and a second process
    (here: a second HostBlas) reads them instead of timing again."""
    calls = []
    real = blas_module.blas_timing.in_child
    monkeypatch.setattr(blas_module.blas_timing, "in_child",
                        lambda name, keys, *rest: calls.append((name, list(keys))) or real(name, keys, *rest))
    a, b = np.ones((8, 16), np.float32), np.ones((16, 4), np.float32)
    host_blas.matmul(a, b)
    host_blas.matmul(b.T, a.T)
    assert calls == [] and not host_blas.frozen
    for _ in range(2):
        np.testing.assert_array_equal(host_blas.matmul(a, b), a @ b)
        host_blas.matmul(b.T, a.T)
    keys = ["float32 8x16x4 nn", "float32 4x16x8 tt"]
    assert calls == [(name, keys) for name in ("numpy", "mkl", "mkl", "numpy")] and host_blas.frozen
    saved = json.loads(host_blas.cache_file.read_text())
    assert set(saved) == set(keys)
    assert all(set(t) == {"numpy", "mkl"} and min(t.values()) > 0 for t in saved.values())
    again = HostBlas(2)
    monkeypatch.setattr(blas_module.blas_timing, "in_child", lambda *args: pytest.fail("timed a saved shape"))
    for _ in range(2):
        again.matmul(a, b)
    assert again.seen == {"float32 8x16x4 nn": None} and again.frozen


def test_a_failing_timing_process_means_timing_here_with_one_warning(host_blas, mkl, monkeypatch, caplog):
    def broken(name, keys, *rest):
        raise RuntimeError(f"the {name} timing process failed (exit 1)")
    monkeypatch.setattr(blas_module.blas_timing, "in_child", broken)
    a = np.ones((8, 8), np.float32)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        host_blas.matmul(a, a)
        host_blas.matmul(a, a)
    assert set(host_blas.timings["float32 8x8x8 nn"]) == {"numpy", "mkl"}
    assert sum("timing the BLASes in this process instead" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("key", ["float32 5x7x3 nn", "float64 4x6x2 tn", "float32 3x9x5 nt", "float32 2x3x4 tt"])
def test_the_timing_process_multiplies_the_operands_its_key_names(key):
    a, b = blas_module.blas_timing.operands(key, np.random.default_rng(0))
    assert product_key(a, b) == key


def test_the_timing_process_answers_each_products_time(mkl):
    keys = ["float32 16x32x8 nn", "float32 8x16x32 tn"]
    for name in ("numpy", "mkl"):
        timings = blas_module.blas_timing.in_child(name, keys, 2, mkl.path, 0.01)
        assert set(timings) == set(keys) and all(0 < t < 1 for t in timings.values())
    with pytest.raises(RuntimeError, match="mkl timing process failed"):
        blas_module.blas_timing.in_child("mkl", keys, 2, "/no/such/libmkl_rt.so", 0.01)


def test_time_products_runs_the_products_in_the_step_order():
    order = []
    keys = ["float32 2x3x4 nn", "float32 4x3x2 tn", "float32 2x4x3 nt"]
    timings = blas_module.blas_timing.time_products(lambda a, b, out: order.append(product_key(a, b)), keys, 0.0)
    assert order == keys * 2 and set(timings) == set(keys)  # an untimed pass, then one timed pass


def test_one_blas_for_the_process_the_least_total_over_the_shapes_seen(host_blas, mkl):
    """The choice follows the total over the shapes seen so far, in the order seen: mixing the two BLASes by
    shape would leave each one's threads spinning against the other's."""
    host_blas._refresh()
    fast_mkl = {"numpy": 2e-3, "mkl": 1e-3}
    slow_mkl = {"numpy": 1e-4, "mkl": 9e-3}
    host_blas.timings.update({"float32 4x4x4 nn": fast_mkl, "float32 8x8x8 nn": slow_mkl})
    a4, a8 = np.ones((4, 4), np.float32), np.ones((8, 8), np.float32)
    assert host_blas.choose(a4, a4) == "mkl"
    assert host_blas.choose(a8, a8) == "numpy"  # the total is now 2.1 ms against 10 ms
    assert host_blas.choose(a4, a4) == "numpy"  # for every shape: one BLAS per process
    assert host_blas.summary()["current"] == "numpy"


def test_best_keeps_numpy_unless_mkl_wins_by_the_margin():
    assert best([]) == "numpy"
    assert best([{"numpy": 1.0, "mkl": 0.96}]) == "numpy"  # within the 5% switch margin: noise
    assert best([{"numpy": 1.0, "mkl": 0.9}]) == "mkl"
    assert best([{"numpy": 1.0, "mkl": 0.9}, {"numpy": 0.1, "mkl": 0.3}]) == "numpy"


def test_a_corrupt_or_foreign_cache_file_is_ignored(host_blas, mkl):
    host_blas._refresh()
    host_blas.cache_file.write_text('{"float32 4x4x4 nn": {"numpy": -1, "mkl": 1}, "x": 3, "y": {"numpy": 1}}')
    fresh = HostBlas(2)
    fresh._refresh()
    assert fresh.timings == {}
    host_blas.cache_file.write_text("not json")
    fresh = HostBlas(2)
    fresh._refresh()
    assert fresh.timings == {}


def test_the_cache_is_per_thread_count(host_blas, mkl):
    assert HostBlas(1).fingerprint() != host_blas.fingerprint()


def test_training_on_mkl_matches_training_on_numpy(mkl, monkeypatch):
    """Five steps of a small MLP: the two BLASes sum in other orders, so the weights agree as two devices' do
    (the "training_run" tolerance: rtol of each weight, and an atol of a hundredth of it for weights near 0)."""
    monkeypatch.setenv("GPUNET_BLAS", "numpy")
    _, on_numpy = train_small_mlp(gpunet.device("cpu"), [20, 32, 5], steps=5, batch=64)
    monkeypatch.setenv("GPUNET_BLAS", "mkl")
    _, on_mkl = train_small_mlp(gpunet.device("cpu"), [20, 32, 5], steps=5, batch=64)
    rtol, atol = tolerance("training_run", np.float32)
    for name, value in on_numpy.items():
        np.testing.assert_allclose(on_mkl[name], value, rtol=rtol, atol=atol, err_msg=name)
    assert any(not np.array_equal(on_mkl[n], on_numpy[n]) for n in on_numpy)  # oneMKL did run


def test_no_cache_folder_means_measuring_in_this_process_with_one_warning(mkl, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("GPUNET_CACHE", str(blocker / "cache"))  # under a file: no folder can be made there
    monkeypatch.setenv("GPUNET_BLAS", "auto")
    blas = HostBlas(2)
    a, b = np.ones((8, 16), np.float32), np.ones((16, 4), np.float32)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        for _ in range(2):  # two steps: the second times the first's products
            np.testing.assert_array_equal(blas.matmul(a, b), a @ b)
            np.testing.assert_array_equal(blas.matmul(b.T, a.T), b.T @ a.T)
    assert blas.cache_file is None and len(blas.timings) == 2
    assert sum("no folder for the BLAS timings" in r.message for r in caplog.records) == 1


def test_numpy_setting_never_loads_mkl(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNET_BLAS", "numpy")
    monkeypatch.setattr(blas_module, "load_mkl", lambda threads: pytest.fail("oneMKL loaded under numpy"))
    blas = HostBlas(2)
    a = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(blas.matmul(a, a.T), a @ a.T)
    assert blas.choice() == ("numpy", "numpy")  # what metrics.json records
    assert blas._mkl is None and blas.cache_file is None


def test_a_broken_mkl_is_reported_not_fatal(mkl, tmp_path, monkeypatch):
    """libmkl_rt without the libraries it loads makes oneMKL end the process that calls it: the library is tried
    in a test process first, and the user's process goes on with NumPy's BLAS."""
    import shutil
    broken = tmp_path / "libmkl_rt.so.3"
    shutil.copy(mkl.path, broken)
    monkeypatch.setenv("GPUNET_MKL", str(broken))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    from gpunet.devices import mkl as mkl_module
    monkeypatch.setattr(mkl_module, "load", mkl_module.load.__wrapped__)  # no cached library
    with pytest.raises(MklUnavailable, match="failed in a test process"):
        mkl_module.load(2)


def test_routes_follow_the_layout_and_out_that_mkl_cannot_write_goes_to_numpy(mkl, rng, monkeypatch):
    monkeypatch.setenv("GPUNET_BLAS", "mkl")
    blas = HostBlas(2)
    b = rng.standard_normal((8, 3)).astype(np.float32)
    # A transposed view, then a strided slice of the same shape: the second is not one cblas reads.
    a = rng.standard_normal((8, 6)).astype(np.float32)
    np.testing.assert_allclose(blas.matmul(a.T, b), a.T @ b, rtol=1e-5, atol=1e-6)
    strided = np.ascontiguousarray(np.repeat(a, 2, axis=1))[:, ::2]  # same shape as a, neither C nor F
    np.testing.assert_allclose(blas.matmul(strided.T, b), a.T @ b, rtol=1e-5, atol=1e-6)
    # A float64 product into a float32 out: NumPy casts, cblas cannot.
    x64, w64 = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    out = np.empty((5, 3), np.float32)
    blas.matmul(x64, w64, out=out)
    np.testing.assert_allclose(out, (x64 @ w64).astype(np.float32), rtol=1e-6)


def test_the_choice_is_fixed_once_a_shape_comes_again(host_blas, mkl):
    """The first step's shapes decide; a later shape (a last partial batch, an evaluation) does not change the
    choice, so a run resumed at a later epoch, which sees the first step's shapes first, chooses the same."""
    host_blas._refresh()
    host_blas.timings.update({"float32 4x4x4 nn": {"numpy": 2e-3, "mkl": 1e-3},
                              "float32 8x8x8 nn": {"numpy": 1e-4, "mkl": 9e-3}})
    a4, a8 = np.ones((4, 4), np.float32), np.ones((8, 8), np.float32)
    assert host_blas.choose(a4, a4) == "mkl"
    assert host_blas.choose(a4, a4) == "mkl" and host_blas.frozen  # the second step
    assert host_blas.choose(a8, a8) == "mkl"  # would tip the total to numpy, but the choice is made
    assert "float32 8x8x8 nn" not in host_blas.seen


def test_a_slow_product_is_decided_by_one_call_each(host_blas, mkl, monkeypatch):
    monkeypatch.setattr(blas_module, "TRIAL_SECONDS", 0.0)
    host_blas._refresh()
    calls = []
    real = host_blas._run
    monkeypatch.setattr(host_blas, "_run", lambda name, a, b, out: calls.append(name) or real(name, a, b, out))
    a = np.ones((16, 16), np.float32)
    medians = host_blas._measure(a, a)
    assert sorted(calls) == ["mkl", "numpy"] and set(medians) == {"numpy", "mkl"}


def test_info_says_when_mkl_is_wanted_but_missing(monkeypatch, capsys):
    from gpunet import cli
    from gpunet.devices import host

    def missing(threads):
        raise MklUnavailable("oneMKL not found (pip install gpunet[mkl])")
    monkeypatch.setattr(blas_module, "load_mkl", missing)
    monkeypatch.setattr(host, "host_blas", lambda: HostBlas(2))
    monkeypatch.setattr("gpunet.info.host_blas", lambda: HostBlas(2))
    monkeypatch.setenv("GPUNET_BLAS", "mkl")
    assert cli.main(["info"]) == 0
    assert "GPUNET_BLAS=mkl, but oneMKL is not available: every product will raise" in capsys.readouterr().out


def test_what_a_library_prints_in_the_timing_process_does_not_spoil_its_answer(mkl, monkeypatch):
    """oneMKL's MKL_VERBOSE log goes to stdout, where the answer is read: the child sends it to stderr."""
    monkeypatch.setenv("MKL_VERBOSE", "1")
    keys = ["float32 16x32x8 nn"]
    assert set(blas_module.blas_timing.in_child("mkl", keys, 2, mkl.path, 0.01)) == set(keys)


def test_no_timing_process_where_python_cannot_be_started(monkeypatch):
    monkeypatch.setattr(blas_module.blas_timing.sys, "frozen", True, raising=False)
    with pytest.raises(RuntimeError, match="no Python interpreter"):
        blas_module.blas_timing.in_child("numpy", ["float32 2x2x2 nn"], 1, None, 0.01)


def test_measure_keys_reads_the_saved_timings_before_it_times_anything(host_blas, mkl, monkeypatch):
    keys = ["float32 16x32x8 nn", "float32 8x16x32 tn"]
    host_blas.measure_keys(keys)
    assert set(json.loads(host_blas.cache_file.read_text())) == set(keys)
    fresh = HostBlas(2)  # as gpunet info --measure gets it: nothing read yet
    monkeypatch.setattr(blas_module.blas_timing, "in_child", lambda *args: pytest.fail("timed a saved shape"))
    fresh.measure_keys(keys)
    assert set(fresh.timings) == set(keys)


def test_shapes_that_never_repeat_still_end_in_a_choice(host_blas, mkl, monkeypatch):
    """Inference over ever new batch sizes: after MAX_FIRST_STEP_PRODUCTS new shapes the choice is made."""
    monkeypatch.setattr(blas_module, "MAX_FIRST_STEP_PRODUCTS", 3)
    host_blas._refresh()
    for n in (4, 5, 6):
        host_blas.timings[f"float32 {n}x{n}x{n} nn"] = {"numpy": 1e-3, "mkl": 1e-4}
    for n in (4, 5):
        host_blas.choose(np.ones((n, n), np.float32), np.ones((n, n), np.float32))
    assert not host_blas.frozen
    assert host_blas.choose(np.ones((6, 6), np.float32), np.ones((6, 6), np.float32)) == "mkl"
    assert host_blas.frozen and len(host_blas.seen) == 3


GOOD = '{"numpy": 0.001, "mkl": 0.002}'


@pytest.mark.parametrize("bad, why", [
    ("1" + "0" * 400, "an integer of"), ("NaN", "nan"), ("Infinity", "inf"), ("-0.001", "-0.001"), ("0", "0.0"),
    ("1e9", "1000000000.0"), ('"0.001"', "str, not a number"), ("true", "bool, not a number"),
    ("[0.001]", "list, not a number"), ("null", "NoneType, not a number"),
])
def test_a_bad_saved_timing_is_ignored_with_one_log_line(tmp_path, caplog, bad, why):
    """Each candidate's timing must be a number of seconds in (0, 60]: a 400-digit integer made every later
    `gpunet train` end in an OverflowError, summing it as a float."""
    path = tmp_path / "timings.json"
    path.write_text(f'{{"float32 4x4x4 nn": {GOOD}, "float32 8x8x8 nt": {{"numpy": 0.001, "mkl": {bad}}}}}')
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        kept = blas_module._read(path)
    assert kept == {"float32 4x4x4 nn": {"numpy": 0.001, "mkl": 0.002}}
    [said] = [r.message for r in caplog.records]
    assert "ignoring 1 of the 2 BLAS timings" in said and "'float32 8x8x8 nt': mkl: " in said and why in said
    assert best(kept.values()) == "numpy"
    assert blas_module._read(path, say=False) == kept and len(caplog.records) == 1


def test_a_bad_saved_timing_is_measured_again_not_fatal(host_blas, mkl, monkeypatch):
    """The saved timings of a step's products, one of them a 400-digit integer: the step runs, that product is
    timed again, and the file is rewritten with a sane value."""
    host_blas._refresh()
    keys = ["float32 8x16x4 nn", "float32 4x16x8 tt"]
    host_blas.cache_file.write_text(json.dumps({keys[0]: {"numpy": 0.001, "mkl": 0.002}})[:-1]
                                    + f', "{keys[1]}": {{"numpy": 0.001, "mkl": 1{"0" * 400}}}}}')
    blas = HostBlas(2)
    a, b = np.ones((8, 16), np.float32), np.ones((16, 4), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(blas.matmul(a, b), a @ b)
        np.testing.assert_array_equal(blas.matmul(b.T, a.T), b.T @ a.T)
    saved = json.loads(host_blas.cache_file.read_text())
    assert set(saved) == set(keys) and saved[keys[0]] == {"numpy": 0.001, "mkl": 0.002}
    assert all(blas_module.blas_timing.timing_problem(t) is None for t in saved[keys[1]].values())


@pytest.mark.parametrize("answer", ['{"float32 2x2x2 nn": Infinity}', '{"float32 2x2x2 nn": 1e300}',
                                    '{"float32 2x2x2 nn": true}', '{"float32 2x2x2 nn": 0.0}'])
def test_a_timing_process_answering_no_timing_is_refused(monkeypatch, answer):
    """What a timing process answers is checked as the saved timings are: it would be saved and chosen by."""
    monkeypatch.setattr(blas_module.blas_timing.subprocess, "run",
                        lambda *args, **kwargs: subprocess.CompletedProcess(args, 0, answer, ""))
    with pytest.raises(RuntimeError, match="timing process answered"):
        blas_module.blas_timing.in_child("numpy", ["float32 2x2x2 nn"], 1, None, 0.01)
