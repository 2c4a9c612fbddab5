import gzip
import re
import struct

import numpy as np
import pytest

from kcnn.data import read_idx

# IDX type byte and the big-endian struct code of one element.
TYPES = {
    np.uint8: (0x08, "B"),
    np.int8: (0x09, "b"),
    np.int16: (0x0B, "h"),
    np.int32: (0x0C, "i"),
    np.float32: (0x0D, "f"),
    np.float64: (0x0E, "d"),
}


def idx_bytes(values, dtype):
    """Encodes `values` as IDX with `struct`, independently of the reader."""
    type_code, element = TYPES[dtype]
    values = np.asarray(values)
    header = struct.pack(">BBBB", 0, 0, type_code, values.ndim)
    header += struct.pack(f">{values.ndim}I", *values.shape)
    flat = values.ravel().tolist()
    return header + struct.pack(f">{len(flat)}{element}", *flat)


def match_path(path):
    return re.escape(str(path))


@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_every_type(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        values = rng.normal(size=(3, 4, 5)).astype(dtype)
    content = idx_bytes(values, dtype)
    path = tmp_path / "data.idx"
    path.write_bytes(gzip.compress(content) if compress else content)

    result = read_idx(path)

    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, values)
    result[0, 0, 0] = 0  # The array must be writable.


def test_big_endian_is_decoded(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    np.testing.assert_array_equal(read_idx(path), np.array([258, -2], dtype=np.int16))


def test_gzip_is_detected_by_magic_not_by_name(tmp_path):
    values = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gzipped = tmp_path / "no_suffix"
    gzipped.write_bytes(gzip.compress(idx_bytes(values, np.uint8)))
    raw = tmp_path / "raw.gz"
    raw.write_bytes(idx_bytes(values, np.uint8))
    np.testing.assert_array_equal(read_idx(gzipped), values)
    np.testing.assert_array_equal(read_idx(raw), values)


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad_magic"
    path.write_bytes(b"\x00\x01\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(
        ValueError,
        match=match_path(path) + ".*wrong magic bytes: expected .*0x00 0x00, got 0x00 0x01",
    ):
        read_idx(path)


def test_unknown_type(tmp_path):
    path = tmp_path / "bad_type"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match=match_path(path) + ".*unknown data type byte 0x07"):
        read_idx(path)


def test_truncated_payload(tmp_path):
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 3), np.int32), np.int32)[:-1]))
    with pytest.raises(
        ValueError, match=match_path(path) + r".*truncated: expected 24 data bytes .*got 23"
    ):
        read_idx(path)


def test_too_long_payload(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8), np.uint8) + b"\x00")
    with pytest.raises(ValueError, match=match_path(path) + r".*too long: expected 4 .*got 5"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "header"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")
    with pytest.raises(ValueError, match=match_path(path) + ".*16-byte header for 3 dimensions"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=match_path(path) + ".*too short"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "corrupt.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 4)
    with pytest.raises(ValueError, match=match_path(path) + ".*could not be decompressed"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        read_idx(tmp_path / "missing.idx")
