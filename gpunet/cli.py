"""``gpunet train`` and ``gpunet eval`` (also ``python -m gpunet``).

Exit codes: 0 done, 2 an error (bad argument, dataset, checkpoint, run folder, out of memory), 3 the training
diverged, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM. ``--device`` defaults to ``$GPUNET_DEVICE``, else
``auto``.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path

from .checkpoint import load_checkpoint, mlp_layers, remove_stale_temporaries, require_fits_dataset
from .data.registry import DATASETS, load_dataset
from .devices import device
from .info import main as show_info
from .distributed import DistributedUnavailable, launch, stop, world
from .nn.activation import ACTIVATIONS
from .plots import plot_confusion
from .recipes import recipe_for
from .training import (OPTIMIZERS, DivergenceError, Interrupted, TrainConfig, accuracy, build_model, check_plot_path,
                       confusion_matrix, fit)


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


def _default_device() -> str:
    return os.environ.get("GPUNET_DEVICE") or "auto"


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    device_help = "cpu, sim, cuda, cuda:N, simgpu[:N] (a simulated GPU) or auto (default: $GPUNET_DEVICE, else auto)"
    parser = argparse.ArgumentParser(prog="gpunet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an MLP and report test accuracy")
    train.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    train.add_argument("--data-root", default=None, help="folder of the dataset files (default: embedded MNIST)")
    train.add_argument("--device", default=_default_device(), help=device_help)
    recipe = " (default: the dataset's recipe, printed at the start)"
    train.add_argument("--hidden", type=_hidden, default=None, help="hidden sizes, e.g. 512,512" + recipe)
    train.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None)
    train.add_argument("--dropout", type=FRACTION, default=defaults.dropout, help="in [0, 1)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    train.add_argument("--lr", type=POSITIVE_FLOAT, default=None)
    train.add_argument("--momentum", type=FRACTION, default=None, help="SGD's, in [0, 1)")
    train.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=None)
    train.add_argument("--schedule", choices=("cosine", "constant"), default=None)
    train.add_argument("--batch-size", type=POSITIVE_INT, default=None)
    train.add_argument("--epochs", type=POSITIVE_INT, default=None)
    train.add_argument("--seed", type=NON_NEGATIVE_INT, default=defaults.seed)
    train.add_argument("--out", default=defaults.out, help="folder for checkpoint.npz and metrics.json (locked "
                                                            "while a run uses it)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz (an error if there "
                                                             "is none, or if it was trained with other settings)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--plot", default=None, metavar="PNG", help="draw loss and accuracy per epoch (matplotlib)")
    train.add_argument("--plot-boundary", default=None, metavar="PNG",
                       help="draw the decision regions and the points of a 2-D dataset (spiral, moons)")
    train.add_argument("--save-every", type=NON_NEGATIVE_FLOAT, default=defaults.save_every, metavar="SECONDS",
                       help="checkpoint at an epoch's end once this many seconds passed since the last (0: every "
                            "epoch); always at the end and on Ctrl-C")
    train.add_argument("--distributed", action="store_true",
                       help="run as one rank of an MPI job: mpiexec -n N python -m mpi4py -m gpunet train "
                            "--distributed ... (--batch-size is then the global batch)")
    train.add_argument("--nproc", type=POSITIVE_INT, default=None, metavar="N",
                       help="train on N ranks of this machine: runs the mpiexec command above itself")

    info = sub.add_parser("info", help="what this machine gives gpunet: devices, CPU, kernels, BLAS, threads")
    info.add_argument("--measure", action="store_true",
                      help="first time the bench's training products on each BLAS (cached per machine)")
    info.add_argument("--json", action="store_true", help="print JSON")

    ev = sub.add_parser("eval", help="load a checkpoint and report test accuracy")
    ev.add_argument("checkpoint")
    ev.add_argument("--dataset", choices=DATASETS, default=None, help="default: the one it was trained on")
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--device", default=_default_device(), help=device_help)
    ev.add_argument("--confusion", default=None, metavar="PNG", help="draw the confusion matrix (matplotlib)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args, argv)
    if args.command == "info":
        try:
            return show_info(measure=args.measure, as_json=args.json)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"gpunet: error: {exc}", file=sys.stderr)
            return 2
    return _eval(args)


# The settings a dataset's recipe gives, each overridden by its flag where one is given.
RECIPE_SETTINGS = ("hidden", "activation", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size",
                   "epochs")


def _train(args, argv) -> int:
    if args.nproc is not None and not args.distributed:
        return _launch(args.nproc, argv)
    recipe = recipe_for(args.dataset)
    given = {name: getattr(args, name) for name in RECIPE_SETTINGS if getattr(args, name) is not None}
    config = TrainConfig(
        dataset=args.dataset, data_root=args.data_root, device=args.device, dropout=args.dropout, seed=args.seed,
        out=args.out, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(), plot=args.plot,
        plot_boundary=args.plot_boundary, save_every=args.save_every, distributed=args.distributed,
        **{name: given.get(name, getattr(recipe, name)) for name in RECIPE_SETTINGS})
    overridden = f" (given: {', '.join('--' + n.replace('_', '-') for n in given)})" if given else ""
    config.recipe = f"recipe for {args.dataset}: {recipe.describe()}{overridden}"
    try:
        if args.distributed:
            return _as_rank(config)
        with _signal_policy(config, lead=True):
            fit(config)
    except Interrupted as exc:
        print(_interrupted(exc), file=sys.stderr)
        return stop.exit_status(exc.signum)
    except KeyboardInterrupt:
        print("\ngpunet: interrupted", file=sys.stderr)
        return 130
    except DivergenceError as exc:
        print(f"gpunet: {exc}", file=sys.stderr)
        return 3
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"gpunet: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _interrupted(exc: Interrupted) -> str:
    """The one line an interrupted run ends with."""
    how = "interrupted" if exc.signum == signal.SIGINT else f"interrupted by {stop.signal_name(exc.signum)}"
    if exc.checkpoint:
        kept = f"kept {exc.checkpoint} (after epoch {exc.epoch}); continue with --resume"
    else:
        kept = "no epoch finished, so this run wrote no checkpoint"
    return f"\ngpunet: {how}: {kept}"


def _signal_policy(config, lead: bool) -> stop.SignalPolicy:
    """SIGINT and SIGTERM stop the run after a step (docs/distributed.md, "Signals"); when forced to end at once,
    the lead process removes the temporary file of a save in progress and says what is left."""
    out, grace = Path(config.out), stop.grace_seconds()
    checkpoint = out / "checkpoint.npz"

    def cleanup():
        if lead:  # it holds the run folder's lock: no other process writes there
            for path in (checkpoint, out / "metrics.json"):
                remove_stale_temporaries(path)

    def said(signum, reason):
        if not lead:
            return
        why = (f"{stop.signal_name(signum)} again" if reason == "again" else
               f"still running {grace:g} s after {stop.signal_name(signum)}")
        left = (f"{checkpoint} holds the last complete checkpoint; continue with --resume" if checkpoint.is_file()
                else "no checkpoint was written")
        print(f"\ngpunet: interrupted ({why}): stopped at once, without saving; {left}", file=sys.stderr)

    return stop.SignalPolicy(grace, cleanup=cleanup, on_force=said)


def _launch(nproc: int, argv) -> int:
    train_args = _without_nproc(list(sys.argv[2:] if argv is None else argv[1:]))
    try:
        return launch.run(nproc, train_args)
    except (DistributedUnavailable, ValueError) as exc:  # no MPI; a bad $GPUNET_STOP_GRACE
        print(f"gpunet: error: {exc}", file=sys.stderr)
        return 2


def _without_nproc(args: list) -> list:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _as_rank(config) -> int:
    """``fit`` as one rank of an MPI job. An error every rank meets alike (divergence) is said once, by rank 0,
    and ends the ranks together; any other error (one rank's) is said by that rank and aborts the whole job at
    once, since the others would otherwise wait in the next collective for ever."""
    try:
        comm = world()
    except DistributedUnavailable as exc:
        print(f"gpunet: error: {exc}", file=sys.stderr)
        return 2
    try:
        with _signal_policy(config, lead=comm.rank == 0):
            try:
                fit(config)
                return 0
            except Interrupted as exc:
                if not isinstance(exc.__cause__, stop.Stopped):  # this rank's own KeyboardInterrupt: not agreed
                    print(f"gpunet: rank {comm.rank} of {comm.size} interrupted", file=sys.stderr, flush=True)
                    comm.abort(stop.exit_status(exc.signum))
                # every rank stopped after the same step (gpunet.distributed.stop)
                comm.barrier()  # rank 0 has written the checkpoint it names
                if comm.rank == 0:
                    print(_interrupted(exc), file=sys.stderr, flush=True)
                comm.finalize()  # so that the exit status is not turned into MPI_Abort
                return stop.exit_status(exc.signum)
    except DivergenceError as exc:
        if comm.rank == 0:
            print(f"gpunet: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:
        print(f"gpunet: error: rank {comm.rank} of {comm.size} on {comm.host}: {exc}", file=sys.stderr, flush=True)
        comm.abort(2)
        return 2


def _eval(args) -> int:
    try:
        if args.confusion:
            check_plot_path(args.confusion, "--confusion")
        model_state, _, meta = load_checkpoint(args.checkpoint)
        # Nothing is built before the metadata agrees with the weights, and the model with the dataset.
        sizes, weights = mlp_layers(args.checkpoint, model_state, meta)
        trained = meta["config"]
        dataset = args.dataset or trained.get("dataset")
        _, _, x_test, y_test, n_classes = load_dataset(dataset, args.data_root or trained.get("data_root"),
                                                       trained.get("seed", 0))
        require_fits_dataset(args.checkpoint, sizes, dataset, x_test.shape[1], n_classes, trained.get("dataset"))
        config = TrainConfig(hidden=tuple(sizes[1:-1]), activation=trained.get("activation", "relu"))
        model = build_model(config, sizes[0], sizes[-1], device(args.device))
        model.load_state_dict(dict(zip((name for name, _ in model.named_parameters()), weights)))
        acc = accuracy(model, x_test, y_test)
        print(f"{dataset} test accuracy {100 * acc:.2f}% ({len(y_test)} samples) on {model.device.name}")
        if args.confusion:
            matrix = confusion_matrix(model, x_test, y_test, n_classes)
            print(f"confusion matrix written to {plot_confusion(matrix.tolist(), args.confusion)}")
    except KeyboardInterrupt:
        print("\ngpunet: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
        print(f"gpunet: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
