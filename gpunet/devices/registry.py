"""The device registry: a name maps to a factory, and ``device(spec)`` builds each device once.

Each device module registers itself (``register_device("cpu", CpuDevice)`` at its foot); ``gpunet.devices``
imports the modules, and nothing else names them. A spec is ``name`` or, for a device registered with
``indexed=True``, ``name:N`` (``cuda:1``; ``cuda`` is ``cuda:0``). What a device must provide:
``docs/adding-a-device.md``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from .base import Device


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: Callable
    indexed: bool


_FACTORIES: dict[str, _Entry] = {}
_DEVICES: dict[str, Device] = {}


def register_device(name: str, factory: Callable, *, indexed: bool = False) -> None:
    """Make ``device(name)`` call ``factory()`` once (``factory(index)`` for ``name:index`` where ``indexed``). A
    name is lower case, without ``:``, and registered once."""
    if not name or name != name.strip().lower() or ":" in name:
        raise ValueError(f"a device name is lower case, without spaces or ':', got {name!r}")
    if name in _FACTORIES:
        raise ValueError(f"device {name!r} is already registered")
    _FACTORIES[name] = _Entry(factory, indexed)


def registered_devices() -> tuple[str, ...]:
    """Every registered device name, in registration order."""
    return tuple(_FACTORIES)


def device(spec: "str | Device" = "auto") -> Device:
    """The Device named by ``spec`` (instances are cached, so ``device("cpu") is device("cpu")``)."""
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device spec must be a string or a Device, got {type(spec).__name__}: {spec!r}")
    name, colon, index = spec.strip().lower().partition(":")
    entry = _FACTORIES.get(name)
    if entry is None or (colon and not (entry.indexed and index.isdigit())):
        expected = [form for n, e in _FACTORIES.items() for form in ((n, f"{n}:N") if e.indexed else (n,))]
        raise ValueError(f"unknown device {spec!r}: expected {', '.join(map(repr, expected))}")
    key = f"{name}:{int(index or 0)}" if entry.indexed else name
    if key not in _DEVICES:
        _DEVICES[key] = entry.factory(int(index or 0)) if entry.indexed else entry.factory()
    return _DEVICES[key]


def forget_devices() -> None:
    """Drop every built device (tests that change what a factory finds, e.g. a fake CuPy)."""
    _DEVICES.clear()
