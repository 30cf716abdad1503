"""``gpunet train`` and ``gpunet eval`` (also ``python -m gpunet``)."""
from __future__ import annotations

import argparse
import sys

from .checkpoint import load_checkpoint
from .data.registry import DATASETS, load_dataset
from .devices import device
from .nn.activation import ACTIVATIONS
from .plots import plot_confusion
from .training import OPTIMIZERS, DivergenceError, TrainConfig, accuracy, build_model, confusion_matrix, fit


def _hidden(text: str) -> tuple:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated sizes like 512,512, got {text!r}")
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="gpunet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an MLP and report test accuracy")
    train.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    train.add_argument("--data-root", default=None, help="folder of the dataset files (default: embedded MNIST)")
    train.add_argument("--device", default=defaults.device, help="cpu, sim, cuda, cuda:N or auto")
    train.add_argument("--hidden", type=_hidden, default=defaults.hidden, help="hidden sizes, e.g. 512,512")
    train.add_argument("--activation", choices=sorted(ACTIVATIONS), default=defaults.activation)
    train.add_argument("--dropout", type=float, default=defaults.dropout)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    train.add_argument("--lr", type=_positive(float), default=defaults.lr)
    train.add_argument("--momentum", type=float, default=defaults.momentum)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--schedule", choices=("cosine", "constant"), default=defaults.schedule)
    train.add_argument("--batch-size", type=_positive(int), default=defaults.batch_size)
    train.add_argument("--epochs", type=_positive(int), default=defaults.epochs)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--out", default=defaults.out, help="folder for checkpoint.npz and metrics.json")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--plot", default=None, metavar="PNG", help="draw loss and accuracy per epoch (matplotlib)")

    ev = sub.add_parser("eval", help="load a checkpoint and report test accuracy")
    ev.add_argument("checkpoint")
    ev.add_argument("--dataset", choices=DATASETS, default=None, help="default: the one it was trained on")
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--confusion", default=None, metavar="PNG", help="draw the confusion matrix (matplotlib)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    return _eval(args)


def _train(args) -> int:
    config = TrainConfig(
        dataset=args.dataset, data_root=args.data_root, device=args.device, hidden=args.hidden,
        activation=args.activation, dropout=args.dropout, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        batch_size=args.batch_size, epochs=args.epochs, seed=args.seed, out=args.out, resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty(), plot=args.plot)
    try:
        fit(config)
    except DivergenceError as exc:
        print(f"gpunet: {exc}", file=sys.stderr)
        return 3
    except (ValueError, RuntimeError) as exc:
        print(f"gpunet: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _eval(args) -> int:
    try:
        model_state, _, meta = load_checkpoint(args.checkpoint)
        trained = meta["config"]
        dataset = args.dataset or trained["dataset"]
        _, _, x_test, y_test, n_classes = load_dataset(dataset, args.data_root or trained.get("data_root"),
                                                       trained.get("seed", 0))
        config = TrainConfig(hidden=tuple(meta["sizes"][1:-1]), activation=trained["activation"])
        model = build_model(config, meta["sizes"][0], meta["sizes"][-1], device(args.device))
        model.load_state_dict(model_state)
        acc = accuracy(model, x_test, y_test)
        print(f"{dataset} test accuracy {100 * acc:.2f}% ({len(y_test)} samples) on {model.device.name}")
        if args.confusion:
            matrix = confusion_matrix(model, x_test, y_test, n_classes)
            print(f"confusion matrix written to {plot_confusion(matrix.tolist(), args.confusion)}")
    except (ValueError, RuntimeError, KeyError) as exc:
        print(f"gpunet: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
