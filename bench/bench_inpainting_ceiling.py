"""How far can a learned residual on the biharmonic fill go on the bench's test photos?

An upper bound for `FillResidualUNet` on the photo bench of `bench/bench_inpainting.py`:
the model of `configs/inpaint_fill_residual.yaml` trained on the per-image PSNR the
evaluation averages (`train.loss: {psnr: 1.0}`), but on crops of the 7 *test* photos
themselves (other crop positions and other masks than the bench's), then scored on the
bench's crops and masks beside its own untrained fill and `inpaint_biharmonic`. Training on
the test photos is what no real model may do; a model that cannot beat biharmonic even so
shows that the training photos are not what holds the learned models back.

    python bench/bench_inpainting_ceiling.py --run-dir runs/ceiling
    python bench/bench_inpainting_ceiling.py --run-dir runs/ceiling_w32 --width 32 --epochs 6
    python bench/bench_inpainting_ceiling.py --run-dir runs/ceiling_128 --image-size 128 --epochs 4

The run folder must not exist yet (`kcnn train` never overwrites one). About 75 s per epoch
of 250 steps on 2 CPU cores at width 16 and 64x64.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_inpainting  # noqa: E402

from kcnn import cli  # noqa: E402
from kcnn.data import photos  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "inpaint_fill_residual.yaml"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, help="new run folder for the trained model")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--width", type=int, default=16, help="FillResidualUNet width")
    parser.add_argument(
        "--crops-per-photo", type=int, default=600, help="training crops per test photo"
    )
    parser.add_argument("--image-size", type=int, default=64, help="crop side: 64 or 128")
    arguments = parser.parse_args()
    if Path(arguments.run_dir).exists():
        parser.error(f"--run-dir {arguments.run_dir} exists; give a new folder")

    # The "all" collection's training photos become its test photos, in this process only.
    collection = photos.PHOTO_COLLECTIONS["all"]
    collection["train"] = list(collection["test"])
    print("training photos:", ", ".join(collection["train"]), flush=True)
    status = cli.main(
        [
            "train",
            str(CONFIG),
            "--run-dir",
            arguments.run_dir,
            "-o",
            f"name={Path(arguments.run_dir).name}",
            "-o",
            f"train.epochs={arguments.epochs}",
            "-o",
            "train.loss={psnr: 1.0}",
            "-o",
            f"data.args.train_crops_per_photo={arguments.crops_per_photo}",
            "-o",
            f"model.args.width={arguments.width}",
            "-o",
            f"data.image_size={arguments.image_size}",
            "-o",
            "export.formats=[saved_model]",
        ]
    )
    if status:
        return status
    # The bench's crops: 24 per photo at 64x64, 8 at 128x128 (README, "Inpainting").
    bench_crops = 24 if arguments.image_size <= 64 else 8
    results = bench_inpainting.evaluate([arguments.run_dir], crops_per_photo=bench_crops)
    bench_inpainting.print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
