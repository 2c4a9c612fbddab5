import numpy as np
import pytest

from kcnn.backbones import build_backbone
from kcnn.export import export_saved_model, export_tflite, parity_report, tflite_predict
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


@pytest.mark.parametrize("quantization", ["fp16", "dynamic", "int8"])
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
