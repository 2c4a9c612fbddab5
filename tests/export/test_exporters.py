import itertools

import keras
import numpy as np
import pytest

from kcnn._quantization import in_float_scope
from kcnn.backbones import build_backbone
from kcnn.export import export_saved_model, export_tflite, parity_report, tflite_predict
from kcnn.layers import PartialConv2D, SmoothFill2D
from kcnn.models import PConvUNet
from kcnn.tasks import build_classifier


@pytest.fixture(scope="module")
def model():
    backbone = build_backbone("plain_cnn", input_shape=(12, 12, 1), filters=(4, 8))
    return build_classifier(backbone, num_classes=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((6, 12, 12, 1), dtype=np.float32)


def test_fp32_tflite_matches_keras(model, images, tmp_path):
    path = export_tflite(model, tmp_path / "model.tflite")
    np.testing.assert_allclose(
        tflite_predict(path, images), model.predict(images, verbose=0), atol=1e-5
    )
    report = parity_report(model, path, images)
    assert report["passed"] and report["max_abs_error"] <= 1e-5
    assert report["top1_agreement"] == 1.0
    assert report["file_bytes"] == path.stat().st_size


@pytest.mark.parametrize("inputs", ["one", "two"])
def test_tflite_is_converted_from_the_graph_model_export_writes(model, inputs, tmp_path):
    # `export_tflite` writes its own SavedModel, traced once (`write_raw_saved_model`): the
    # flatbuffer must be the one converted from Keras's `model.export`, byte for byte (a
    # SavedModel that did not restore the variables the graph reads would differ).
    if inputs == "two":
        model = _masked_model(PartialConv2D(4, 3, padding="same", name="pconv"))
    keras_saved_model = tmp_path / "keras_saved_model"
    model.export(str(keras_saved_model), format="tf_saved_model", verbose=False)
    expected = export_tflite(model, tmp_path / "keras.tflite", saved_model_dir=keras_saved_model)
    assert export_tflite(model, tmp_path / "own.tflite").read_bytes() == expected.read_bytes()


@pytest.mark.parametrize("quantization", ["fp16", "dynamic", "int8", "int16x8"])
def test_quantized_exports_run_and_stay_close(model, images, tmp_path, quantization):
    path = export_tflite(
        model, tmp_path / "model.tflite", quantization=quantization, representative_images=images
    )
    fp32 = export_tflite(model, tmp_path / "fp32.tflite")
    assert path.stat().st_size <= fp32.stat().st_size
    probabilities = tflite_predict(path, images)
    assert probabilities.shape == (6, 3)
    # Quantization perturbs a softmax over 3 classes by a small amount, not arbitrarily.
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=0.1)


def test_bad_quantization_and_failed_conversion_leave_the_old_file(model, tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous export")
    with pytest.raises(ValueError, match="`quantization` must be one of .* quantization='int4'"):
        export_tflite(model, target, quantization="int4")
    with pytest.raises(ValueError, match="needs `representative_images`"):
        export_tflite(model, target, quantization="int8")
    with pytest.raises(ValueError, match=r"`int8_io=True` .* Received: quantization='int16x8'"):
        export_tflite(model, target, quantization="int16x8", int8_io=True)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]  # no leftovers


def test_saved_model_export_replaces_the_folder_whole(model, images, tmp_path):
    import tensorflow as tf

    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export_saved_model(model, target)
    assert not (target / "stale.txt").exists()
    loaded = tf.saved_model.load(str(target))  # keep a reference: serve uses its variables
    served = loaded.serve(images)
    np.testing.assert_allclose(served, model.predict(images, verbose=0), atol=1e-5)


