"""``gpunet train`` and ``gpunet eval`` (also ``python -m gpunet``).

Exit codes: 0 done, 2 an error (bad argument, dataset, checkpoint, run folder, out of memory), 3 the training
diverged, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM. ``--device`` defaults to ``$GPUNET_DEVICE``, else
``auto``.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .checkpoint import load_checkpoint, mlp_layers, remove_stale_temporaries, require_fits_dataset
from .data.registry import DATASETS, load_dataset
from .devices import device
from .info import main as show_info
from .distributed import DistributedUnavailable, launch, stop, world
from .plots import plot_confusion
from .recipes import recipe_for
from .training import (DivergenceError, Interrupted, TrainConfig, accuracy, build_model, check_plot_path,
                       confusion_matrix, fit)
from .training.settings import (DEVICE_HELP, POSITIVE_INT, add_train_arguments, config_from_arguments,
                                default_device, given_recipe_settings)

# Seconds a rank other than 0 waits, when forced to end at once, before it exits: a loaded machine may run its
# grace timer first, and mpiexec would end rank 0 before it said its one line.
FOLLOWER_EXIT_DELAY = 1.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpunet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an MLP and report test accuracy")
    add_train_arguments(train)  # one flag per TrainConfig setting, as gpunet/training/settings.py declares it
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
    ev.add_argument("--device", default=default_device(), help=DEVICE_HELP)
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


def _train(args, argv) -> int:
    if args.nproc is not None and not args.distributed:
        return _launch(args.nproc, argv)
    recipe = recipe_for(args.dataset)
    given = given_recipe_settings(args)
    overridden = f" (given: {', '.join('--' + n.replace('_', '-') for n in given)})" if given else ""
    config = config_from_arguments(args, recipe, progress=args.progress and sys.stderr.isatty(),
                                   recipe=f"recipe for {args.dataset}: {recipe.describe()}{overridden}")
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
        if not lead:  # mpiexec ends the job when the first rank exits: let the lead's line out first
            time.sleep(FOLLOWER_EXIT_DELAY)
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
        # every rank diverges at the same step (they share the global loss and weights): rank 0 first writes the
        # last good epoch; a rank exiting before it would end the job through MPI_Abort, cutting the save off
        comm.barrier()
        if comm.rank == 0:
            print(f"gpunet: {exc}", file=sys.stderr, flush=True)
        comm.finalize()  # so that the exit status is not turned into MPI_Abort
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
