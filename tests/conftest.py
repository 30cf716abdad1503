"""Shared fixtures, for every test folder. Device lists, the `gpu` marker and tolerances: tests/helpers.py."""
from __future__ import annotations

import os

import numpy as np
import pytest

import gpunet

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
    """Tests run with the CPU as default device unless they set another."""
    monkeypatch.setenv("GPUNET_DEVICE", "cpu")
    gpunet.devices._reset_for_tests()
    yield
    gpunet.devices._reset_for_tests()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI`` set) only ``gpu``-marked tests may skip: a skip anywhere else means something the suite needs
    (a compiler, a header, a built library) is missing, which must fail the run, not thin it out silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and "gpu" not in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where only gpu-marked tests may skip: {report.longrepr}"
