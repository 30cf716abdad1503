"""Recipes per dataset, held-out toy test splits, decision-boundary pictures and the checkpoint cadence."""
import json

import numpy as np
import pytest

from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data.registry import load_dataset
from gpunet.recipes import RECIPES, recipe_for
from gpunet.training import Interrupted, TrainConfig, fit

QUIET = {"log": lambda *_: None}


def test_every_dataset_has_a_recipe_and_the_cli_prints_it_with_what_was_given(tmp_path, capsys):
    from gpunet.data.registry import DATASETS

    assert set(RECIPES) == set(DATASETS)
    assert main(["train", "--dataset", "moons", "--epochs", "2", "--lr", "0.05", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recipe for moons: --hidden 500 --activation tanh, sgd lr 0.1 momentum 0.9" in out
    assert "(given: --lr, --epochs)" in out
    assert "[2, 500, 2] tanh, sgd lr=0.05 batch=200 epochs=2" in out  # the flags override their part only
    with pytest.raises(ValueError, match="no recipe"):
        recipe_for("imagenet")


@pytest.mark.parametrize("name", ["spiral", "moons"])
def test_toy_test_splits_are_held_out(name):
    x, y, xt, yt, _ = load_dataset(name, seed=0)
    assert x.shape == xt.shape and not np.array_equal(x, xt)
    np.testing.assert_array_equal(np.bincount(y), np.bincount(yt))  # the same distribution, other points


@pytest.mark.parametrize("dataset,at_least", [("spiral", 0.98), ("moons", 0.99)])
def test_the_toy_recipes_train_well_on_held_out_points(tmp_path, dataset, at_least):
    """cs231n's spiral net and the 2-500-2 tanh net on two moons, from the recipe alone (a few seconds here)."""
    assert main(["train", "--dataset", dataset, "--device", "cpu", "--no-progress", "--out", str(tmp_path),
                 "--plot-boundary", str(tmp_path / "boundary.png")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= at_least
    picture = (tmp_path / "boundary.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 20_000  # regions and points, not a blank canvas


@pytest.mark.parametrize("seed", [2, 25])
def test_the_spiral_recipe_holds_at_its_hardest_seeds(tmp_path, seed):
    """Over seeds 0-31 the recipe reaches 97.67-99.33% (median 99.00%); these two are its lowest. cs231n's SGD
    settings, the recipe before, fell to 96.67% and had a median of 98.33%."""
    assert main(["train", "--dataset", "spiral", "--seed", str(seed), "--device", "cpu", "--no-progress", "--out",
                 str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] >= 0.975


def test_plot_boundary_is_refused_before_training_for_a_dataset_that_is_not_2d(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--plot-boundary", str(tmp_path / "b.png"), "--out",
                 str(tmp_path / "run")]) == 2
    assert "--plot-boundary draws 2-D datasets (spiral, moons), not mnist" in capsys.readouterr().err


def config(out, **kw):
    return TrainConfig(**{**dict(dataset="spiral", hidden=(16,), batch_size=100, epochs=6, optimizer="adam",
                                 lr=0.01, device="cpu", progress=False, out=str(out)), **kw})


def test_checkpoints_follow_the_cadence(tmp_path, monkeypatch):
    from gpunet.training import loop

    writes = []
    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda path, m, o, meta: writes.append(meta["epoch"]) or
                        real(path, m, o, meta))
    fit(config(tmp_path / "rare", save_every=1e9), **QUIET)
    assert writes == [6]  # only at the end
    writes.clear()
    fit(config(tmp_path / "each", save_every=0), **QUIET)
    assert writes == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_writes_the_last_finished_epoch_and_resume_matches_an_uninterrupted_run(tmp_path):
    fit(config(tmp_path / "straight", save_every=1e9), **QUIET)

    def interrupt_at_epoch_4(line):
        if line.startswith("epoch 4/"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        fit(config(tmp_path / "split", save_every=1e9), log=interrupt_at_epoch_4)
    assert stopped.value.epoch == 3  # epochs 1-3 were never written before Ctrl-C; epoch 3 was, on Ctrl-C
    assert load_checkpoint(tmp_path / "split" / "checkpoint.npz")[2]["epoch"] == 3
    fit(config(tmp_path / "split", save_every=1e9, resume=True), **QUIET)
    a, _, _ = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    b, _, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
