import keras
import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

from kcnn.detection.decode import DetectionDecoder, decode_detections
from kcnn.export import export_tflite


def sigmoid(values):
    return 1.0 / (1.0 + np.exp(-values))


def iou(box, others):
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    other_areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + other_areas - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def reference_decode(points, strides, raw, score_threshold, iou_threshold, max_detections, size):
    """Decode and greedy NMS run class by class, in float64, one image at a time."""
    raw = np.asarray(raw, np.float64)
    pixels = raw[..., :4] * np.asarray(strides, np.float64)[:, None]
    x, y = points[:, 0], points[:, 1]
    boxes = np.stack(
        [x - pixels[..., 0], y - pixels[..., 1], x + pixels[..., 2], y + pixels[..., 3]], -1
    )
    height, width = size
    boxes = np.clip(boxes, 0, [width, height, width, height])
    scores = sigmoid(raw[..., 4:].max(-1))
    classes = raw[..., 4:].argmax(-1)
    results = []
    for image in range(len(raw)):
        kept = []
        for index in np.argsort(-scores[image], kind="stable"):
            if scores[image, index] <= score_threshold or len(kept) == max_detections:
                break
            if np.any(boxes[image, index, 2:] <= boxes[image, index, :2]):
                continue  # zero width or height: no detection
            same_class = [k for k in kept if classes[image, k] == classes[image, index]]
            overlaps = iou(boxes[image, index], boxes[image, same_class].reshape(-1, 4))
            if not np.any(overlaps > iou_threshold):
                kept.append(index)
        results.append((boxes[image, kept], scores[image, kept], classes[image, kept]))
    return results


def check_against(decoded, expected, max_detections):
    boxes, scores, classes, count = (np.asarray(value) for value in decoded)
    assert boxes.shape == (len(expected), max_detections, 4)
    assert classes.dtype == np.int32 and count.dtype == np.int32
    for image, (want_boxes, want_scores, want_classes) in enumerate(expected):
        n = len(want_boxes)
        assert count[image] == n
        np.testing.assert_array_equal(classes[image, :n], want_classes)
        np.testing.assert_allclose(boxes[image, :n], want_boxes, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(scores[image, :n], want_scores, rtol=1e-5, atol=1e-6)
        # Padding rows.
        np.testing.assert_array_equal(boxes[image, n:], 0.0)
        np.testing.assert_array_equal(scores[image, n:], 0.0)
        np.testing.assert_array_equal(classes[image, n:], -1)


def test_matches_float64_greedy_per_class_nms():
    rng = np.random.default_rng(0)
    num_points, num_classes, size = 80, 3, (40, 56)
    points = rng.uniform([0, 0], [56, 40], (num_points, 2))
    strides = rng.choice([4.0, 8.0], num_points)
    raw = np.concatenate(
        [
            rng.uniform(0.2, 2.5, (4, num_points, 4)),
            rng.normal(-2, 2, (4, num_points, num_classes)),
        ],
        axis=-1,
    ).astype(np.float32)
    arguments = dict(score_threshold=0.6, iou_threshold=0.3, max_detections=25)

    decoded = decode_detections(points, strides, raw, num_classes, image_size=size, **arguments)
    expected = reference_decode(points, strides, raw, size=size, **arguments)

    check_against(decoded, expected, 25)
    counts = np.array([len(boxes) for boxes, _, _ in expected])
    candidates = (sigmoid(raw[..., 4:].max(-1)) > 0.6).sum(-1)
    # The case exercises suppression (not only the score threshold), the cap (an image with
    # more than 25 survivors), and padding (an image with fewer).
    assert np.sum(np.minimum(candidates, 25) - counts) >= 5
    assert counts.min() < 25 and counts.max() == 25


def test_hand_made_outputs_decode_to_pixel_boxes():
    points = np.array([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0]])
    strides = np.array([8.0, 8.0, 8.0])
    raw = np.array(
        [
            [
                # x_min = 4 - 0.25 * 8 = 2, y_min = 4 - 0.5 * 8 = 0, x_max = 4 + 6, y_max = 4 + 8
                [0.25, 0.5, 0.75, 1.0, -1.0, 2.0],
                # (12 - 4, 4 - 8, 12 + 8, 4 + 4) = (8, -4, 20, 8), clipped to the 16 x 16 image
                [0.5, 1.0, 1.0, 0.5, 1.0, -3.0],
                # score sigmoid(-4) = 0.018 is below the threshold
                [0.5, 0.5, 0.5, 0.5, -4.0, -5.0],
            ]
        ],
        np.float32,
    )
    boxes, scores, classes, count = decode_detections(
        points, strides, raw, num_classes=2, max_detections=4, image_size=16
    )
    assert np.asarray(count).tolist() == [2]
    np.testing.assert_allclose(np.asarray(boxes)[0, :2], [[2, 0, 10, 12], [8, 0, 16, 8]])
    np.testing.assert_allclose(np.asarray(scores)[0, :2], sigmoid(np.array([2.0, 1.0])), 1e-6)
    assert np.asarray(classes)[0].tolist() == [1, 0, -1, -1]


