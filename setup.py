"""Install file for kcnn: a TensorFlow/Keras 3 computer-vision toolkit."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="kcnn",
    version="0.1.0",
    description=(
        "Keras 3 CNN toolkit: custom layers, keras-hub backbones, task pipelines, "
        "tf.distribute and TFLite export."
    ),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["kcnn", "kcnn.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "keras-hub>=0.32,<0.40",
        "numpy>=1.26",
        # TensorFlow's own range (>=0.5.1,<1), without 0.7: importing ml_dtypes 0.7.0 takes
        # 0.9-1.2 s (0.6.0: 5 ms), paid by every process that imports TensorFlow
        # (bench/RESULTS.md, "Start-up").
        "ml-dtypes>=0.5.1,<0.7",
        "matplotlib>=3.8",
        "scikit-image>=0.22",
        "scikit-learn>=1.4",
        "pyyaml>=6.0",
        "h5py>=3.10",
        "pycocotools>=2.0.7",
        "ai-edge-litert>=2.0",
        "tensorboard>=2.19",
        "optuna>=4.0",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
        ],
    },
    entry_points={"console_scripts": ["kcnn=kcnn.cli:main"]},
)
