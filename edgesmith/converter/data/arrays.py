"""Calibration and evaluation data as batches of named arrays, checked against the model inputs.

Sources: an `.npz` (arrays named after the model inputs, first axis = samples, optional `labels`),
an `.npy` (memory-mapped, for a single-input model), or a folder of images with a preprocessing
spec; for a text model (whose frontend gives a `tokenize` function) also a `.txt` of one sentence per
line, tokenized when opened. Batches are read one at a time, so memory stays bounded by a batch (an
`.npz` array is read whole when first touched: use `.npy` or an image folder for sets larger than
memory).

A model whose inputs fix the batch axis (most exported files: batch 1) is fed batches of exactly that
size, whatever `batch_size` asks: calibration in every engine, verification and training all read
their batches here, so each works with such models and the artifacts keep the source's signature.

One rule says what a sample of an input is, read from the array's rank (`fed_whole`): an array of
the input's rank holds rows of the batch, stacked on the model's batch axis (axis 0); an array of one
more dimension holds each sample as the whole input the model declares, fed as it is. The second form
is for inputs with no batch on axis 0: a recurrent state (2, batch, 128), a scalar sample rate.
A source with such an input feeds one sample per call (its batch-row inputs one row each).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..._io import read_arrays
from ...errors import InputError
from ...runtime.session import TensorSpec
from . import images
from .config import PreprocessConfig

LABELS = "labels"


class ArraySource:
    """Samples from a file or folder, read `batch_size` at a time, at most `max_samples`."""

    def __init__(
        self,
        path: str | Path,
        inputs: tuple[TensorSpec, ...],
        what: str = "calibration",
        max_samples: int | None = None,
        batch_size: int = 16,
        preprocess: PreprocessConfig | None = None,
        tokenize=None,  # text models: (sentences, seq_len) -> {input name: int64 array}
    ):
        self.path = Path(path)
        self._rows: np.ndarray | None = None  # which samples of the file or folder, in order (`split_off`)
        self._tokenize, self._max_samples = tokenize, max_samples
        self.inputs = inputs
        self.what = what
        self.batch_size = batch_size
        self.labels: np.ndarray | None = None
        self._images: list[Path] | None = None
        if not self.path.exists():
            raise InputError(f"{what} data {self.path}: no such file or folder; check the path")
        if self.path.is_dir():
            if len(inputs) != 1:
                raise InputError(
                    f"an image folder feeds single-input models; this one has "
                    f"{[s.name for s in inputs]}: pass an .npz with one array per input"
                )
            self._images = images.list_images(self.path)
            self.spec = images.resolve_spec(self.path, preprocess, inputs[0])
            total = len(self._images)
        else:
            self._arrays = self._open_arrays()
            total = min(len(a) for a in self._arrays.values())
            if self.labels is not None and len(self.labels) < total:
                raise InputError(
                    f"{self.path}: `labels` has {len(self.labels)} rows but the inputs "
                    f"have {total}; give one label per sample"
                )
        self.count = min(total, max_samples) if max_samples else total
        if self.count == 0:
            raise InputError(f"{what} data {self.path} holds no samples; add some")
        self.whole = (
            frozenset()
            if self._images is not None
            else frozenset(spec.name for spec in inputs if fed_whole(spec, self._arrays[spec.name]))
        )
        self._check_batch_axes()
        self.fixed_batch = model_batch(tuple(s for s in inputs if s.name not in self.whole))
        if self.whole:
            self._fit_one_per_call()
        elif self.fixed_batch:
            self._fit_fixed_batch(self.fixed_batch)

    def _check_batch_axes(self) -> None:
        """Inputs given as rows of the batch must all have their batch on axis 0: one with a fixed first
        axis next to one with a dynamic batch (a state (2, batch, 128)) has none there."""
        rows = [s for s in self.inputs if s.name not in self.whole and s.shape]
        fixed = [s for s in rows if isinstance(s.shape[0], int) and s.shape[0] > 0]
        if fixed and len(fixed) < len(rows):
            spec = fixed[0]
            raise InputError(
                f"{self.path}: input '{spec.name}' has no batch axis first ({list(spec.shape)}, while "
                f"other inputs have a dynamic batch); give each of its samples whole, as the model "
                f"declares it: an array of shape [samples, {', '.join(map(str, spec.shape))}]"
            )

    def _fit_one_per_call(self) -> None:
        """One sample per call when an input is fed whole (it has no batch axis to stack samples on)."""
        if self.fixed_batch not in (None, 1):
            raise InputError(
                f"{self.what} data {self.path}: inputs {sorted(self.whole)} are given whole per sample, "
                f"which feeds one sample per call, but the model's batch is fixed at {self.fixed_batch}; "
                "give those inputs one row per sample"
            )
        self.batch_size = 1

    def _fit_fixed_batch(self, size: int) -> None:
        """Batches of the model's fixed batch size; the samples that do not fill a last batch are left out."""
        if self.count < size:
            raise InputError(
                f"{self.what} data {self.path} holds {self.count} samples but the model takes batches of "
                f"exactly {size}; give at least {size} samples"
            )
        self.batch_size, self.count = size, self.count - self.count % size

    def __len__(self) -> int:
        return self.count

    def split_off(self, count: int, what: str, every: int = 4) -> ArraySource:
        """`count` samples, every `every`-th (whole fixed batches), as a source of their own named `what`;
        this one leaves them out. Verification holds calibration samples out this way: an artifact
        checked on the samples that calibrated it looks better than it is on new inputs, and samples
        spread over the file stand for the whole of it better than its last ones."""
        step = 1 if self.whole else self.fixed_batch or 1
        rows = self._rows if self._rows is not None else np.arange(self.count)
        units = rows[: self.count // step * step].reshape(-1, step)
        held = np.zeros(len(units), bool)
        held[every - 1 :: every][: count // step] = True
        other = copy.copy(self)
        other._rows, other.count, other.what = units[held].ravel(), int(held.sum()) * step, what
        if self.labels is not None:
            other.labels = self.labels[other._rows]
            self.labels = self.labels[units[~held].ravel()]
        self._rows, self.count = units[~held].ravel(), self.count - other.count
        return other

    def head(self, count: int, what: str) -> ArraySource:
        """The first `count` samples (whole fixed batches) as a source of their own named `what`; this
        one is unchanged (verification also runs on samples that calibrated the model)."""
        step = 1 if self.whole else self.fixed_batch or 1
        other = copy.copy(self)
        rows = self._rows if self._rows is not None else np.arange(self.count)
        other.count = min(count, self.count) // step * step
        other._rows, other.what = rows[: other.count], what
        if self.labels is not None:
            other.labels = self.labels[: other.count]
        return other

    def _open_arrays(self) -> dict[str, np.ndarray]:
        suffix = self.path.suffix.lower()
        if suffix in (".npy", ".npz"):
            found = read_arrays(self.path, f"{self.what} data", labels=LABELS)
        elif suffix in (".txt", ".tsv"):
            if self._tokenize is None:
                raise InputError(
                    f"{self.what} data {self.path}: sentences need a tokenizer; give a Hugging Face model "
                    "folder with one (tokenizer.json or vocab.txt), or an .npz of input_ids/attention_mask"
                )
            try:
                found = self._read_pairs() if suffix == ".tsv" else self._read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise InputError(
                    f"{self.what} data {self.path} is not readable text ({reason}); save it as UTF-8"
                ) from None
        else:
            raise InputError(
                f"{self.what} data {self.path}: expected an .npz, an .npy or a folder of images"
                + (" (or a .txt of sentences, a .tsv of scored pairs)" if self._tokenize is not None else "")
            )
        if LABELS in found:
            self.labels = np.asarray(found.pop(LABELS))
            if self.labels.ndim == 0:
                raise InputError(
                    f"{self.path}: `labels` is a single value; give one label per sample (a 1-D array)"
                )
        names = [s.name for s in self.inputs]
        if all(n in found for n in names):
            arrays = {n: found[n] for n in names}
        elif len(names) == 1 and len(found) == 1:
            arrays = {names[0]: next(iter(found.values()))}
        else:
            raise InputError(
                f"{self.path} has arrays {sorted(found)} but the model's inputs are "
                f"{names}; name the arrays after the model inputs"
            )
        for spec in self.inputs:
            _check_shape(self.path, spec, arrays[spec.name])
        counts = {len(a) for a in arrays.values()}
        if len(counts) > 1:
            raise InputError(f"{self.path}: the input arrays have different sample counts {sorted(counts)}")
        return arrays

    def _read_text(self) -> dict[str, np.ndarray]:
        """One sentence per line (blank lines skipped), tokenized to the model's sequence length."""
        lines = [line.strip() for line in self.path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line][: self._max_samples or None]
        if not lines:
            raise InputError(f"{self.what} data {self.path} holds no sentences; write one per line")
        length = self.inputs[0].shape[1] if len(self.inputs[0].shape) > 1 else None
        return self._tokenize(lines, length if isinstance(length, int) and length > 0 else None)

    def _read_pairs(self) -> dict[str, np.ndarray]:
        """Scored sentence pairs, `sentence<TAB>sentence<TAB>score` a line (STS-B's form): samples 2i and
        2i+1 are pair i, both labelled with its score (the `spearman` metric, converter/metrics.py)."""
        sentences, scores = [], []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            try:
                score = float(fields[2]) if len(fields) == 3 else None
            except ValueError:
                score = None
            if score is None or not all(f.strip() for f in fields[:2]):
                raise InputError(
                    f"{self.what} data {self.path}, line {number}: expected sentence<TAB>sentence<TAB>score"
                )
            sentences += [fields[0].strip(), fields[1].strip()]
            scores += [score, score]
        pairs = min(self._max_samples or len(sentences), len(sentences)) // 2 * 2
        if pairs < 4:
            raise InputError(
                f"{self.what} data {self.path} holds fewer than 2 scored pairs; write one a line"
            )
        length = self.inputs[0].shape[1] if len(self.inputs[0].shape) > 1 else None
        found = self._tokenize(sentences[:pairs], length if isinstance(length, int) and length > 0 else None)
        return {**found, LABELS: np.asarray(scores[:pairs], dtype=np.float64)}

    def check_finite(self) -> None:
        """Scan array data for NaN/Inf up front, so bad data fails before any long work.
        (Image files hold 8-bit pixels and cannot contain either.)"""
        if self._images is None:
            for index in range(self.num_batches(256)):
                self.batch(index, 256)

    def _size(self, batch_size: int | None) -> int:
        """Samples per call: 1 when an input is fed whole, else `batch_size` or the source's."""
        return 1 if self.whole else batch_size or self.batch_size

    def num_batches(self, batch_size: int | None = None) -> int:
        size = self._size(batch_size)
        return -(-self.count // size)

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield {input name: array} batches, checked for NaN and Inf."""
        for index in range(self.num_batches(batch_size)):
            yield self.batch(index, batch_size)

    def sample_shape(self, name: str) -> tuple[int, ...]:
        """The shape of one sample of input `name` (every sample has it: an array is one block, and
        images are resized to one size)."""
        if self._images is not None:
            return self.batch(0, 1)[name].shape[1:]
        return tuple(self._arrays[name].shape[1:])

    def feed_size(self, feed: dict[str, np.ndarray]) -> int:
        """How many samples one feed from `batches()` holds."""
        return 1 if self.whole else len(next(iter(feed.values())))

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of one sample each (NNCF and the AI Edge Quantizer calibrate per sample), or of the
        model's fixed batch when it has one."""
        if self.whole:
            yield from self.batches()
            return
        step = self.fixed_batch or 1
        for batch in self.batches():
            count = len(next(iter(batch.values())))
            for start in range(0, count, step):
                yield {name: array[start : start + step] for name, array in batch.items()}

    def num_samples(self) -> int:
        """How many feeds `samples()` yields."""
        return self.count // (1 if self.whole else self.fixed_batch or 1)

    def batch(self, index: int, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Batch number `index` (0-based), read from disk now."""
        size = self._size(batch_size)
        start, stop = index * size, min((index + 1) * size, self.count)
        rows = slice(start, stop) if self._rows is None else self._rows[start:stop]
        if self._images is not None:
            name = self.inputs[0].name
            files = (
                self._images[start:stop]
                if self._rows is None
                else [self._images[i] for i in self._rows[start:stop]]
            )
            batch = {name: np.stack([images.load_image(p, self.spec) for p in files])}
            _check_shape(self.path, self.inputs[0], batch[name])
        else:
            batch = {
                spec.name: np.asarray(  # not ascontiguousarray: it makes a 0-d sample (a scalar input) 1-d
                    self._arrays[spec.name][_first(rows) if spec.name in self.whole else rows],
                    dtype=spec.dtype,
                    order="C",
                )
                for spec in self.inputs
            }
        for name, array in batch.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                at = 0 if name in self.whole else int(np.argwhere(~np.isfinite(array))[0][0])
                bad = start + at if self._rows is None else int(self._rows[start + at])  # in the file
                raise InputError(
                    f"{self.what} data {self.path}: input '{name}' has NaN or Inf at "
                    f"sample {bad}; clean or drop those samples"
                )
        return batch


def model_batch(inputs: tuple[TensorSpec, ...]) -> int | None:
    """The batch size a model is fixed at: the first axis of its inputs, when that is one fixed size
    on all of them (None for a dynamic batch)."""
    firsts = {spec.shape[0] if spec.shape else None for spec in inputs}
    size = firsts.pop() if len(firsts) == 1 else None
    return size if isinstance(size, int) and size > 0 else None


def _first(rows: slice | np.ndarray) -> int:
    return rows.start if isinstance(rows, slice) else int(rows[0])


def fed_whole(spec: TensorSpec, array: np.ndarray) -> bool:
    """Whether `array` (samples first) holds each sample as the whole input the model declares (one
    dimension more than the input: fed as it is, one call per sample) rather than rows of the batch
    (the input's rank: stacked on axis 0). The one place this is decided (module docstring)."""
    return array.ndim == len(spec.shape) + 1


def _check_shape(path: Path, spec: TensorSpec, array: np.ndarray) -> None:
    want = list(spec.shape)
    whole = fed_whole(spec, array)
    dims = want if whole else want[1:]
    ok = (whole or array.ndim == len(want)) and all(
        not isinstance(w, int) or w <= 0 or w == g for w, g in zip(dims, array.shape[1:], strict=True)
    )
    if not ok:
        raise InputError(
            f"{path}: samples for input '{spec.name}' have shape {list(array.shape)} but the model expects "
            f"{want} (first axis = samples; each sample one row of the batch, or the whole input as the "
            "model declares it); reshape or preprocess them"
        )
