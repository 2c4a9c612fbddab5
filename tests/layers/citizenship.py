"""Checks every kcnn layer must pass to be a full Keras citizen.

Each check builds what it needs from a `model_fn` (a zero-argument function returning a fresh
functional model that uses the layer) and NumPy inputs, and compares against the plain Keras
forward pass, so a layer test only states what is special about its layer.
"""

import atexit
import json
import select
import subprocess
import sys
import tempfile
import textwrap
import time

import keras
import numpy as np
import tensorflow as tf

from kcnn.export import RAW_SIGNATURE, export_tflite


def as_list(values):
    return list(values) if isinstance(values, (list, tuple)) else [values]


def predict(model, inputs):
    return [np.asarray(value) for value in as_list(model(inputs, training=False))]


def assert_all_close(actual, expected, atol):
    actual, expected = as_list(actual), as_list(expected)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=atol, rtol=0)


def check_config_round_trip(layer):
    """`from_config(get_config())` gives a layer with the same config."""
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def check_keras_file_round_trip(model, inputs, tmp_path, atol=1e-6):
    """A `.keras` file reloads with no custom_objects and gives the same outputs."""
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert_all_close(predict(restored, inputs), predict(model, inputs), atol)


def check_saved_model_round_trip(model, inputs, tmp_path, atol=1e-5):
    """A SavedModel export serves the same outputs."""
    path = str(tmp_path / "saved_model")
    model.export(path, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(path)  # keep a reference: serve uses its variables
    arguments = [tf.constant(x) for x in as_list(inputs)]
    # A model built on a list of inputs exports a `serve` that takes that list as one argument.
    served = loaded.serve(arguments if len(model.inputs) > 1 else arguments[0])
    assert_all_close(served, predict(model, inputs), atol)


def check_jit_compile(model_fn, inputs, targets, atol=1e-5):
    """`jit_compile=True` predicts like the eager model and can take a training step."""
    model = model_fn()
    expected = predict(model, inputs)
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    actual = model.predict(inputs, verbose=0)
    assert_all_close(actual, expected, atol)
    loss = model.train_on_batch(inputs, targets)
    assert np.all(np.isfinite(loss))


def built_with_mixed_precision(build):
    """`build()` called under the `mixed_float16` policy, the previous policy put back."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def check_mixed_precision(model_fn, inputs, targets):
    """Under `mixed_float16` the layer computes in float16, keeps float32 weights, trains."""
    model = built_with_mixed_precision(model_fn)
    outputs = as_list(model(inputs, training=False))
    assert outputs[0].dtype == "float16"
    assert all(weight.dtype == "float32" for weight in model.trainable_weights)
    model.compile(optimizer="sgd", loss="mse")
    assert np.all(np.isfinite(model.train_on_batch(inputs, targets)))


def tflite_outputs(model, inputs, tmp_path):
    """Converts with TFLite builtin ops only and runs the stock LiteRT interpreter.

    Conversion fails (and so does the test) if any op would need Flex or a custom op.
    """
    from ai_edge_litert.interpreter import Interpreter

    # kcnn's converter: Keras's `serve` graph, builtin ops only.
    flatbuffer = export_tflite(model, tmp_path / "model.tflite").read_bytes()
    interpreter = Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner(RAW_SIGNATURE)
    signature_names = runner.get_input_details()
    # Named Keras inputs keep their names in the signature; unnamed ones are numbered.
    names = [tensor.name for tensor in model.inputs]
    if set(names) != set(signature_names):
        names = sorted(signature_names, key=_output_position)
    feeds = {name: np.asarray(x) for name, x in zip(names, as_list(inputs), strict=True)}
    results = runner(**feeds)
    return [results[name] for name in sorted(results, key=_output_position)], flatbuffer


def _output_position(name):
    digits = "".join(ch for ch in name.rsplit("_", 1)[-1] if ch.isdigit())
    return (int(digits) if digits else 0, name)


def check_tflite_builtins(model, inputs, tmp_path, atol=1e-5):
    """A model with the layer converts with builtin ops only and matches Keras in LiteRT."""
    outputs, flatbuffer = tflite_outputs(model, inputs, tmp_path)
    assert b"Flex" not in flatbuffer
    assert_all_close(outputs, predict(model, inputs), atol)


# One TensorFlow process with two logical CPUs serves every mirrored check of the session:
# each check used to pay a TensorFlow start-up (6-9 s on 2 cores) in its own subprocess.
# A check runs in a fresh namespace; a check that kills the process starts a new one.
MIRRORED_WORKER = """
import json, os, sys, traceback
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)
import keras
import kcnn
# One strategy for every check: a second MirroredStrategy in the process would reuse the
# collective instance keys of the first and fail with a shape mismatch.
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
for line in sys.stdin:
    namespace = {"np": np, "tf": tf, "keras": keras, "kcnn": kcnn, "mirrored": mirrored}
    try:
        exec(json.loads(line), namespace)
        reply = {"ok": True}
    except BaseException:
        reply = {"ok": False, "error": traceback.format_exc()[-3000:]}
    print(REPLY + json.dumps(reply), flush=True)
"""
MIRRORED_REPLY = "\x00MIRRORED "
MIRRORED_STEP = """
{setup}

def one_step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = model_fn()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss={loss})
    model.fit(inputs, targets, batch_size=len(targets), epochs=1, verbose=0, shuffle=False)
    return [np.asarray(w) for w in model.get_weights()]

single = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
multi = one_step(mirrored)
for a, b in zip(single, multi, strict=True):
    np.testing.assert_allclose(a, b, atol={atol})
"""
_worker = {}


def _mirrored_worker():
    process = _worker.get("process")
    if process is None or process.poll() is not None:
        log = tempfile.TemporaryFile("w+")
        source = f"REPLY = {MIRRORED_REPLY!r}\n" + MIRRORED_WORKER
        process = subprocess.Popen(
            [sys.executable, "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        atexit.register(process.kill)
        _worker.update(process=process, log=log)
    return process


def check_mirrored_strategy(setup, atol=1e-5, loss='"mse"'):
    """Trains one step with MirroredStrategy on 2 logical CPUs in another process.

    `setup` is Python source defining `model_fn()`, `inputs` and `targets` (global batch);
    `loss` is the Python expression of the loss to compile with, evaluated after `setup`.
    The updated weights must equal a one-device step on the same global batch.
    """
    script = MIRRORED_STEP.format(setup=textwrap.dedent(setup), atol=atol, loss=loss)
    process = _mirrored_worker()
    process.stdin.write(json.dumps(script) + "\n")
    process.stdin.flush()
    deadline = time.monotonic() + 300
    while True:
        ready, _, _ = select.select([process.stdout], [], [], max(deadline - time.monotonic(), 0))
        line = process.stdout.readline() if ready else ""
        if not line:  # timed out, or the worker died
            process.kill()
            _worker["log"].seek(0)
            raise AssertionError(
                "mirrored worker gave no answer:\n" + _worker["log"].read()[-3000:]
            )
        if line.startswith(MIRRORED_REPLY):
            reply = json.loads(line[len(MIRRORED_REPLY) :])
            assert reply["ok"], reply.get("error")
            return