def test_litert_runs_a_large_batch_in_chunks_with_the_same_outputs(model, tmp_path, monkeypatch):
    """More samples than `LITERT_BATCH` (a partial last chunk included) give each sample's
    own output, in order, through both entry points; the interpreter never sees more than
    a chunk."""
    from kcnn.export import LiteRTRunner, exporters

    monkeypatch.setattr(exporters, "LITERT_BATCH", 4)
    images = np.random.default_rng(1).random((10, 12, 12, 1), dtype=np.float32)
    path = export_tflite(model, tmp_path / "model.tflite")
    runner = LiteRTRunner(path)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(runner(images), expected, atol=1e-5)
    assert runner._shape == (2, 12, 12, 1)  # the last chunk
    (outputs,) = runner.all_outputs(images).values()
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_in_float_scope_reads_tensorflow_and_tflite_names():
    assert in_float_scope("model_1/fill_1/keep_float/AvgPool")
    assert in_float_scope("keep_float/Sum")
    assert in_float_scope("model_1/pconv_1/keep_float_12/truediv")  # made unique by TF
    # A fused op joins the names of its parts; one under the scope is enough.
    assert in_float_scope("model_1/relu_1/Relu;model_1/pconv_1/keep_float_2/add")
    assert not in_float_scope("model_1/keep_floats/mul")
    assert not in_float_scope("model_1/keep_float_x/mul")
    assert not in_float_scope("model_1/conv_1/convolution")


