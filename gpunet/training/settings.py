"""The settings of a training run, declared once: each ``TrainConfig`` field carries its command-line flag, help,
parser, whether the dataset's recipe gives it, and what a resumed run may do with it. The ``gpunet train``
parser, the recipe's settings and resume's checks are all derived from these fields, so a new setting is one
line here plus its use.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os

from ..data.registry import DATASETS
from ..nn.activation import ACTIVATIONS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")

# What a checkpoint's setting means to a resumed run: MUST_MATCH (the state's meaning: resuming with it changed is
# refused), MAY_CHANGE (said in the resume line when it does), or nothing (where the run happens: not said).
MUST_MATCH, MAY_CHANGE = "must match", "may change"


def _hidden(text: str) -> tuple:
    pieces = [piece.strip() for piece in text.split(",")]
    if not all(piece.isascii() and piece.isdigit() and int(piece) > 0 for piece in pieces):
        raise argparse.ArgumentTypeError(f"takes one or more positive sizes separated by commas, like 512,512; "
                                         f"got {text!r}")
    return tuple(int(piece) for piece in pieces)



def _number(kind, test, wanted: str):
    """An argparse type: ``kind(text)`` (finite, for floats) that passes ``test``, else an error saying ``wanted``
    (argparse prefixes the flag: "argument --dropout: must lie in [0, 1), got -0.5")."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = _number(int, lambda v: v > 0, "a positive integer")
NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, "a non-negative integer")
POSITIVE_FLOAT = _number(float, lambda v: v > 0, "a positive finite number")
NON_NEGATIVE_FLOAT = _number(float, lambda v: v >= 0, "a finite number >= 0")
FRACTION = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def default_device() -> str:
    """``--device``'s default: ``$GPUNET_DEVICE``, else ``auto``."""
    return os.environ.get("GPUNET_DEVICE") or "auto"


DEVICE_HELP = "cpu, sim, cuda, cuda:N, simgpu[:N] (a simulated GPU) or auto (default: $GPUNET_DEVICE, else auto)"


