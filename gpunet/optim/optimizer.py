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

    def step(self) -> None:
        self.step_count += 1
        compiled = self._compiled_update()
        if compiled is not None:
            self.update_all(compiled)
            return
        for i, param in enumerate(self.params):
            self.update(i, param)

    # The CPU updates every tensor in one compiled call (``gpunet.cpu_kernels``) where it can: all parameters on
    # one device, of one dtype. Subclasses name the op and implement update_all.
    compiled_op: str | None = None

    def _compiled_update(self):
        if self.compiled_op is None:
            return None
        device, dtype = self.params[0].device, self.params[0].data.dtype
        if any(p.device != device or p.data.dtype != dtype for p in self.params):
            return None
        return device.compiled_block(self.compiled_op, dtype)

    def update_all(self, compiled) -> None:
        raise NotImplementedError

    def update(self, index: int, param) -> None:
        raise NotImplementedError

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
