import numpy as np
import pytest
from PIL import Image

from kcnn.data import load_segmentation_data, load_segmentation_folders

COLOURS = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]


def write_pair(folder, stem, classes, colours=None):
    (folder / "images").mkdir(exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    image = np.random.default_rng(len(stem)).integers(0, 255, classes.shape + (3,), np.uint8)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    if colours is None:
        Image.fromarray(classes.astype(np.uint8), mode="L").save(folder / "masks" / f"{stem}.png")
    else:
        painted = np.array(colours, np.uint8)[classes]
        Image.fromarray(painted).save(folder / "masks" / f"{stem}.png")


def test_colour_masks_map_to_class_indices(tmp_path):
    classes = np.random.default_rng(0).integers(0, 3, (6, 5))
    write_pair(tmp_path, "a", classes, COLOURS)
    _, masks = load_segmentation_folders(
        tmp_path / "images", tmp_path / "masks", class_colors=COLOURS
    )
    np.testing.assert_array_equal(masks[0], classes)


def test_unknown_colour_and_out_of_range_index_name_the_file(tmp_path):
    classes = np.zeros((4, 4), int)
    write_pair(tmp_path, "bad", classes, [(9, 9, 9)])
    with pytest.raises(ValueError, match=r"bad.png' has colour \(9, 9, 9\) that is not in"):
        load_segmentation_folders(tmp_path / "images", tmp_path / "masks", class_colors=COLOURS)
    other = tmp_path / "index"
    other.mkdir()
    write_pair(other, "high", np.full((4, 4), 7))
    with pytest.raises(ValueError, match=r"high.png' holds class index 7, but there are only 3"):
        load_segmentation_folders(other / "images", other / "masks", num_classes=3)


def test_segmentation_folders_dataset_splits_by_seed(tmp_path):
    for index in range(5):
        write_pair(tmp_path, f"scene{index}", np.full((4, 4), index % 3))
    data = load_segmentation_data(
        "segmentation_folders",
        path=tmp_path / "images",
        mask_path=tmp_path / "masks",
        class_names=("background", "a", "b"),
        test_fraction=0.4,
    )
    assert len(data.x_train) == 3 and len(data.x_test) == 2
    assert data.class_names == ("background", "a", "b")
