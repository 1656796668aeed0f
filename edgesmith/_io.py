"""Write files whole or not at all: a temp file beside the target, renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temp path in the target's folder; rename it to `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def work_folder(kind: str = ""):
    """A private temporary folder named `edgesmith-[KIND-]PID-*`, removed on exit (a SIGTERM too, when
    the CLI turned it into an exception); the next convert removes it if this process was killed
    outright (converter/outdir.py `clean_stale` reads the PID from the name)."""
    import secrets
    import shutil

    prefix = f"edgesmith-{kind}-" if kind else "edgesmith-"
    path = Path(tempfile.gettempdir()) / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.mkdir(0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_utf8_path(path, what: str) -> None:
    """Refuse a path that is not valid UTF-8 (a file name from another locale): ONNX Runtime, onnx
    and TensorFlow take paths as UTF-8 text and fail on it with an unrelated message."""
    from .errors import InputError

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("ascii", "backslashreplace")
        raise InputError(f"{what} {shown}: the path is not valid UTF-8, which ONNX Runtime and onnx "
                         "need; rename it (e.g. with only ASCII letters)") from None  # fmt: skip


# dtype kinds a model cannot take, and what to say about them
NOT_NUMBERS = {"U": "text", "S": "bytes", "O": "Python objects", "V": "records (a structured dtype)",
                "M": "dates", "m": "time spans", "c": "complex numbers (a cast would drop the imaginary part)"}  # fmt: skip


def read_arrays(path: Path, what: str = "data", labels: str | None = "labels") -> dict:
    """{name: array} from an `.npz` or an `.npy` (memory-mapped; its name is ""), read without
    unpickling. Anything that is not a readable numpy file of numbers is one InputError: a truncated
    or corrupt file, object, text, complex or record arrays, and `labels` that are not numbers."""
    import zipfile
    import zlib

    import numpy as np

    from .errors import InputError

    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)  # an .npy is mapped, not read
        if isinstance(loaded, np.ndarray):
            arrays = {"": loaded}
        else:
            with loaded:
                arrays = {name: loaded[name] for name in loaded.files}
    except ValueError as exc:
        if str(exc).startswith("Object arrays"):
            raise InputError(f"{what} {path} holds Python objects (pickled), which edgesmith never loads; "
                             "save numeric arrays with numpy.savez") from None  # fmt: skip
        reason = "not the .npy/.npz format" if "pickled" in str(exc) else str(exc)
        raise InputError(
            f"{what} {path} is not a readable numpy file ({reason}); re-save it with numpy.savez"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InputError(
            f"{what} {path} is not a readable numpy file ({reason}); re-save it with numpy.savez"
        ) from None
    for name, array in arrays.items():
        kind = NOT_NUMBERS.get(array.dtype.kind)
        if kind and name == labels:
            raise InputError(
                f"{what} {path}: `{labels}` holds {kind}, not class ids; map them to integers 0..N-1"
            )
        if kind:
            shown = f"array '{name}'" if name else "the array"
            raise InputError(f"{what} {path}: {shown} holds {kind} ({array.dtype}), not real numbers; save "
                             "it as numbers the model takes (e.g. numpy.asarray(x, numpy.float32))")  # fmt: skip
    return arrays
