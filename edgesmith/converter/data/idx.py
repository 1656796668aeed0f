"""Read IDX files (the MNIST format), optionally gzipped, without any framework."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ...errors import InputError

_DTYPES = {
    code: np.dtype(t)
    for code, t in {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.items()
}


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
    array = np.frombuffer(data, _DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise InputError(f"{path} is truncated: header says {list(dims)}, found {array.size} values")
    return array.reshape(dims)


def load_mnist(folder: str | Path, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) from the LeCun file names in `folder`."""
    folder = Path(folder)
    images = read_idx(folder / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def normalize_mnist(images: np.ndarray, mean: float = 0.1307, std: float = 0.3081) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), the usual MNIST normalization."""
    return ((images.astype(np.float32) / 255.0 - mean) / std)[:, None].astype(np.float32)
