import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.data import irregular_masks, load_inpainting_data
from kcnn.tasks import (
    TASKS,
    HoleL1,
    InpaintingLoss,
    PeakSignalToNoiseRatio,
    StructuralSimilarity,
    inpainting_loss,
    inpainting_scores,
)
from kcnn.tasks.inpainting import (
    area_bucket_names,
    gram_matrix,
    perceptual_term,
    style_term,
    vgg16_feature_extractor,
)
from kcnn.training import config_from_dict, evaluate, train

from ..layers import citizenship

RNG = np.random.default_rng(0)


def target(truth, mask):
    return np.concatenate([truth, mask], axis=-1).astype(np.float32)


def random_case(batch=2, height=6, width=7, channels=3):
    truth = RNG.random((batch, height, width, channels))
    output = RNG.normal(0.5, 0.4, (batch, height, width, channels))
    mask = (RNG.random((batch, height, width, 1)) > 0.4).astype(np.float64)
    return truth, output, mask


def tv_reference(comp, mask):
    """Eq. (6) of Liu et al. with loops: pairs of neighbours both in the dilated hole."""
    batch, height, width, channels = comp.shape
    hole = 1 - mask[..., 0]
    region = np.zeros_like(hole)
    for i in range(height):
        for j in range(width):
            region[:, i, j] = hole[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].max(axis=(1, 2))
    total = np.zeros(batch)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                if j + 1 < width and region[b, i, j] and region[b, i, j + 1]:
                    total[b] += np.abs(comp[b, i, j + 1] - comp[b, i, j]).sum()
                if i + 1 < height and region[b, i, j] and region[b, i + 1, j]:
                    total[b] += np.abs(comp[b, i + 1, j] - comp[b, i, j]).sum()
    return total / (height * width * channels)


def test_valid_hole_and_tv_terms_by_hand():
    # One grey 1x3 image, the middle pixel a hole: every number below is worked by hand.
    truth = np.array([[[[0.2], [0.4], [0.6]]]])
    mask = np.array([[[[1.0], [0.0], [1.0]]]])
    output = np.array([[[[0.5], [0.1], [0.6]]]])
    terms = InpaintingLoss().terms(target(truth, mask), output.astype(np.float32))
    # valid: (|0.5 - 0.2| + |0.6 - 0.6|) / 3 elements; hole: |0.1 - 0.4| / 3.
    assert float(terms["valid"][0]) == pytest.approx(0.1, abs=1e-6)
    assert float(terms["hole"][0]) == pytest.approx(0.1, abs=1e-6)
    # comp = [0.2, 0.1, 0.6]; the dilated hole covers all 3 pixels: (0.1 + 0.5) / 3.
    assert float(terms["tv"][0]) == pytest.approx(0.2, abs=1e-6)
    loss = InpaintingLoss()(target(truth, mask), output.astype(np.float32))
    assert float(loss) == pytest.approx(0.1 + 6 * 0.1 + 0.1 * 0.2, abs=1e-6)
    # psnr: the composite's squared error (0.1 - 0.4)^2 / 3 = 0.03, in bels: log10(0.03).
    assert float(terms["psnr"][0]) == pytest.approx(np.log10(0.03), abs=1e-5)
    loss = InpaintingLoss(psnr_weight=2.0)(target(truth, mask), output.astype(np.float32))
    assert float(loss) == pytest.approx(0.72 + 2 * np.log10(0.03), abs=1e-5)


