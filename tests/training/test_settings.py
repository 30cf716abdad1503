"""The settings are declared once (gpunet/training/settings.py): the parser, the recipe's settings and resume's
rules all come from TrainConfig's fields, and the command line gives back the TrainConfig it describes."""
import dataclasses

import pytest

from gpunet.cli import build_parser
from gpunet.recipes import RECIPES, Recipe
from gpunet.training import RECIPE_SETTINGS, RUN_DEFINING, TrainConfig
from gpunet.training.settings import MAY_CHANGE_ON_RESUME, config_from_arguments


def test_every_setting_with_a_flag_is_on_the_command_line_with_its_default(monkeypatch, capsys):
    monkeypatch.delenv("GPUNET_DEVICE")
    given = vars(build_parser().parse_args(["train"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        if field.name == "recipe":  # said by the command line itself, not a flag
            assert field.name not in given
            continue
        flag = "--no-progress" if field.name == "progress" else "--" + field.name.replace("_", "-")
        assert f"\n  {flag}" in shown, flag
        assert given[field.name] == (None if field.name in RECIPE_SETTINGS else field.default), field.name
    assert set(given) - {f.name for f in dataclasses.fields(TrainConfig)} == {"command", "nproc"}


def test_the_recipes_settings_are_the_recipes_fields_and_resume_rules_are_as_they_were():
    assert set(RECIPE_SETTINGS) == {f.name for f in dataclasses.fields(Recipe)}
    assert RUN_DEFINING == ("dataset", "hidden", "activation", "optimizer")
    assert set(MAY_CHANGE_ON_RESUME) == {"lr", "schedule", "epochs", "batch_size", "momentum", "weight_decay",
                                         "dropout", "seed", "clip_grad_norm", "label_smoothing"}


def test_the_command_line_gives_the_config_it_says():
    args = build_parser().parse_args(["train", "--dataset", "spiral", "--lr", "0.5", "--no-progress",
                                      "--clip-grad-norm", "2", "--hidden", "7,5", "--resume", "--device", "cpu"])
    config = config_from_arguments(args, RECIPES["spiral"])
    spiral = RECIPES["spiral"]
    assert config == TrainConfig(dataset="spiral", lr=0.5, progress=False, clip_grad_norm=2.0, hidden=(7, 5),
                                 resume=True, device="cpu", activation=spiral.activation, optimizer=spiral.optimizer,
                                 momentum=spiral.momentum, weight_decay=spiral.weight_decay,
                                 schedule=spiral.schedule, batch_size=spiral.batch_size, epochs=spiral.epochs)


def test_label_smoothing_reaches_the_loss_and_is_checked(tmp_path, capsys):
    """--label-smoothing is one declared setting plus its use: the loss module of the run smooths (the first
    epoch's loss is the smoothed loss, higher than the plain one from the same weights and batches), and a value
    outside [0, 1) is refused by the parser."""
    from gpunet.training import fit

    def first_loss(smoothing):
        config = TrainConfig(dataset="moons", hidden=(8,), epochs=1, batch_size=50, optimizer="sgd", lr=1e-9,
                             device="cpu", progress=False, out=str(tmp_path / str(smoothing)),
                             label_smoothing=smoothing)
        return fit(config, log=lambda *_: None)["history"][0]["train_loss"]

    plain, smoothed = first_loss(0.0), first_loss(0.3)
    # With lr ~ 0 the weights stay put, and for a row with p the probabilities, the smoothed loss adds
    # 0.3 * (mean over classes of -log p - (-log p_label)) > 0 on average for a barely trained model.
    assert smoothed != plain
    args = build_parser().parse_args(["train", "--label-smoothing", "0.1"])
    assert config_from_arguments(args, RECIPES["mnist"]).label_smoothing == 0.1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--label-smoothing", "1.5"])
    assert "--label-smoothing: must be a number in [0, 1)" in capsys.readouterr().err
