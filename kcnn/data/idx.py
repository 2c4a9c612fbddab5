"""Reader for the IDX format used by MNIST and Fashion-MNIST."""

import gzip
import os
import zlib

import numpy as np

# IDX type byte -> element type. All IDX numbers are big-endian.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path):
    """Reads an IDX file (gzipped or raw) into a NumPy array.

    The IDX header is two zero bytes, one type byte (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), one byte with the
    number of dimensions, then one big-endian uint32 per dimension. The data
    follows in big-endian row-major order. Gzip compression is detected from the
    first two bytes (0x1f 0x8b), not from the file name.

    Args:
        path: str or path-like. The IDX file to read.

    Returns:
        A writable NumPy array in native byte order with the shape stored in the
        header, e.g. `(60000, 28, 28)` uint8 for MNIST training images.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the gzip stream is corrupt, the magic bytes are wrong, the
            type byte is unknown, or the data is shorter or longer than the
            header's shape requires. The message names the file.

    Example:

    >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    >>> images.shape, images.dtype
    ((10000, 28, 28), dtype('uint8'))
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        content = file.read()
    if content[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(
                f"IDX file '{path}' starts like a gzip file but could not be decompressed: {error}"
            ) from None

    if len(content) < 4:
        raise ValueError(
            f"IDX file '{path}' is too short: expected a 4-byte header "
            f"(0x00 0x00 type ndim), got {len(content)} bytes."
        )
    if content[0] != 0 or content[1] != 0:
        raise ValueError(
            f"IDX file '{path}' has wrong magic bytes: expected the file to start with "
            f"0x00 0x00, got 0x{content[0]:02x} 0x{content[1]:02x}."
        )
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise ValueError(
            f"IDX file '{path}' has unknown data type byte 0x{type_code:02X}: "
            f"expected one of {known}."
        )
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise ValueError(
            f"IDX file '{path}' is truncated: expected a {header_size}-byte header for "
            f"{ndim} dimensions, got {len(content)} bytes."
        )
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    received = len(content) - header_size
    if received != expected:
        problem = "truncated" if received < expected else "too long"
        raise ValueError(
            f"IDX file '{path}' is {problem}: expected {expected} data bytes for shape "
            f"{shape} of {dtype.newbyteorder('=').name}, got {received}."
        )
    data = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