def setting(default, help: str = "", *, flag: str | None = "", parse=None, choices=None, metavar=None,
            recipe: bool = False, resume: str = "", cli_default=None):
    """A ``TrainConfig`` field and its command line: ``flag`` (default ``--<name>``; None: no flag), ``parse``
    (argparse's ``type``), ``choices``, ``metavar``; ``recipe``: the dataset's recipe gives it unless the flag is
    given; ``resume``: MUST_MATCH, MAY_CHANGE or ""; ``cli_default``: a callable giving the flag's default when
    it is not the field's (read when the parser is built). A bool field is a ``store_true`` flag (or, for a
    ``--no-...`` flag, ``store_false``)."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, flag=flag, parse=parse, choices=choices, metavar=metavar, recipe=recipe, resume=resume,
        cli_default=cli_default))


_RECIPE = " (default: the dataset's recipe, printed at the start)"


@dataclasses.dataclass
class TrainConfig:
    """Everything ``gpunet train`` is told. The defaults of the recipe's settings are MNIST's recipe."""
    dataset: str = setting("mnist", "the dataset (each has a recipe: gpunet/recipes.py)", choices=DATASETS,
                           resume=MUST_MATCH)
    data_root: str | None = setting(None, "folder of the dataset files (default: embedded MNIST)")
    device: str = setting("auto", DEVICE_HELP, cli_default=default_device)
    hidden: tuple = setting((512, 512), "hidden sizes, e.g. 512,512" + _RECIPE, parse=_hidden, recipe=True,
                            resume=MUST_MATCH)
    activation: str = setting("relu", _RECIPE.strip(), choices=sorted(ACTIVATIONS), recipe=True, resume=MUST_MATCH)
    dropout: float = setting(0.0, "in [0, 1)", parse=FRACTION, resume=MAY_CHANGE)
    optimizer: str = setting("adam", _RECIPE.strip(), choices=OPTIMIZERS, recipe=True, resume=MUST_MATCH)
    lr: float = setting(1e-3, "the learning rate" + _RECIPE, parse=POSITIVE_FLOAT, recipe=True, resume=MAY_CHANGE)
    momentum: float = setting(0.9, "SGD's, in [0, 1)" + _RECIPE, parse=FRACTION, recipe=True, resume=MAY_CHANGE)
    weight_decay: float = setting(0.0, "L2 (sgd, adam) or decoupled (adamw)" + _RECIPE, parse=NON_NEGATIVE_FLOAT,
                                  recipe=True, resume=MAY_CHANGE)
    schedule: str = setting("cosine", "the learning rate over the run" + _RECIPE, choices=SCHEDULES, recipe=True,
                            resume=MAY_CHANGE)
    batch_size: int = setting(128, "the (global) batch" + _RECIPE, parse=POSITIVE_INT, recipe=True,
                              resume=MAY_CHANGE)
    epochs: int = setting(8, _RECIPE.strip(), parse=POSITIVE_INT, recipe=True, resume=MAY_CHANGE)
    seed: int = setting(0, "the weights', the batches' and a toy dataset's seed", parse=NON_NEGATIVE_INT,
                        resume=MAY_CHANGE)
    out: str = setting("runs/latest", "folder for checkpoint.npz and metrics.json (locked while a run uses it)")
    resume: bool = setting(False, "continue from OUT/checkpoint.npz (an error if there is none, or if it was "
                                  "trained with other settings)")
    progress: bool = setting(True, "no progress bar", flag="--no-progress")
    plot: str | None = setting(None, "draw loss and accuracy per epoch (matplotlib)", metavar="PNG")
    # One rank of an MPI job (gpunet.distributed): --batch-size is the global batch.
    distributed: bool = setting(False, "run as one rank of an MPI job: mpiexec -n N python -m mpi4py -m gpunet "
                                       "train --distributed ... (--batch-size is then the global batch)")
    # Seconds: checkpoint at an epoch's end once this long passed since the last save.
    save_every: float = setting(5.0, "checkpoint at an epoch's end once this many seconds passed since the last "
                                     "(0: every epoch); always at the end and on Ctrl-C",
                                parse=NON_NEGATIVE_FLOAT, metavar="SECONDS")
    plot_boundary: str | None = setting(None, "draw the decision regions and the points of a 2-D dataset (spiral, "
                                              "moons)", metavar="PNG")
    recipe: str = setting("", flag=None)  # what the command line started from (gpunet.recipes), said at the start
    clip_grad_norm: float | None = setting(
        None, "scale the gradient down to this total L2 norm (over all parameters, PyTorch's clip_grad_norm_) "
        "where it exceeds it (default: no clipping)", parse=POSITIVE_FLOAT, metavar="MAX", resume=MAY_CHANGE)
    label_smoothing: float = setting(0.0, "spread this much of each target over the classes (PyTorch's "
                                          "label_smoothing), in [0, 1)", parse=FRACTION, resume=MAY_CHANGE)


def _settings(**wanted):
    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if all(f.metadata[key] == value for key, value in wanted.items()))


RECIPE_SETTINGS = _settings(recipe=True)  # each overridden by its flag where one is given
RUN_DEFINING = _settings(resume=MUST_MATCH)  # resuming with any of these changed is refused
MAY_CHANGE_ON_RESUME = _settings(resume=MAY_CHANGE)  # said in the resume line when changed


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field that has one, as its ``setting`` declares it. A recipe's setting
    defaults to None on the command line (None: take the recipe's)."""
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        if meta["flag"] is None:
            continue
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, dest=field.name, help=meta["help"],
                                action="store_false" if flag.startswith("--no-") else "store_true")
            continue
        default = None if meta["recipe"] else meta["cli_default"]() if meta["cli_default"] else field.default
        parser.add_argument(flag, dest=field.name, type=meta["parse"], choices=meta["choices"], default=default,
                            metavar=meta["metavar"], help=meta["help"] or None)


def config_from_arguments(args: argparse.Namespace, dataset_recipe, **overrides) -> TrainConfig:
    """The TrainConfig the parsed ``args`` say: each recipe setting from its flag where given, else from
    ``dataset_recipe`` (a ``gpunet.recipes.Recipe``); every other field from its flag; ``overrides`` last."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        if field.metadata["flag"] is None:
            continue
        given = getattr(args, field.name)
        from_recipe = field.metadata["recipe"] and given is None
        values[field.name] = getattr(dataset_recipe, field.name) if from_recipe else given
    return TrainConfig(**{**values, **overrides})


def given_recipe_settings(args: argparse.Namespace) -> list:
    """The recipe's settings whose flags ``args`` gives, in declaration order."""
    return [name for name in RECIPE_SETTINGS if getattr(args, name) is not None]


def jsonable(config: TrainConfig) -> dict:
    """``config`` as the checkpoint and metrics.json store it (``hidden`` a list)."""
    d = dataclasses.asdict(config)
    d["hidden"] = list(d["hidden"])
    return d
