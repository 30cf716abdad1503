"""Shared fixtures, for every test folder. Device lists, the `gpu` marker and tolerances: tests/helpers.py."""
from __future__ import annotations

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
