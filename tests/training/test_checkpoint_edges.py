"""Checkpoints that are not what they claim: an .npy, metadata that is not an object, a header claiming 1e13
floats, NaN / complex / integer weights; load_state_dict is all or nothing; files get the umask's mode."""
import io
import re
import json
import os
import stat
import zipfile

import numpy as np
import pytest

from gpunet import nn, optim
from gpunet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

META = {"epoch": 1, "format_version": 1}


def write_npz(path, arrays, meta=META):
    """An .npz as np.savez writes it (the layout of every checkpoint this project ever wrote), bypassing the
    checks of save_checkpoint."""
    arrays = dict(arrays)
    if meta is not None:
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def npy_header(shape, dtype="<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_a_checkpoint_as_the_old_code_wrote_it_loads(tmp_path):
    path = write_npz(tmp_path / "old.npz", {"model/0.weight": np.ones((2, 3), np.float32),
                                            "optim/step_count": np.asarray(7), "optim/lr": np.asarray(0.01),
                                            "optim/state.0.m": np.zeros((2, 3), np.float32)},
                     meta={"config": {"hidden": [3]}, "epoch": 2, "format_version": 1})
    model, optim_state, meta = load_checkpoint(path)
    assert meta["epoch"] == 2 and optim_state["step_count"] == 7 and model["0.weight"].shape == (2, 3)


def test_an_npy_file_is_not_a_checkpoint(tmp_path):
    np.save(tmp_path / "w.npy", np.ones(3))
    with pytest.raises(CheckpointError, match="a single .npy array"):
        load_checkpoint(tmp_path / "w.npy")
    (tmp_path / "huge.npy").write_bytes(npy_header((10 ** 13,)) + b"\0" * 16)
    with pytest.raises(CheckpointError, match="a single .npy array"):
        load_checkpoint(tmp_path / "huge.npy")


@pytest.mark.parametrize("meta, match", [([1, 2], "must be a JSON object"), ("text", "must be a JSON object"),
                                         (None, "no 'meta' entry"), ({"epoch": 1}, "checkpoint format None")])
def test_metadata_that_is_not_an_object(tmp_path, meta, match):
    path = write_npz(tmp_path / "ck.npz", {"model/w": np.ones(2)}, meta=meta)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_metadata_that_is_not_bytes(tmp_path):
    np.savez(tmp_path / "ck.npz", meta=np.ones(3))
    with pytest.raises(CheckpointError, match="1-D uint8"):
        load_checkpoint(tmp_path / "ck.npz")


def test_a_header_claiming_1e13_floats_allocates_nothing(tmp_path):
    path = write_npz(tmp_path / "ck.npz", {"model/w": np.ones(2, np.float32)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("model/huge.npy", npy_header((10 ** 13,)) + b"\0" * 64)
    with pytest.raises(CheckpointError, match=r"'model/huge'.*claims shape \(10000000000000,\)"):
        load_checkpoint(path)


def test_a_pickled_member_is_refused(tmp_path):
    np.savez(tmp_path / "ck.npz", meta=np.frombuffer(json.dumps(META).encode(), np.uint8),
             **{"model/w": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="Python objects"):
        load_checkpoint(tmp_path / "ck.npz")


@pytest.mark.parametrize("value, match", [
    (np.array([1.0, np.nan], np.float32), "1 non-finite"), (np.array([np.inf, 1.0]), "1 non-finite"),
    (np.array([1 + 2j, 0j]), "complex128"), (np.array([1, 2]), "int64"), (np.array([True, False]), "bool"),
])
@pytest.mark.parametrize("key", ["model/0.bias", "optim/state.1.m"])
def test_non_finite_complex_or_integer_weights_are_refused_naming_the_key(tmp_path, value, match, key):
    arrays = {"model/0.weight": np.ones((2, 2), np.float32), "model/0.bias": np.ones(2, np.float32),
              "optim/state.1.m": np.ones(2, np.float32), "optim/step_count": np.asarray(1), "optim/lr": np.asarray(0.1)}
    arrays[key] = value
    path = write_npz(tmp_path / "ck.npz", arrays)
    with pytest.raises(CheckpointError, match=f"'{key}' holds.*{match}"):
        load_checkpoint(path)


def test_a_non_finite_weight_is_never_saved(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.ones(3, np.float32)}, meta={"epoch": 1})
    with pytest.raises(CheckpointError, match="not saving .*'model/w' holds 1 non-finite"):
        save_checkpoint(path, {"w": np.array([1, np.inf, 2], np.float32)}, meta={"epoch": 2})
    with pytest.raises(CheckpointError, match="'optim/state.0.v' holds 1 non-finite"):
        save_checkpoint(path, {"w": np.ones(3, np.float32)}, {"step_count": 2, "lr": 0.1,
                                                              "state.0.v": np.array([np.nan, 0, 0])}, {"epoch": 2})
    assert load_checkpoint(path)[2]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def small_model():
    return nn.mlp([3, 4, 2], seed=0, device="cpu")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_module_load_state_dict_is_all_or_nothing():
    model = small_model()
    before = model.state_dict()
    names = list(before)
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for bad, match in ((np.ones((5, 5), np.float32), "holds shape"), (np.full((4, 2), np.nan, np.float32), "NaN"),
                       (np.ones((4, 2), np.int64), "int64"), (np.ones((4, 2), np.complex64), "complex64"),
                       (np.full((4, 2), 1e300), "too large for float32")):
        state = {name: value + 1 for name, value in before.items()}
        state["2.weight"] = bad  # the third key: the first two would have been written already
        with pytest.raises(ValueError, match=match):
            model.load_state_dict(state)
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, before[name])


def adam_after_one_step():
    model = small_model()
    for p in model.parameters():
        p.grad[...] = 0.5
    opt = optim.Adam(model.parameters(), lr=0.1)
    opt.step()
    return opt


def test_optimizer_load_state_dict_is_all_or_nothing():
    opt = adam_after_one_step()
    before = opt.state_dict()
    for change, match in (({"state.2.m": np.ones((9, 9))}, "does not fit"),
                          ({"state.2.m": np.full((4, 2), np.inf, np.float32)}, "NaN or inf"),
                          ({"state.2.m": np.ones((4, 2), np.int32)}, "int32"),
                          ({"state.9.m": np.ones(2)}, "does not fit"),
                          ({"state.x": np.ones(2)}, "state.<index>.<buffer>"),
                          ({"step_count": -1}, "step_count"), ({"step_count": "3"}, "step_count"),
                          ({"lr": float("nan")}, "lr"), ({"lr": None}, "lr")):
        state = {k: (v * 2 if isinstance(v, np.ndarray) else v) for k, v in before.items()}
        state["step_count"] = 5
        state.update(change)
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(state)
        after = opt.state_dict()
        assert after.keys() == before.keys() and after["step_count"] == 1 and after["lr"] == 0.1
        for key in before:
            np.testing.assert_array_equal(after[key], before[key])


def test_optimizer_state_without_step_count_is_a_value_error():
    opt = adam_after_one_step()
    with pytest.raises(ValueError, match=r"lacks \['step_count', 'lr'\]"):
        opt.load_state_dict({})


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_and_metrics_follow_the_umask(tmp_path, umask):
    from gpunet.training import TrainConfig, fit
    old = os.umask(umask)
    try:
        fit(TrainConfig(dataset="moons", hidden=(4,), epochs=1, batch_size=200, device="cpu", progress=False,
                        out=str(tmp_path / "run")), log=lambda *_: None)
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "metrics.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o666 & ~umask, name


# ---- gpunet eval: the metadata checked against the weights and the dataset before anything is built ----------
def eval_checkpoint(path, sizes, weights_of=(2, 8, 2), dataset="moons", **meta):
    """A checkpoint as `gpunet train` writes it, of an MLP with layers ``weights_of``, whose metadata claims
    ``sizes``."""
    state = nn.mlp(list(weights_of), seed=0, device="cpu").state_dict()
    save_checkpoint(path, state, meta={"config": {"dataset": dataset, "activation": "relu"}, "epoch": 1,
                                       "sizes": sizes, **meta})
    return path


@pytest.fixture
def no_model_built(monkeypatch):
    """Building a model from a checkpoint whose metadata lies would allocate what the metadata claims."""
    from gpunet import cli
    monkeypatch.setattr(cli, "build_model", lambda *args: pytest.fail("a model was built"))


def run_eval(capsys, *args) -> tuple:
    from gpunet.cli import main
    code = main(["eval", *map(str, args), "--device", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("sizes", [[2, 10 ** 12, 2], [2, 10 ** 8, 2], [2, 8, 8, 2], [2, 2], [2, 8, 3], [3, 8, 2]])
def test_eval_refuses_layer_sizes_the_weights_do_not_have(tmp_path, capsys, no_model_built, sizes):
    """[2, 10**12, 2] in a 24 KB file was a MemoryError traceback; [2, 10**8, 2] took 4.3 GB and 13 s before
    the weights were found not to fit."""
    path = eval_checkpoint(tmp_path / "ck.npz", sizes)
    code, err = run_eval(capsys, path)
    assert code == 2 and f"claims layer sizes {sizes}" in err and "(2, 8)+(8,), (8, 2)+(2,)" in err


@pytest.mark.parametrize("state, match", [
    ({"0.weight": np.ones((2, 2), np.float32)}, r"\(2, 2\)\+\(\)"),
    ({"0.weight": np.ones((2, 2), np.float32), "0.bias": np.ones(2, np.float32), "0.scale": np.ones(2, np.float32)},
     "unexpected weight 'model/0.scale'"),
    ({"w": np.ones((2, 2), np.float32)}, "unexpected weight 'model/w'"),
    ({}, "shapes: none"),
])
def test_eval_refuses_weights_that_are_not_an_mlps(tmp_path, capsys, no_model_built, state, match):
    save_checkpoint(tmp_path / "ck.npz", state, meta={"config": {"dataset": "moons"}, "sizes": [2, 2]})
    code, err = run_eval(capsys, tmp_path / "ck.npz")
    assert code == 2 and re.search(match, err), err


def test_eval_refuses_a_class_count_its_last_layer_does_not_give(tmp_path, capsys, no_model_built):
    path = eval_checkpoint(tmp_path / "ck.npz", [2, 8, 2], n_classes=3)
    code, err = run_eval(capsys, path)
    assert code == 2 and "claims 3 classes, but its last layer gives 2" in err


@pytest.mark.parametrize("confusion", [False, True])
def test_eval_of_a_spiral_model_on_moons_is_an_error(tmp_path, capsys, confusion):
    """A 3-class spiral model scored on 2-class moons printed 22.50% and exited 0 (with --confusion: a
    broadcasting error)."""
    from gpunet.training import TrainConfig, fit
    fit(TrainConfig(dataset="spiral", hidden=(8,), epochs=1, device="cpu", progress=False, out=str(tmp_path)),
        log=lambda *_: None)
    extra = ["--confusion", tmp_path / "cm.png"] if confusion else []
    code, err = run_eval(capsys, tmp_path / "checkpoint.npz", "--dataset", "moons", *extra)
    assert code == 2 and "gives 3 classes; moons has 2 features and 2 classes (it was trained on spiral)" in err
    assert not (tmp_path / "cm.png").exists()
    code, err = run_eval(capsys, tmp_path / "checkpoint.npz")
    assert code == 0, err


def test_eval_of_a_model_of_other_inputs_is_an_error(tmp_path, capsys, no_model_built):
    path = eval_checkpoint(tmp_path / "ck.npz", [3, 8, 2], weights_of=(3, 8, 2))
    code, err = run_eval(capsys, path)
    assert code == 2 and "the model takes 3 input features and gives 2 classes; moons has 2 features" in err


def test_eval_of_a_model_trained_with_dropout(tmp_path, capsys):
    """Dropout layers shift the layers' indices (0, 3, 6 against 0, 2, 4): the weights go in by order."""
    from gpunet.training import TrainConfig, fit
    fit(TrainConfig(dataset="moons", hidden=(8, 8), dropout=0.2, epochs=1, batch_size=200, device="cpu",
                    progress=False, out=str(tmp_path)), log=lambda *_: None)
    assert set(load_checkpoint(tmp_path / "checkpoint.npz")[0]) == {f"{i}.{k}" for i in (0, 3, 6)
                                                                    for k in ("weight", "bias")}
    code, err = run_eval(capsys, tmp_path / "checkpoint.npz")
    assert code == 0, err


# The settings a checkpoint's config held before the settings were declared once (gpunet/training/settings.py)
# and --clip-grad-norm was added: what every checkpoint written until then holds.
CONFIG_BEFORE_CLIPPING = ("dataset", "data_root", "device", "hidden", "activation", "dropout", "optimizer", "lr",
                          "momentum", "weight_decay", "schedule", "batch_size", "epochs", "seed", "out", "resume",
                          "progress", "plot", "distributed", "save_every", "plot_boundary", "recipe")


def test_a_checkpoint_of_the_format_before_clipping_resumes_as_an_uninterrupted_run(tmp_path):
    """A checkpoint whose config lacks the settings added since (clip_grad_norm) resumes, and reaches the weights
    of an uninterrupted run; the settings it lacks take their defaults and are not compared."""
    from gpunet.training import TrainConfig, fit

    def config(out, epochs, **kw):
        return TrainConfig(dataset="moons", hidden=(8,), epochs=epochs, batch_size=50, optimizer="adam", lr=0.01,
                           schedule="constant", device="cpu", progress=False, out=str(out), **kw)

    fit(config(tmp_path / "straight", 4), log=lambda *_: None)
    fit(config(tmp_path / "old", 2), log=lambda *_: None)
    path = tmp_path / "old" / "checkpoint.npz"
    model_state, optim_state, meta = load_checkpoint(path)
    meta["config"] = {key: meta["config"][key] for key in CONFIG_BEFORE_CLIPPING}
    save_checkpoint(path, model_state, optim_state, meta)
    lines = []
    fit(config(tmp_path / "old", 4, resume=True), log=lines.append)
    assert f"resumed from {path} after epoch 2 (changed: epochs 2 -> 4)" in lines
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    resumed = load_checkpoint(path)
    for part in (0, 1):
        for key, value in straight[part].items():
            np.testing.assert_array_equal(resumed[part][key], value, err_msg=key)
    assert resumed[2]["epoch"] == 4 and resumed[2]["config"]["clip_grad_norm"] is None