@pytest.mark.parametrize("image_size", [20, None])
def test_class_offset_keeps_overlapping_boxes_of_other_classes(image_size):
    # Three points share one box (IoU 1); the first two have class 0, the third class 1.
    points = np.array([[10.0, 10.0]] * 3)
    strides = np.ones(3)
    distances = np.full((3, 4), 5.0)
    logits = np.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    raw = np.concatenate([distances, logits], -1)[None].astype(np.float32)

    boxes, scores, classes, count = decode_detections(
        points, strides, raw, num_classes=2, max_detections=5, image_size=image_size
    )
    assert int(count[0]) == 2
    assert np.asarray(classes)[0, :2].tolist() == [0, 1]
    np.testing.assert_allclose(np.asarray(boxes)[0, :2], [[5, 5, 15, 15]] * 2)
    np.testing.assert_allclose(np.asarray(scores)[0, :2], sigmoid(np.array([3.0, 1.0])), 1e-6)


def test_max_detections_keeps_the_best_and_counts_per_image():
    # Five disjoint boxes in image 0, one in image 1 (the others score too low).
    points = np.stack([np.arange(5) * 10.0 + 5, np.full(5, 5.0)], -1)
    strides = np.ones(5)
    logits = np.array([[0.1, 3.0, 0.5, 2.0, 1.0], [-9, -9, 1.0, -9, -9]])[..., None]
    raw = np.concatenate([np.full((2, 5, 4), 4.0), logits], -1).astype(np.float32)

    boxes, scores, classes, count = decode_detections(
        points, strides, raw, num_classes=1, max_detections=3, image_size=(10, 50)
    )
    assert np.asarray(count).tolist() == [3, 1]
    np.testing.assert_allclose(np.asarray(scores)[0], sigmoid(np.array([3.0, 2.0, 1.0])), 1e-6)
    np.testing.assert_allclose(np.asarray(boxes)[0, :, 0], [11, 31, 41])
    np.testing.assert_allclose(np.asarray(boxes)[1], [[21, 1, 29, 9], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert np.asarray(classes).tolist() == [[0, 0, 0], [0, -1, -1]]


def tiny_detector(num_classes=3, max_detections=12):
    """image (32 x 32) -> one stride-8 level of 16 points -> DetectionDecoder."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    distances = keras.layers.Conv2D(4, 8, strides=8, activation="exponential")(inputs)
    logits = keras.layers.Conv2D(num_classes, 8, strides=8)(inputs)
    raw = keras.layers.Reshape((16, 4 + num_classes))(
        keras.layers.Concatenate()([distances, logits])
    )
    detections = DetectionDecoder(
        num_classes,
        32,
        strides=(8,),
        score_threshold=0.5,
        iou_threshold=0.2,
        max_detections=max_detections,
    )(raw)
    return keras.Model(inputs, detections)


def builtin_operator_names(tflite_path):
    model = flatbuffer_utils.read_model(str(tflite_path))
    names = {code: name for name, code in vars(tflite_schema.BuiltinOperator).items()}
    return {
        names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        for code in model.operatorCodes
        if not code.customCode
    }, [code.customCode for code in model.operatorCodes if code.customCode]


def test_model_with_decoder_converts_to_builtin_tflite_and_matches_keras(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_detector()
    images = np.random.default_rng(2).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    expected = model.predict(images, verbose=0)

    # export_tflite converts with supported_ops=[TFLITE_BUILTINS] only: a Flex op fails it.
    path = export_tflite(model, tmp_path / "detector.tflite")
    builtins, custom = builtin_operator_names(path)
    assert custom == []
    assert {"NON_MAX_SUPPRESSION_V5", "WHILE", "ARG_MAX", "REDUCE_MAX"} <= builtins

    interpreter = Interpreter(model_path=str(path))
    (signature,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(signature)
    (input_name,) = runner.get_input_details()
    outputs = runner(**{input_name: images})

    counts = np.asarray(expected["count"])
    assert 0 < counts.min() < 12  # detections, and padding rows
    np.testing.assert_array_equal(outputs["count"], counts)
    np.testing.assert_array_equal(outputs["classes"], expected["classes"])
    np.testing.assert_allclose(outputs["boxes"], expected["boxes"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(outputs["scores"], expected["scores"], rtol=1e-3, atol=1e-5)


def test_zero_area_boxes_are_dropped_and_litert_agrees(tmp_path):
    """LiteRT's NMS kernel re-selects a zero-area box (IoU 0 with itself) up to
    max_output_size times; TensorFlow's selects it once. The decoder drops such boxes."""
    from ai_edge_litert.interpreter import Interpreter

    num_classes, max_detections = 2, 10
    decoder = DetectionDecoder(num_classes, 32, strides=(8,), max_detections=max_detections)
    raw_input = keras.Input((16, 4 + num_classes), batch_size=1)
    model = keras.Model(raw_input, decoder(raw_input))
    rng = np.random.default_rng(4)
    raw = np.concatenate(
        [rng.uniform(0.3, 1.0, (1, 16, 4)), rng.normal(-3, 1, (1, 16, num_classes))], -1
    ).astype(np.float32)
    raw[0, :4, 4] = [3.0, 2.0, 1.0, 0.5]  # four real boxes of class 0
    raw[0, 4, [0, 2, 4]] = [0.0, 0.0, 6.0]  # zero width, the best score
    raw[0, 5, [1, 3, 5]] = [0.0, 0.0, 5.0]  # zero height, class 1
    raw[0, 6, [0, 1, 2, 3, 4]] = [0.0, 0.0, 0.0, 0.0, 4.0]  # a point
    points, strides = decoder._points, decoder._point_strides

    expected = reference_decode(points, strides, raw, 0.05, 0.5, max_detections, (32, 32))
    decoded = model.predict(raw, verbose=0)
    check_against(
        [decoded[name] for name in ("boxes", "scores", "classes", "count")],
        expected,
        max_detections,
    )
    assert 4 <= decoded["count"][0] < max_detections

    path = export_tflite(model, tmp_path / "decoder.tflite")
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (input_name,) = runner.get_input_details()
    outputs = runner(**{input_name: raw})
    np.testing.assert_array_equal(outputs["count"], decoded["count"])
    np.testing.assert_array_equal(outputs["classes"], decoded["classes"])
    np.testing.assert_allclose(outputs["boxes"], decoded["boxes"], rtol=1e-5, atol=1e-4)


def test_decoder_serializes_and_reloads_without_custom_objects(tmp_path):
    decoder = DetectionDecoder(4, (32, 64), strides=(8, 16), iou_threshold=0.6, max_detections=7)
    clone = DetectionDecoder.from_config(decoder.get_config())
    assert clone.get_config() == decoder.get_config()

    model = tiny_detector(max_detections=5)
    model.save(tmp_path / "detector.keras")
    reloaded = keras.saving.load_model(tmp_path / "detector.keras")
    images = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    reloaded_outputs = reloaded(images)
    assert isinstance(reloaded.layers[-1], DetectionDecoder)
    for name, value in model(images).items():
        np.testing.assert_array_equal(reloaded_outputs[name], value)


def test_bad_arguments_name_the_argument():
    points, strides = np.zeros((4, 2)), np.ones(4)
    raw = np.zeros((1, 4, 6), np.float32)
    with pytest.raises(ValueError, match=r"`raw` must have shape \(batch, N=4, 4 \+ num_classes=5"):
        decode_detections(points, strides, raw, num_classes=1)
    with pytest.raises(ValueError, match=r"`strides` must have shape \(N,\) with N=4"):
        decode_detections(points, np.ones(3), raw, num_classes=2)
    with pytest.raises(ValueError, match=r"`iou_threshold` must be a number in \[0, 1\]"):
        decode_detections(points, strides, raw, num_classes=2, iou_threshold=1.5)
    with pytest.raises(ValueError, match="`max_detections` must be a positive int"):
        decode_detections(points, strides, raw, num_classes=2, max_detections=0)
    with pytest.raises(ValueError, match="`image_size` must be None, a positive int"):
        decode_detections(points, strides, raw, num_classes=2, image_size=(3, 0))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 16, 6\)"):
        DetectionDecoder(2, 32, strides=(8,))(np.zeros((1, 16, 7), np.float32))
    with pytest.raises(ValueError, match="`image_size` is required"):
        DetectionDecoder(2, None)