def test_terms_match_numpy_on_random_images():
    truth, output, mask = random_case()
    terms = InpaintingLoss().terms(target(truth, mask), output.astype(np.float32))
    error = np.abs(output - truth)
    np.testing.assert_allclose(terms["valid"], (mask * error).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(terms["hole"], ((1 - mask) * error).mean(axis=(1, 2, 3)), rtol=1e-5)
    comp = mask * truth + (1 - mask) * output
    np.testing.assert_allclose(terms["tv"], tv_reference(comp, mask), rtol=1e-5)
    # The PSNR term is minus the per-image PSNR (peak 1), in bels.
    psnr = 10 * np.log10(1 / ((comp - truth) ** 2).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(-10 * np.asarray(terms["psnr"]), psnr, rtol=1e-5)
    weights = {"valid_weight": 0.5, "hole_weight": 3.0, "tv_weight": 2.0, "psnr_weight": 0.1}
    loss = InpaintingLoss(**weights)(target(truth, mask), output.astype(np.float32))
    expected = 0.5 * terms["valid"] + 3.0 * terms["hole"] + 2.0 * terms["tv"] + 0.1 * terms["psnr"]
    assert float(loss) == pytest.approx(float(np.mean(expected)), rel=1e-5)
    config = InpaintingLoss(**weights).get_config()
    assert InpaintingLoss.from_config(config).psnr_weight == 0.1
    assert inpainting_loss({"hole": 1.0, "psnr": 0.5}).psnr_weight == 0.5


def test_tv_ignores_pairs_outside_the_dilated_hole():
    comp = RNG.random((1, 8, 8, 2))
    mask = np.ones((1, 8, 8, 1))
    mask[0, 3, 3] = 0.0
    terms = InpaintingLoss().terms(target(comp, mask), comp.astype(np.float32))
    changed = comp.copy()
    changed[0, 6:, :] = RNG.random((2, 8, 2))  # far from the hole
    again = InpaintingLoss().terms(target(changed, mask), changed.astype(np.float32))
    assert float(terms["tv"][0]) == pytest.approx(float(again["tv"][0]), abs=1e-7)
    assert float(terms["tv"][0]) == pytest.approx(tv_reference(comp, mask)[0], rel=1e-5)


def gram_reference(features):
    batch, height, width, channels = features.shape
    flat = features.reshape(batch, -1, channels)
    return np.einsum("bnc,bnd->bcd", flat, flat) / (height * width * channels)


def test_perceptual_and_style_terms_match_numpy():
    shapes = [(2, 8, 8, 4), (2, 4, 4, 6)]
    out, comp, truth = ([RNG.random(s).astype(np.float32) for s in shapes] for _ in range(3))
    np.testing.assert_allclose(gram_matrix(out[1]), gram_reference(out[1]), rtol=1e-5)
    expected = sum(
        np.abs(o - t).mean(axis=(1, 2, 3)) + np.abs(c - t).mean(axis=(1, 2, 3))
        for o, c, t in zip(out, comp, truth, strict=True)
    )
    np.testing.assert_allclose(perceptual_term(out, comp, truth), expected, rtol=1e-5)
    expected = sum(
        np.abs(gram_reference(o) - gram_reference(t)).mean(axis=(1, 2))
        for o, t in zip(out, truth, strict=True)
    )
    np.testing.assert_allclose(style_term(out, truth), expected, rtol=1e-5)


def test_perceptual_and_style_terms_use_local_vgg16_weights(tmp_path):
    path = tmp_path / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None).save_weights(path)
    loss = InpaintingLoss(perceptual_weight=0.05, style_weight=120.0, vgg16_weights=str(path))
    truth, output, mask = random_case(height=32, width=32)
    y_true, y_pred = target(truth, mask), output.astype(np.float32)
    terms = loss.terms(y_true, y_pred)
    extractor = vgg16_feature_extractor(path)
    comp = (mask * truth + (1 - mask) * output).astype(np.float32)

    def features(images):
        bgr = images[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])
        return [np.asarray(f, np.float64) for f in extractor(bgr.astype(np.float32))]

    f_out, f_comp, f_truth = features(y_pred), features(comp), features(truth)
    expected = sum(
        np.abs(o - t).mean(axis=(1, 2, 3)) + np.abs(c - t).mean(axis=(1, 2, 3))
        for o, c, t in zip(f_out, f_comp, f_truth, strict=True)
    )
    np.testing.assert_allclose(terms["perceptual"], expected, rtol=1e-4)
    total = (
        terms["valid"]
        + 6 * terms["hole"]
        + 0.1 * terms["tv"]
        + 0.05 * terms["perceptual"]
        + 120 * (terms["style_out"] + terms["style_comp"])
    )
    assert float(loss(y_true, y_pred)) == pytest.approx(float(np.mean(total)), rel=1e-5)
    restored = InpaintingLoss.from_config(loss.get_config())
    assert float(restored(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-6)


def test_config_loss_skips_perceptual_and_style_without_weights(caplog):
    with caplog.at_level(logging.WARNING, logger="kcnn.tasks.inpainting_loss"):
        loss = inpainting_loss({"valid": 1, "hole": 6, "tv": 0.1, "perceptual": 0.05, "style": 120})
    assert "perceptual (0.05) and style (120) terms are skipped" in caplog.text
    assert (loss.perceptual_weight, loss.style_weight, loss.hole_weight) == (0.0, 0.0, 6.0)
    with pytest.raises(ValueError, match=r"Unknown inpainting loss key\(s\) \['holes'\]"):
        inpainting_loss({"holes": 6})
    with pytest.raises(ValueError, match="need a local VGG-16 weights file `vgg16_weights`"):
        InpaintingLoss(style_weight=1.0)
    with pytest.raises(ValueError, match="`hole_weight` must be a number >= 0"):
        InpaintingLoss(hole_weight=-1)
    with pytest.raises(FileNotFoundError, match="VGG-16 weights file not found"):
        inpainting_loss({"perceptual": 0.05, "vgg16_weights": "/nonexistent/vgg16.h5"})


def test_metrics_score_the_composited_result():
    truth, output, mask = random_case(batch=3, height=16, width=16)
    y_true = target(truth, mask)
    comp = mask * truth + (1 - mask) * np.clip(output, 0, 1)
    metrics = [PeakSignalToNoiseRatio(), StructuralSimilarity(), HoleL1()]
    for metric in metrics:
        metric.update_state(y_true, output.astype(np.float32))
    psnr, ssim, hole_l1 = (float(m.result()) for m in metrics)
    assert psnr == pytest.approx(float(np.mean(tf.image.psnr(comp, truth, 1.0))), rel=1e-5)
    assert ssim == pytest.approx(float(np.mean(tf.image.ssim(comp, truth, 1.0))), rel=1e-5)
    hole = np.broadcast_to(1 - mask, truth.shape)
    per_image = (hole * np.abs(comp - truth)).sum(axis=(1, 2, 3)) / hole.sum(axis=(1, 2, 3))
    assert hole_l1 == pytest.approx(per_image.mean(), rel=1e-5)
    scores = inpainting_scores(truth, comp, mask)
    np.testing.assert_allclose(scores["hole_l1"], per_image, rtol=1e-5)
    # What the output holds at valid pixels changes nothing.
    elsewhere = output + mask * 7.0
    again = HoleL1()
    again.update_state(y_true, elsewhere.astype(np.float32))
    assert float(again.result()) == pytest.approx(hole_l1, rel=1e-6)
    # A perfect result is capped at 100 dB rather than infinite.
    perfect = PeakSignalToNoiseRatio()
    perfect.update_state(y_true, truth.astype(np.float32))
    assert float(perfect.result()) == pytest.approx(100.0)


def test_area_buckets_of_masks():
    masks = np.ones((4, 10, 10, 1))
    masks[1, :1] = 0  # 10%: the 10-20% bucket starts at 10%
    masks[2, :3, :5] = 0  # 15%
    masks[3, :7] = 0  # 70%
    assert area_bucket_names(masks) == ["0-10%", "10-20%", "10-20%", "60-100%"]


def test_one_step_under_mirrored_strategy_matches_one_device():
    citizenship.check_mirrored_strategy(
        """
        from kcnn.data import irregular_masks
        from kcnn.models import PConvUNet
        from kcnn.tasks import InpaintingLoss
        from kcnn.training.trainer import synchronize_batch_norm

        def model_fn():
            model = PConvUNet((32, 32, 3), width=4, depth=3)
            synchronize_batch_norm(model)
            return model

        rng = np.random.default_rng(0)
        masks = irregular_masks(4, 32, (0.1, 0.5)).astype(np.float32)
        images = rng.random((4, 32, 32, 3), dtype=np.float32)
        inputs = [images * masks, masks]
        targets = np.concatenate([images, masks], axis=-1)
        """,
        loss="InpaintingLoss()",
        atol=2e-5,
    )


def test_train_writes_the_run_folder_and_real_metrics(tmp_path):
    args = {"train_crops_per_photo": 6, "test_crops_per_photo": 3, "mask_pool_size": 24}
    args["collection"] = "skimage"  # the 12 bundled photos: a small, quick data set
    config = config_from_dict(
        {
            "name": "inpaint_test",
            "task": "inpainting",
            "output_dir": str(tmp_path),
            "data": {"name": "photos", "args": args, "image_size": 32, "batch_size": 8},
            "model": {"name": "pconv_unet", "args": {"width": 4, "depth": 3}},
            "train": {"epochs": 2, "loss": {"valid": 1.0, "hole": 6.0, "tv": 0.1}},
            "export": {"parity_samples": 4},
        }
    )
    run_dir = train(config, verbose=0)
    for name in ("model.keras", "metrics.json", "predictions.png", "curves.png", "model.tflite"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "saved_model").is_dir() and any((run_dir / "logs").iterdir())
    history = (run_dir / "history.csv").read_text().splitlines()[0]
    assert {"psnr", "ssim", "hole_l1", "val_psnr", "loss"} <= set(history.split(","))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Recompute the scores independently from the saved model and the held-out photos.
    data = load_inpainting_data("photos", image_size=32, **args)
    model = keras.saving.load_model(run_dir / "model.keras")
    masks = data.y_test.astype(np.float32)
    truth = data.x_test / np.float32(255)
    output = np.clip(model.predict([truth * masks, masks], verbose=0), 0, 1)
    scores = inpainting_scores(truth, masks * truth + (1 - masks) * output, masks)
    assert metrics["psnr"] == pytest.approx(float(scores["psnr"].mean()), rel=1e-5)
    assert metrics["hole_l1"] == pytest.approx(float(scores["hole_l1"].mean()), rel=1e-5)
    assert sorted(metrics["per_bucket"]) == [
        "0-10%",
        "10-20%",
        "20-30%",
        "30-40%",
        "40-50%",
        "50-60%",
    ]
    assert metrics["per_bucket"]["0-10%"]["images"] == 2
    report = json.loads((run_dir / "export_report.json").read_text())
    assert report["tflite"]["none"]["passed"] and report["tflite"]["none"]["max_abs_error"] <= 1e-4
    assert "top1_agreement" not in report["tflite"]["none"]
    assert evaluate(run_dir)["psnr"] == pytest.approx(metrics["psnr"], rel=1e-6)
    assert TASKS["inpainting"].summary(metrics).startswith("test PSNR")


def test_masks_of_a_batch_are_independent_of_its_images():
    masks = irregular_masks(3, image_size=16, area_range=(0.2, 0.3), seed=9)
    inputs = TASKS["inpainting"].model_inputs(np.full((3, 16, 16, 3), 255, np.uint8), masks)
    np.testing.assert_array_equal(inputs[0][..., 0], masks[..., 0])
    np.testing.assert_array_equal(inputs[1], masks)
