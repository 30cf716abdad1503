"""The functional core: every op takes ``device=None`` (the device the input lives on) and runs on any device.

Each module declares its ops once (a kind of ``gpunet.kinds``) and lists its public functions in ``__all__``, which
this package re-exports: a new op in an existing module needs no line here. Each re-exported op runs with its
device's GPU current (``Device.context()``): CuPy runs array operators and allocations on the current GPU, so an op on
``cuda:1`` called while GPU 0 is current would otherwise mix the two.
"""
import functools
import inspect

from ..devices import device_of, is_cupy_array
from . import (activations as _activations, cross_entropy as _cross_entropy, linear as _linear,
               linear_cross_entropy as _linear_cross_entropy, softmax as _softmax)
from .activations import *  # noqa: F401,F403
from .cross_entropy import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .linear_cross_entropy import *  # noqa: F401,F403
from .softmax import *  # noqa: F401,F403

__all__ = [*_softmax.__all__, *_cross_entropy.__all__, *_activations.__all__, *_linear.__all__,
           *_linear_cross_entropy.__all__]


def _on_its_device(op):
    """``op`` run inside its device's ``context()``: the device named by ``device=``, else the first array's. A
    helper without ``device=`` (``block_rows_for``) enters a context only when its first argument is a GPU array."""
    names = list(inspect.signature(op).parameters)
    at = names.index("device") if "device" in names else None

    @functools.wraps(op)
    def on_its_device(*args, **kwargs):
        if at is None and not (args and is_cupy_array(args[0])):
            return op(*args, **kwargs)
        spec = kwargs.get("device") if at is None or len(args) <= at else args[at]
        with device_of(args[0] if args else None, spec).context():
            return op(*args, **kwargs)
    return on_its_device


globals().update({name: _on_its_device(globals()[name]) for name in __all__
                  if inspect.isfunction(globals()[name])})  # functions only: a class stays itself
