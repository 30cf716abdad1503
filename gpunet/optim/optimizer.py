"""The optimizer base: a list of Parameters, per-parameter state buffers, a portable state dict."""
from __future__ import annotations


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

    # Each subclass declares its update once (an Op of kind "update", gpunet.devices.op) and what it passes.
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
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])
        self.state = [{} for _ in self.params]
        for key, value in state.items():
            if not key.startswith("state."):
                continue
            _, index, name = key.split(".", 2)
            index = int(index)
            if index >= len(self.params) or tuple(value.shape) != self.params[index].shape:
                raise ValueError(f"optimizer state {key!r} of shape {tuple(value.shape)} does not fit the model")
            self.state[index][name] = self.params[index].device.asarray(value, dtype=self.params[index].data.dtype)
