"""Bad input and abuse through the `kcnn` command: one clear line, the right exit status, and
nothing a user had lost.

Each case runs the CLI in a temporary folder (in this process, through `kcnn.cli.main`, or
in a real process where a signal or a second process is part of the case) and checks the
exit status, that the message names the key or file, that nothing was written outside the
places a run may write, and that every file of a finished run is byte-identical afterwards.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml

from kcnn.cli import main
from kcnn.training import load_config
from kcnn.training.checkpoint import latest_checkpoint, restore
from kcnn.training.run_folder import RunLock

from .checkpoints import checkpointed_model

CONFIG = {
    "name": "abuse",
    "task": "classification",
    "data": {"name": "digits", "batch_size": 64, "validation_fraction": 0.1},
    "model": {"backbone_args": {"filters": [4, 8], "convs_per_level": 1}},
    "train": {"epochs": 1, "learning_rate": 0.003, "steps_per_epoch": 3},
    "export": {"formats": []},
}


def _config(tmp_path, values=None, text=None, name="config.yaml"):
    path = tmp_path / name
    if text is None:
        values = json.loads(json.dumps(CONFIG)) if values is None else values
        values.setdefault("output_dir", str(tmp_path / "runs"))
        text = yaml.safe_dump(values)
    path.write_text(text, encoding="utf-8")
    return path


def _tree(root):
    """{relative path: sha256} of every file under `root`."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _run(capsys, *arguments):
    status = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (trained for 3 steps) and the config that made it."""
    tmp_path = tmp_path_factory.mktemp("finished")
    config = _config(tmp_path)
    assert main(["train", str(config)]) == 0
    return tmp_path, config, tmp_path / "runs" / "abuse"


CONFIG_CASES = {
    "empty file": ("", [], "is empty"),
    "only comments": ("# name: x\n", [], "is empty"),
    "negative steps_per_epoch": (None, ["train.steps_per_epoch=-5"], "train.steps_per_epoch"),
    "zero steps_per_epoch": (None, ["train.steps_per_epoch=0"], "train.steps_per_epoch"),
    "negative warmup": (None, ["train.warmup_epochs=-2"], "train.warmup_epochs"),
    "no parity samples": (None, ["export.parity_samples=0"], "export.parity_samples"),
    "no training images": (None, ["data.validation_fraction=0.999"], "validation_fraction"),
    "name with a path": (None, ["name=../escape"], "`name` must be a plain folder name"),
    "absolute name": (None, ["name=/tmp/escape"], "`name` must be a plain folder name"),
    "empty name": (None, ["name=''"], "`name` must be a plain folder name"),
    "malformed override": (None, ["train.epochs=[1"], "Override `train.epochs`"),
    "unknown key": (None, ["train.epochz=3"], "Unknown config key `train.epochz`"),
    "divergence factor below 1": (None, ["train.divergence_factor=0.5"], "divergence_factor"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    text, overrides, expected = CONFIG_CASES[case]
    config = _config(tmp_path, text=text)
    before = _tree(tmp_path)
    arguments = ["train", config]
    for override in overrides:
        arguments += ["-o", override]
    status, error = _run(capsys, *arguments)
    assert status == 2
    assert expected in error and len(error.strip().splitlines()) == 1, error
    assert _tree(tmp_path) == before  # no run folder, nothing outside
    assert not (tmp_path.parent / "escape").exists()


def test_numbers_in_exponent_notation_are_accepted(tmp_path):
    config = _config(tmp_path, text=yaml.safe_dump({**CONFIG}).replace("0.003", "3e-3"))
    assert load_config(config).train.learning_rate == pytest.approx(0.003)
    assert load_config(config, ["train.learning_rate=1e-3"]).train.learning_rate == 0.001


def test_run_dir_on_a_finished_run_refuses_and_keeps_every_file(finished, capsys):
    tmp_path, config, run_dir = finished
    before = _tree(tmp_path)
    status, error = _run(
        capsys, "train", config, "-o", "train.learning_rate=0.00001", "--run-dir", run_dir
    )
    assert status == 2
    assert "holds a trained run" in error and "kcnn evaluate" in error, error
    assert _tree(tmp_path) == before


def test_a_second_run_of_a_finished_experiment_goes_to_a_new_folder(finished, capsys):
    tmp_path, config, run_dir = finished
    before = _tree(run_dir)
    assert _run(capsys, "train", config)[0] == 0
    assert (run_dir.with_name("abuse-2") / "metrics.json").is_file()
    assert _tree(run_dir) == before


def test_a_truncated_model_file_is_named(finished, capsys, tmp_path):
    _, _, run_dir = finished
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.yaml", "model.keras"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    data = (copy / "model.keras").read_bytes()
    (copy / "model.keras").write_bytes(data[: len(data) // 2])
    status, error = _run(capsys, "evaluate", copy)
    assert status == 2 and "model.keras is not a readable Keras model file" in error, error


def test_explain_into_an_existing_folder_is_refused(finished, capsys, tmp_path):
    _, _, run_dir = finished
    image = tmp_path / "digit.png"
    keras.utils.save_img(image, np.zeros((8, 8, 1), np.uint8), scale=False)
    out = tmp_path / "out"
    out.mkdir()
    arguments = ["explain", run_dir, "--image", image, "--method", "saliency", "--output", out]
    status, error = _run(capsys, *arguments)
    assert status == 2 and "`--output`" in error and "is a folder" in error, error
    assert not out.with_suffix(".png").exists() and not list(out.iterdir())


def test_an_unfinished_run_of_another_experiment_is_left_alone(tmp_path, capsys):
    config = _config(tmp_path)
    run_dir = tmp_path / "runs" / "abuse"
    run_dir.mkdir(parents=True)
    other = json.loads(json.dumps(CONFIG))
    other["model"]["backbone_args"]["filters"] = [8, 8]
    other["output_dir"] = str(tmp_path / "runs")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    (run_dir / "backup").mkdir()
    before = _tree(run_dir)
    status, error = _run(capsys, "train", config, "--run-dir", run_dir)
    assert status == 2 and "unfinished run of another experiment" in error, error
    assert "model.backbone_args.filters" in error
    assert _tree(run_dir) == before
    # Without --run-dir the experiment trains in the next free folder.
    assert _run(capsys, "train", config)[0] == 0
    assert (run_dir.with_name("abuse-2") / "metrics.json").is_file()
    assert _tree(run_dir) == before


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    config = _config(tmp_path)
    run_dir = tmp_path / "runs" / "abuse"
    with RunLock(run_dir):
        status, error = _run(capsys, "train", config, "--run-dir", run_dir)
        assert status == 2 and "is in use by another kcnn run" in error, error
        assert f"pid {os.getpid()}" in error
        assert not (run_dir / "config.yaml").exists()
    # A lock file left by a process that died (no one holds the lock) does not stop a run.
    (run_dir / RunLock.FILE).write_text("pid 999999 on a crashed host")
    assert _run(capsys, "train", config, "--run-dir", run_dir)[0] == 0
    assert (run_dir / "metrics.json").is_file() and not (run_dir / RunLock.FILE).exists()


def _checkpoints(tmp_path):
    model, checkpoint, first = checkpointed_model(tmp_path / "backup")
    model.set_weights([w + 1.0 for w in first])
    checkpoint.save(2)
    return model, checkpoint, first


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    model, _, first = _checkpoints(tmp_path)
    backup = tmp_path / "backup"
    assert sorted(p.name for p in backup.iterdir()) == [
        "latest.json",
        "step-00000001",
        "step-00000002",
    ]
    state = backup / "step-00000002" / "state.weights.h5"
    state.write_bytes(state.read_bytes()[:100])
    messages = []
    model.set_weights([w * 0.0 for w in first])
    record = restore(model, backup, log=messages.append)
    assert record["step"] == 1
    assert "step-00000002" in messages[0] and "step-00000001" in messages[0], messages
    for got, want in zip(model.get_weights(), first, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in backup.iterdir()) == ["latest.json", "step-00000001"]
    assert json.loads((backup / "latest.json").read_text())["folder"] == "step-00000001"


def test_a_damaged_pointer_file_falls_back_and_no_readable_checkpoint_is_named(tmp_path):
    model, _, _ = _checkpoints(tmp_path)
    backup = tmp_path / "backup"
    (backup / "latest.json").write_text('{"step": 2, "folder"')
    messages = []
    assert latest_checkpoint(backup, log=messages.append)["step"] == 2
    assert "latest.json is damaged" in messages[0], messages
    for folder in backup.glob("step-*"):
        (folder / "state.weights.h5").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=r"No readable checkpoint in .*backup.*latest.json"):
        restore(model, backup)
    assert len(list(backup.glob("step-*"))) == 2  # nothing deleted on the way


def test_a_diverged_step_discards_the_checkpoint_whose_weights_diverged(tmp_path, capsys):
    values = json.loads(json.dumps(CONFIG))
    values["train"].update(
        {"learning_rate": 1.0e30, "schedule": "constant", "optimizer": "sgd", "epochs": 2}
    )
    values["train"].pop("steps_per_epoch")
    values["runtime"] = {"checkpoint_every_steps": 1}
    config = _config(tmp_path, values)
    run_dir = tmp_path / "run"
    status, error = _run(capsys, "train", config, "--run-dir", run_dir)
    assert status == 1 and "at step" in error, error
    step = int(error.split("at step ")[1].split(" ")[0])
    record = latest_checkpoint(run_dir / "backup")
    if step > 2:
        # The weights of step - 1 produced the bad loss: the checkpoint kept is the one before.
        assert record["step"] == step - 2
        assert f"The checkpoint of step {step - 2}" in error
    else:
        assert record is None and "No checkpoint was kept" in error
    assert not (run_dir / "model.keras").exists()


def test_a_finite_explosion_stops_like_a_nan(tmp_path, capsys):
    values = json.loads(json.dumps(CONFIG))
    values["train"].update({"learning_rate": 1.0e6, "schedule": "constant", "epochs": 3})
    values["train"].pop("steps_per_epoch")
    config = _config(tmp_path, values)
    status, error = _run(capsys, "train", config, "--run-dir", tmp_path / "run")
    assert status == 1, error
    assert "diverged" in error or "became" in error, error
    assert "No checkpoint was kept" in error or "is kept in" in error


def test_ctrl_c_exits_130_and_says_the_run_resumes(tmp_path):
    values = json.loads(json.dumps(CONFIG))
    values["train"].update({"epochs": 50})
    values["train"].pop("steps_per_epoch")
    values["runtime"] = {"checkpoint_every_steps": 5}
    config = _config(tmp_path, values)
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "kcnn.cli", "train", str(config), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        # A process started with SIGINT ignored (a pytest-xdist worker, `nohup`) passes that
        # on; the user's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while latest_checkpoint(run_dir / "backup") is None and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error[-2000:]
    assert "interrupted at step" in error and "run the same command to resume" in error
    assert "Traceback" not in error, error[-2000:]
    assert latest_checkpoint(run_dir / "backup") is not None
    assert not (run_dir / RunLock.FILE).exists()


def _coco(tmp_path, bbox, file_name="a.png"):
    images = tmp_path / "images"
    images.mkdir()
    keras.utils.save_img(images / "a.png", np.zeros((8, 8, 3), np.uint8), scale=False)
    annotations = tmp_path / "annotations.json"
    annotations.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": file_name, "height": 8, "width": 8}],
                "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": bbox}],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    return annotations, images


def test_coco_boxes_that_are_not_four_numbers_name_the_image_file(tmp_path):
    from kcnn.data import load_coco_detection

    annotations, images = _coco(tmp_path, 7)
    with pytest.raises(ValueError, match=r"annotation 5 for image file .*a.png.* 4 numbers"):
        load_coco_detection(annotations, images)


def test_coco_file_names_outside_the_image_folder_are_refused(tmp_path):
    from kcnn.data import load_coco_detection

    (tmp_path / "secret.png").write_bytes(b"")
    annotations, images = _coco(tmp_path, [1, 1, 2, 2], file_name="../secret.png")
    with pytest.raises(ValueError, match=r"'\.\./secret\.png'.*outside the image folder"):
        load_coco_detection(annotations, images)
