import json
import re

import numpy as np
import PIL.Image
import pytest
from pycocotools.coco import COCO

from kcnn.data import (
    load_coco_detection,
    load_image_folder,
    load_segmentation_folders,
    read_image,
)


def save(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, **kwargs)


def random_image(seed, height=6, width=5):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def quoted(path):
    return re.escape(f"'{path}'")


# ---------------------------------------------------------------------------- image folders


def test_image_folder_reads_classes_in_sorted_order(tmp_path):
    cat_0, cat_1, dog_0 = random_image(0), random_image(1), random_image(2)
    save(tmp_path / "dog" / "z.png", dog_0)
    save(tmp_path / "cat" / "b.bmp", cat_1)
    save(tmp_path / "cat" / "a.png", cat_0)
    save(tmp_path / "cat" / "c.gif", np.full((6, 5, 3), 200))  # One colour survives GIF's palette.
    save(tmp_path / "dog" / "y.jpg", np.full((6, 5, 3), 90), quality=95)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("a file at the root is not a class")

    images, labels, class_names = load_image_folder(tmp_path)

    assert class_names == ("cat", "dog")
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1])
    assert images.shape == (5, 6, 5, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images[0], cat_0)  # a.png
    np.testing.assert_array_equal(images[1], cat_1)  # b.bmp
    np.testing.assert_array_equal(images[2], np.full((6, 5, 3), 200))  # c.gif
    assert np.abs(images[3].astype(int) - 90).max() <= 2  # y.jpg, lossy
    np.testing.assert_array_equal(images[4], dog_0)  # z.png


def test_image_folder_resize_and_grayscale(tmp_path):
    save(tmp_path / "a" / "0.png", np.full((10, 20, 3), 50))
    save(tmp_path / "b" / "0.png", np.full((7, 7, 3), [255, 0, 0]))

    images, _, _ = load_image_folder(tmp_path, image_size=(4, 8), color_mode="grayscale")

    assert images.shape == (2, 4, 8, 1)
    np.testing.assert_array_equal(images[0], 50)
    # ITU-R 601-2 luma of pure red: 255 * 299 / 1000 = 76.2
    np.testing.assert_array_equal(images[1], 76)


def test_image_folder_size_mismatch_names_the_file(tmp_path):
    save(tmp_path / "a" / "0.png", np.zeros((6, 5, 3)))
    save(tmp_path / "a" / "1.png", np.zeros((6, 5, 3)))
    save(tmp_path / "b" / "0.png", np.zeros((5, 6, 3)))
    pattern = (
        quoted(tmp_path / "b" / "0.png")
        + r" has size 5x6 \(HxW\) but "
        + quoted(tmp_path / "a" / "0.png")
        + " has 6x5"
    )
    with pytest.raises(ValueError, match=pattern):
        load_image_folder(tmp_path)


def test_image_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=r"`directory` directory " + quoted(missing)):
        load_image_folder(missing)

    with pytest.raises(ValueError, match=quoted(tmp_path) + " has no class subfolders"):
        load_image_folder(tmp_path)

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("x")
    with pytest.raises(
        ValueError, match="Class folder " + quoted(tmp_path / "cat") + " holds no images"
    ):
        load_image_folder(tmp_path)

    save(tmp_path / "cat" / "good.png", np.zeros((4, 4, 3)))
    (tmp_path / "cat" / "bad.png").write_bytes(b"this is not a png at all")
    with pytest.raises(
        ValueError, match="Could not read image file " + quoted(tmp_path / "cat" / "bad.png")
    ):
        load_image_folder(tmp_path)

    with pytest.raises(ValueError, match=r"`color_mode` must be one of \('rgb', 'grayscale'\)"):
        load_image_folder(tmp_path, color_mode="rgba")


def test_truncated_image_is_reported(tmp_path):
    path = tmp_path / "cut.png"
    save(path, random_image(0, 32, 32))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="Could not read image file " + quoted(path)):
        read_image(path)


# ---------------------------------------------------------------------------- segmentation