def _op_outputs(path):
    """`(op name, output tensor name, output dtype)` of every op of a `.tflite` file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {tensor["index"]: tensor for tensor in interpreter.get_tensor_details()}
    return [
        (op["op_name"], tensors[op["outputs"][0]]["name"], tensors[op["outputs"][0]]["dtype"])
        for op in interpreter._get_ops_details()
    ]


def _masked_model(layer):
    """`[image, mask]` -> `layer` -> a 3x3 and a 1x1 convolution."""
    image = keras.Input((16, 16, 1), name="image")
    mask = keras.Input((16, 16, 1), name="mask")
    x = layer([image, mask])
    if isinstance(x, list | tuple):
        x = x[0]
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(x)
    return keras.Model([image, mask], keras.layers.Conv2D(1, 1, name="head")(x))


@pytest.fixture(scope="module")
def masked_inputs():
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 1, 16, dtype=np.float32)
    images = (ramp[:, None] * ramp[None, :])[None, :, :, None] + 0.1 * rng.random(
        (32, 16, 16, 1), dtype=np.float32
    )
    masks = (rng.random((32, 16, 16, 1)) > 0.4).astype(np.float32)
    return [images * masks, masks]


@pytest.mark.parametrize(
    "layer",
    [SmoothFill2D(iterations=8, coarse_iterations=4, name="fill"), "pconv"],
    ids=["smooth_fill", "partial_conv"],
)
def test_int8_keeps_the_float_scope_in_float32(layer, masked_inputs, tmp_path):
    keras.utils.set_random_seed(3)
    arithmetic = "DEPTHWISE_CONV_2D"
    if layer == "pconv":
        arithmetic = "DIV"
        # A multi-channel-free mask over a 5x5 window: counts from 1 to 25, which one int8
        # scale cannot divide by (LiteRT's int8 DIV failed on this model before).
        layer = PartialConv2D(4, 5, name="pconv")
    model = _masked_model(layer)
    path = export_tflite(
        model, tmp_path / "model.tflite", quantization="int8", representative_images=masked_inputs
    )
    ops = _op_outputs(path)
    # The scope's arithmetic (the fill's sweeps, the count's division) computes in float32;
    # QUANTIZE ops at its border are named after the tensor they quantize.
    scoped = {(op, dtype) for op, name, dtype in ops if in_float_scope(name) and op != "QUANTIZE"}
    assert (arithmetic, np.float32) in scoped and np.int8 not in {d for _, d in scoped}, scoped
    # Everything else that computes is int8: the two convolutions after the layer.
    convs = [dtype for op, name, dtype in ops if op == "CONV_2D" and not in_float_scope(name)]
    assert len(convs) >= 2 and all(dtype == np.int8 for dtype in convs), ops
    with pytest.raises(
        ValueError, match=r"has 2 inputs: `images` must be a dict .*'image', 'mask'"
    ):
        tflite_predict(path, masked_inputs)  # a list, as Keras would take it
    outputs = tflite_predict(path, dict(zip(("image", "mask"), masked_inputs, strict=True)))
    expected = model.predict(masked_inputs, verbose=0)
    error = np.abs(outputs - expected).max()
    assert error <= 0.05 * np.abs(expected).max(), error


def test_int16x8_keeps_multi_channel_partial_convolutions_close(masked_inputs, tmp_path):
    # Multi-channel masks, as PConvUNet's: the window count runs to k*k*C. With the count
    # taken over a channel sum, TFLite's 16x8 mode gave the sum its input's scale (at most
    # 1), which multiplied every renormalised output by up to C.
    keras.utils.set_random_seed(4)
    image = keras.Input((16, 16, 1), name="image")
    mask = keras.Input((16, 16, 1), name="mask")
    x, m = keras.layers.Concatenate()([image] * 3), keras.layers.Concatenate()([mask] * 3)
    x, m = PartialConv2D(8, 3, multi_channel=True, activation="relu", name="pconv1")([x, m])
    x, _ = PartialConv2D(4, 3, strides=2, multi_channel=True, name="pconv2")([x, m])
    model = keras.Model([image, mask], keras.layers.Conv2D(1, 1, name="head")(x))
    path = export_tflite(
        model,
        tmp_path / "model.tflite",
        quantization="int16x8",
        representative_images=masked_inputs,
    )
    ops = _op_outputs(path)
    assert any(dtype == np.int16 for op, _, dtype in ops if op == "CONV_2D"), ops
    outputs = tflite_predict(path, dict(zip(("image", "mask"), masked_inputs, strict=True)))
    expected = model.predict(masked_inputs, verbose=0)
    error = np.abs(outputs - expected).max()
    assert error <= 0.01 * np.abs(expected).max(), error


def _product_convolution_dtypes(path):
    """{layer: dtype} of each partial convolution's own product (`.../<layer>_1/convolution`;
    its window count's convolutions lie in the layer's own `keep_float` scope)."""
    dtypes = {}
    for op, name, dtype in _op_outputs(path):
        if op != "CONV_2D":
            continue
        for part, following in itertools.pairwise(name.split(";")[0].split("/")):
            if part.startswith(("encoder", "decoder", "output")) and following.startswith(
                "convolution"
            ):
                dtypes[part.rsplit("_", 1)[0]] = dtype
    return dtypes


@pytest.mark.parametrize("levels", [(0, 0), (1, 2)], ids=["all_int8", "float_levels"])
def test_pconv_unet_int8_keeps_its_float_levels_in_float32(levels, masked_inputs, tmp_path):
    # PConvUNet's float levels (here encoder1, and the output layer's level and decoder2's)
    # run under `keep_float()`: in the int8 file their partial convolutions compute in
    # float32, every other layer's in int8.
    keras.utils.set_random_seed(5)
    encoder, decoder = levels
    model = PConvUNet(
        (16, 16, 1), width=4, depth=3, float_encoder_levels=encoder, float_decoder_levels=decoder
    )
    path = export_tflite(
        model, tmp_path / "model.tflite", quantization="int8", representative_images=masked_inputs
    )
    float_layers = {"encoder1", "output", "decoder2"} if encoder else set()
    dtypes = _product_convolution_dtypes(path)
    assert set(dtypes) == {"encoder1", "encoder2", "encoder3", "decoder3", "decoder2", "output"}
    assert {layer for layer, dtype in dtypes.items() if dtype == np.float32} == float_layers
    assert {layer for layer, dtype in dtypes.items() if dtype == np.int8} == (
        set(dtypes) - float_layers
    )
