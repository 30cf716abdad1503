"""Shared fixtures, for every test folder. Device lists, the `gpu` marker and tolerances: tests/helpers.py."""
from __future__ import annotations

import os

import numpy as np
import pytest

import gpunet
from gpunet.devices import simgpu

from tests.helpers import ALL_DEVICES


@pytest.fixture(params=ALL_DEVICES)
def dev(request, _default_device_cpu):
    """The device under test, also made the default: an op given host arrays without ``device=`` runs there
    (the simulator's arrays are NumPy arrays, which would otherwise fall to the CPU default)."""
    device = gpunet.device(request.param)
    gpunet.set_default_device(device)
    return device


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _default_device_cpu(monkeypatch):
    """Tests run with the CPU as default device unless they set another, and NumPy's BLAS unless the run asks for
    another (a measured choice could differ between two processes of one test; tests/devices/test_blas.py
    tests the choice and oneMKL themselves)."""
    monkeypatch.setenv("GPUNET_DEVICE", "cpu")
    monkeypatch.setenv("GPUNET_BLAS", os.environ.get("GPUNET_BLAS") or "numpy")
    gpunet.devices._reset_for_tests()
    yield
    gpunet.devices._reset_for_tests()
    simgpu.Device(0).use()  # a test that trained on simgpu:1 (fit makes a rank's GPU current) leaves GPU 0 current


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI`` set) only ``gpu``-marked tests may skip: a skip anywhere else means something the suite needs
    (a compiler, a header, a built library) is missing, which must fail the run, not thin it out silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and "gpu" not in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where only gpu-marked tests may skip: {report.longrepr}"


# Hypothesis profiles, chosen by $HYPOTHESIS_PROFILE. "ci" (the default): derandomized, so a CI run draws the same
# cases every time, and 1,000 examples per property that takes its count from the profile (tests/ops/test_fuzz.py:
# five families, over 5,000 cases); "deep": ten times the examples, drawn afresh each run, for a manual run
# (HYPOTHESIS_PROFILE=deep pytest tests/ops/test_fuzz.py; a failure prints the @reproduce_failure that replays it).
# Properties that set their own max_examples (tests/ops/test_properties.py) keep them.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=1_000, derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                 HealthCheck.data_too_large])
settings.register_profile("deep", settings.get_profile("ci"), max_examples=10_000, derandomize=False,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