def save_mask(path, classes):
    """Saves class indices as a palette PNG, as most segmentation datasets do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = PIL.Image.fromarray(np.asarray(classes, dtype=np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    image.save(path)


def test_segmentation_pairs_by_stem(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {}
    for stem in ("b", "a", "c"):
        image, mask = random_image(ord(stem), 8, 6), rng.integers(0, 4, (8, 6))
        pairs[stem] = (image, mask)
        save(tmp_path / "images" / f"{stem}.png", image)
        save_mask(tmp_path / "masks" / f"{stem}.png", mask)
    # A grey mask works as well as a palette one.
    save(tmp_path / "images" / "d.bmp", random_image(9, 8, 6))
    save(tmp_path / "masks" / "d.png", np.full((8, 6), 3))

    images, masks = load_segmentation_folders(tmp_path / "images", tmp_path / "masks")

    assert images.shape == (4, 8, 6, 3) and masks.shape == (4, 8, 6) and masks.dtype == np.uint8
    for index, stem in enumerate("abc"):
        np.testing.assert_array_equal(images[index], pairs[stem][0])
        np.testing.assert_array_equal(masks[index], pairs[stem][1])
    np.testing.assert_array_equal(masks[3], 3)

    _, resized = load_segmentation_folders(tmp_path / "images", tmp_path / "masks", image_size=16)
    assert resized.shape == (4, 16, 16)
    # Nearest-neighbour resizing never invents classes.
    np.testing.assert_array_equal(np.unique(resized[:3]), np.unique(masks[:3]))


def test_segmentation_mask_size_mismatch_names_both_files(tmp_path):
    save(tmp_path / "images" / "x.png", random_image(0, 8, 6))
    save_mask(tmp_path / "masks" / "x.png", np.zeros((8, 7)))
    pattern = (
        "Mask file "
        + quoted(tmp_path / "masks" / "x.png")
        + r" has size 8x7 \(HxW\) but its image "
        + quoted(tmp_path / "images" / "x.png")
        + " has 8x6"
    )
    with pytest.raises(ValueError, match=pattern):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")


def test_segmentation_missing_partner(tmp_path):
    save(tmp_path / "images" / "x.png", random_image(0))
    save(tmp_path / "images" / "y.jpg", random_image(1))
    save_mask(tmp_path / "masks" / "x.png", np.zeros((6, 5)))
    with pytest.raises(
        FileNotFoundError,
        match="Image file "
        + quoted(tmp_path / "images" / "y.jpg")
        + r" has no mask: expected a file named 'y\.<ext>' in mask directory "
        + quoted(tmp_path / "masks"),
    ):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")

    (tmp_path / "images" / "y.jpg").unlink()
    save_mask(tmp_path / "masks" / "z.png", np.zeros((6, 5)))
    with pytest.raises(
        FileNotFoundError,
        match="Mask file " + quoted(tmp_path / "masks" / "z.png") + " has no image",
    ):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")


def test_segmentation_errors(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(
        ValueError, match="`image_dir` " + quoted(tmp_path / "images") + " holds no images"
    ):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")
    save(tmp_path / "images" / "x.png", random_image(0))
    with pytest.raises(
        FileNotFoundError, match="`mask_dir` directory " + quoted(tmp_path / "masks")
    ):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")
    save(tmp_path / "masks" / "x.png", random_image(0))
    with pytest.raises(
        ValueError, match="Mask file " + quoted(tmp_path / "masks" / "x.png") + " has colour pixels"
    ):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")
    save(tmp_path / "images" / "x.bmp", random_image(0))
    with pytest.raises(ValueError, match=r"have the same name stem 'x'"):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks")


# ---------------------------------------------------------------------------- COCO


def write_coco(tmp_path, annotations, images=None):
    images = images or [
        {"id": 10, "file_name": "first.png", "width": 40, "height": 30},
        {"id": 20, "file_name": "sub/second.jpg", "width": 20, "height": 25},
    ]
    for info in images:
        save(tmp_path / "images" / info["file_name"], np.zeros((info["height"], info["width"], 3)))
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": 7, "name": "truck"},
            {"id": 1, "name": "person"},
            {"id": 3, "name": "car"},
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


ANNOTATIONS = [
    {"id": 1, "image_id": 10, "category_id": 3, "bbox": [2.5, 4, 10, 6], "iscrowd": 0},
    {"id": 2, "image_id": 10, "category_id": 7, "bbox": [0, 0, 40, 30], "iscrowd": 0},
    {"id": 3, "image_id": 10, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 1},
]


def test_coco_detection(tmp_path):
    annotation_file = write_coco(tmp_path, ANNOTATIONS)

    data = load_coco_detection(annotation_file, tmp_path / "images")

    assert data["class_names"] == ("background", "person", "car", "truck")
    assert data["category_ids"] == (1, 3, 7)
    assert data["image_ids"] == [10, 20]
    assert data["file_names"] == ["first.png", "sub/second.jpg"]
    assert data["images"][0].shape == (30, 40, 3) and data["images"][1].shape == (25, 20, 3)
    np.testing.assert_array_equal(data["boxes"][0], [[2.5, 4, 12.5, 10], [0, 0, 40, 30]])
    assert data["boxes"][0].dtype == np.float32
    np.testing.assert_array_equal(data["box_classes"][0], [2, 3])
    assert data["box_classes"][0].dtype == np.int32
    assert data["boxes"][1].shape == (0, 4) and data["box_classes"][1].shape == (0,)

    # pycocotools as an independent reader of the same file.
    coco = COCO(str(annotation_file))
    reference = coco.loadAnns(coco.getAnnIds(imgIds=[10], iscrowd=False))
    expected = [[x, y, x + w, y + h] for x, y, w, h in (ann["bbox"] for ann in reference)]
    np.testing.assert_allclose(data["boxes"][0], expected)
    names = [coco.loadCats(ann["category_id"])[0]["name"] for ann in reference]
    assert [data["class_names"][k] for k in data["box_classes"][0]] == names

    with_crowd = load_coco_detection(annotation_file, tmp_path / "images", include_crowd=True)
    np.testing.assert_array_equal(with_crowd["box_classes"][0], [2, 3, 1])


@pytest.mark.parametrize("bbox", [[30, 5, 10.5, 5], [-1, 5, 3, 3], [5, 25, 3, 6]])
def test_coco_box_outside_the_image(tmp_path, bbox):
    annotation_file = write_coco(
        tmp_path, [{"id": 5, "image_id": 10, "category_id": 1, "bbox": bbox}]
    )
    message = (
        f"Box {bbox} (x, y, width, height) of annotation 5 lies outside image file "
        f"'{tmp_path / 'images' / 'first.png'}' of width 40 and height 30."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_coco_detection(annotation_file, tmp_path / "images")


def test_coco_empty_box(tmp_path):
    annotation_file = write_coco(
        tmp_path, [{"id": 5, "image_id": 10, "category_id": 1, "bbox": [5, 5, 0, 3]}]
    )
    message = (
        "Box [5, 5, 0, 3] (x, y, width, height) of annotation 5 for image file "
        f"'{tmp_path / 'images' / 'first.png'}' has non-positive width or height."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_coco_detection(annotation_file, tmp_path / "images")


def test_coco_errors(tmp_path):
    annotation_file = write_coco(
        tmp_path, [{"id": 5, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}]
    )
    with pytest.raises(ValueError, match=r"annotation 5 refers to image_id 99, which is not in"):
        load_coco_detection(annotation_file, tmp_path / "images")

    annotation_file = write_coco(
        tmp_path, [{"id": 6, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1]}]
    )
    with pytest.raises(
        ValueError, match=r"category_id 2, which is not in `categories` \(ids \[1, 3, 7\]\)"
    ):
        load_coco_detection(annotation_file, tmp_path / "images")

    annotation_file = write_coco(tmp_path, [])
    (tmp_path / "images" / "first.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=quoted(tmp_path / "images" / "first.png") + r" \(image id 10"
    ):
        load_coco_detection(annotation_file, tmp_path / "images")

    (tmp_path / "images" / "first.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(
        ValueError, match="Could not read image file " + quoted(tmp_path / "images" / "first.png")
    ):
        load_coco_detection(annotation_file, tmp_path / "images")

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match=quoted(bad_json) + " is not valid json"):
        load_coco_detection(bad_json, tmp_path / "images")
    bad_json.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(
        ValueError, match=quoted(bad_json) + ": the top level has no field 'categories'"
    ):
        load_coco_detection(bad_json, tmp_path / "images")
    with pytest.raises(FileNotFoundError, match=quoted(tmp_path / "nope.json") + " does not exist"):
        load_coco_detection(tmp_path / "nope.json", tmp_path / "images")


def test_coco_size_disagreement(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}]
    annotation_file = write_coco(tmp_path, [], images=images)
    save(tmp_path / "images" / "a.png", np.zeros((8, 9, 3)))
    with pytest.raises(
        ValueError, match=quoted(tmp_path / "images" / "a.png") + r" is 8x9 \(HxW\) but .* says 8x8"
    ):
        load_coco_detection(annotation_file, tmp_path / "images")
