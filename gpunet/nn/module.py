"""Module and Parameter: explicit forward and backward, no autograd.

Each layer caches in ``forward`` what its ``backward`` needs, and ``backward(dy)`` returns ``dx`` while writing
the gradients of its parameters into ``param.grad`` (overwriting, not accumulating: one backward per step).
"""
from __future__ import annotations

import functools

from ..devices import Device, device as as_device, get_default_device
from ..numerics import finite_floats


class Parameter:
    """A trainable array and the gradient buffer ``backward`` fills."""

    def __init__(self, data, dev: Device):
        self.device = dev
        self.data = data
        self.grad = dev.xp.zeros_like(data)

    @property
    def shape(self):
        return tuple(self.data.shape)

    def to(self, dev: Device) -> "Parameter":
        if dev != self.device:
            host = self.device.to_numpy(self.data)
            self.data = dev.asarray(host)
            self.grad = dev.xp.zeros_like(self.data)
            self.device = dev
        return self

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype}, device={self.device.name})"


def _in_device_context(method):
    @functools.wraps(method)
    def in_device_context(self, *args, **kwargs):
        with self.device.context():
            return method(self, *args, **kwargs)
    return in_device_context


class Module:
    # What a layer declares for nn.Sequential to fuse two neighbours into one pass:
    fusable_activations: tuple = ()  # activations its forward applies in its own pass: forward(x, activation=name)
    fused_activation: str | None = None  # the activation it is, where the layer before may apply it (then adopt(y))
    overwrites_gradient: bool = False  # backward(dy, overwrite=True) may write its result over a temporary dy

    def __init_subclass__(cls, **kwargs):
        """Every layer's ``forward`` and ``backward`` run with its device current (``Device.context()``): a GPU
        layer's temporaries and operators then land on its own GPU, whichever GPU the caller had current."""
        super().__init_subclass__(**kwargs)
        for name in ("forward", "backward"):
            if name in cls.__dict__:
                setattr(cls, name, _in_device_context(cls.__dict__[name]))

    def __init__(self, device=None):
        self.device = as_device(device) if device is not None else get_default_device()
        self.training = True
        self._parameters: dict[str, Parameter] = {}
        self._children: dict[str, Module] = {}

    # -- structure -------------------------------------------------------------------------------------------
    def add_parameter(self, name: str, host_array) -> Parameter:
        param = Parameter(self.device.asarray(host_array), self.device)
        self._parameters[name] = param
        return param

    def add_child(self, name: str, module: "Module") -> "Module":
        self._children[name] = module
        return module

    def named_parameters(self, prefix: str = ""):
        for name, param in self._parameters.items():
            yield prefix + name, param
        for child_name, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for child in self._children.values():
            yield from child.modules()

    # -- mode and placement ------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, device) -> "Module":
        dev = as_device(device)
        for module in self.modules():
            module.device = dev
            for param in module._parameters.values():
                param.to(dev)
        return self

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Parameter name -> host NumPy array: portable between devices."""
        return {name: self.device.to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` (name -> array) into the parameters: all or nothing. Every value is checked first (the
        names, each shape, a floating-point dtype, finite once cast to the parameter's dtype), so a bad third
        entry leaves the first two untouched."""
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"state dict does not fit the model: missing {missing}, unexpected {unexpected}")
        staged = []
        for name, param in params.items():
            value = state[name]
            if getattr(value, "dtype", None) is None or getattr(value, "shape", None) is None:
                value = self.device.asarray(value)
            if tuple(value.shape) != param.shape:
                raise ValueError(f"parameter {name!r}: the checkpoint holds shape {tuple(value.shape)}, "
                                 f"the model expects {param.shape}")
            staged.append((param, finite_floats(self.device, value, param.data.dtype,
                                                f"parameter {name!r}: the checkpoint")))
        for param, converted in staged:
            param.data[...] = converted

    # -- computation ---------------------------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def adopt(self, y):
        """Keep ``y``, this layer's output made by the layer before it (``fused_activation``), as its forward's."""
        raise NotImplementedError(f"{type(self).__name__} declares no fused_activation")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._children.items())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"
