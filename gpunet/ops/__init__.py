"""The functional core: every op takes ``device=None`` (the device the input lives on) and runs on any device.

Each module declares its ops once (a kind of ``gpunet.kinds``) and lists its public functions in ``__all__``, which
this package re-exports: a new op in an existing module needs no line here.
"""
from . import (activations as _activations, cross_entropy as _cross_entropy, linear as _linear,
               linear_cross_entropy as _linear_cross_entropy, softmax as _softmax)
from .activations import *  # noqa: F401,F403
from .cross_entropy import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .linear_cross_entropy import *  # noqa: F401,F403
from .softmax import *  # noqa: F401,F403

__all__ = [*_softmax.__all__, *_cross_entropy.__all__, *_activations.__all__, *_linear.__all__,
           *_linear_cross_entropy.__all__]
