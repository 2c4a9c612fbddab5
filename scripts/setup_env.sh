#!/usr/bin/env bash
# Creates or updates the project virtualenv and the offline data; safe to run again.
#   VENV      virtualenv folder (default: .venv)
#   PYTHON    interpreter to create it with (default: python3.11, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
FASHION_DIR=/usr/share/datasets/fashion-mnist
MATE_PHOTOS=/usr/share/backgrounds/mate/nature/Dune.jpg

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV with $PYTHON"
  # The interpreter's own pip (>= 22.3 has --python) installs the current pip into the new
  # environment in about 3 s; ensurepip's bundled pip and its upgrade took about 9 s.
  if ! { "$PYTHON" -m venv --without-pip "$VENV" \
      && "$PYTHON" -m pip --python "$VENV/bin/python" install --quiet --upgrade pip \
      >/dev/null 2>&1; }; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi

# Reinstall only when the install file changed since the last successful install.
stamp="$VENV/.kcnn-installed"
wanted="$(sha256sum setup.py | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] \
    || ! "$VENV/bin/python" -c "import kcnn" >/dev/null 2>&1; then
  echo "[setup] installing kcnn and its dependencies into $VENV (first time: several minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # pip would compile every module to bytecode on one core; compileall does it on all of them
  # (the same .pyc files; like pip, it leaves the few files that do not compile as they are).
  "$VENV/bin/python" -m pip install --quiet --no-compile -e ".[dev]"
  site_packages="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$VENV/bin/python" -m compileall -q -j 0 "$site_packages" >/dev/null || true
  echo "$wanted" > "$stamp"
else
  echo "[setup] $VENV is up to date"
fi

if [ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "[setup] Fashion-MNIST found in $FASHION_DIR"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing the Debian package dataset-fashion-mnist"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || echo "[setup] could not install dataset-fashion-mnist; the default run will use digits"
  fi
else
  echo "[setup] Fashion-MNIST is not installed and this is not a root shell with apt-get."
  echo "[setup] Install it with:  sudo apt-get install dataset-fashion-mnist"
  echo "[setup] Until then the default run trains on scikit-learn's digits instead."
fi

# Real photographs for the inpainting data set `photos` (kcnn.data.MATE_PHOTO_SOURCES).
if [ -f "$MATE_PHOTOS" ]; then
  echo "[setup] mate-backgrounds photos found"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing the Debian package mate-backgrounds (photos for inpainting)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mate-backgrounds >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mate-backgrounds >/dev/null 2>&1 \
      || echo "[setup] could not install mate-backgrounds; inpainting needs collection=skimage"
  fi
else
  echo "[setup] mate-backgrounds is not installed and this is not a root shell with apt-get."
  echo "[setup] Install it with:  sudo apt-get install mate-backgrounds"
fi
