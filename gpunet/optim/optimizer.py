"""The optimizer base: a list of Parameters, per-parameter state buffers, a portable state dict."""
from __future__ import annotations

import math
import numbers

from ..numerics import finite_floats


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = float(lr)
        self.step_count = 0
        self.state: list[dict] = [{} for _ in self.params]

    def buffer(self, index: int, name: str):
        """The state array ``name`` of parameter ``index``, created as zeros on first use."""
        slot = self.state[index]
        if name not in slot:
            slot[name] = self.params[index].device.xp.zeros_like(self.params[index].data)
        return slot[name]

    # Each subclass declares its update once (a ``gpunet.kinds.UpdateOp``) and what it passes.
    update_op = None

    def state_lists(self, indices) -> list:
        """The state buffers the update takes, one list per buffer name (or None), for the parameters ``indices``."""
        raise NotImplementedError

    def hyperparameters(self) -> tuple:
        """The update's scalar arguments at this step, in the kernels' order."""
        raise NotImplementedError

    def step(self) -> None:
        """One update of every parameter: one ``device.run`` per (device, dtype) group of parameters (the CPU then
        updates every tensor of a group in one compiled call)."""
        self.step_count += 1
        hyper = self.hyperparameters()
        groups: dict = {}
        for i, param in enumerate(self.params):
            groups.setdefault((param.device, param.data.dtype), []).append(i)
        for (device, dtype), indices in groups.items():
            # A gradient of another dtype (a user's own) is used in the parameter's, on every device alike.
            grads = [self.params[i].grad.astype(dtype, copy=False) for i in indices]
            device.run(self.update_op, [self.params[i].data for i in indices], grads, *self.state_lists(indices),
                       hyper=hyper)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad[...] = 0

    def state_dict(self) -> dict:
        """Flat name -> host array/number mapping (``state.<i>.<buffer>``), loadable on any device."""
        out = {"step_count": self.step_count, "lr": self.lr}
        for i, slot in enumerate(self.state):
            for name, buf in slot.items():
                out[f"state.{i}.{name}"] = self.params[i].device.to_numpy(buf).copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned: all or nothing. Everything is checked first (``step_count`` a
        non-negative integer, ``lr`` a finite number >= 0, each ``state.<i>.<buffer>`` a finite floating-point array
        of parameter ``i``'s shape), so a bad entry leaves the optimizer as it was."""
        missing = [key for key in ("step_count", "lr") if key not in state]
        if missing:
            raise ValueError(f"optimizer state lacks {missing}: not the state dict of a gpunet optimizer")
        step_count, lr = state["step_count"], state["lr"]
        if isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral) or step_count < 0:
            raise ValueError(f"optimizer state: step_count must be a non-negative integer, got {step_count!r}")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"optimizer state: lr must be a finite number >= 0, got {lr!r}")
        staged = [{} for _ in self.params]
        for key, value in state.items():
            if not key.startswith("state."):
                continue
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
                raise ValueError(f"optimizer state {key!r}: expected a key like 'state.<index>.<buffer>'")
            index, name = int(parts[1]), parts[2]
            shape = tuple(getattr(value, "shape", ()))
            if index >= len(self.params) or shape != self.params[index].shape:
                raise ValueError(f"optimizer state {key!r} of shape {shape} does not fit the model")
            param = self.params[index]
            staged[index][name] = finite_floats(param.device, value, param.data.dtype, f"optimizer state {key!r}")
        self.step_count, self.lr, self.state = int(step_count), float(lr), staged
