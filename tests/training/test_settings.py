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
                                         "dropout", "seed", "clip_grad_norm"}


def test_the_command_line_gives_the_config_it_says():
    args = build_parser().parse_args(["train", "--dataset", "spiral", "--lr", "0.5", "--no-progress",
                                      "--clip-grad-norm", "2", "--hidden", "7,5", "--resume", "--device", "cpu"])
    config = config_from_arguments(args, RECIPES["spiral"])
    spiral = RECIPES["spiral"]
    assert config == TrainConfig(dataset="spiral", lr=0.5, progress=False, clip_grad_norm=2.0, hidden=(7, 5),
                                 resume=True, device="cpu", activation=spiral.activation, optimizer=spiral.optimizer,
                                 momentum=spiral.momentum, weight_decay=spiral.weight_decay,
                                 schedule=spiral.schedule, batch_size=spiral.batch_size, epochs=spiral.epochs)
