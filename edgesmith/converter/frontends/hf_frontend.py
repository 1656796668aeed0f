"""Hugging Face encoders (BERT-like): a model folder (config.json + safetensors) or the module itself.

The model is wrapped in `HFEncoder`, a plain module with the inputs `input_ids` and `attention_mask`
(int64, shape (batch, SEQ_LEN): dynamic batch, fixed sequence length) that torch.export and every
exporter can trace; the wrapper then goes through the PyTorch frontend like any module, so the
PyTorch steps (`prune_transformer`, `distill`, ...) run on it and the pipeline exports the result.

Why a fixed sequence length (128): TFLite needs static shapes, the latency profile feeds inputs of
the model's shape (a dynamic length would be timed at 1 token), and after the PyTorch steps the
pipeline re-exports with only the batch dynamic. 128 covers STS-like sentences (all-MiniLM-L6-v2
was trained at 128) and is the length the speed figures in docs/pruning.md use. Text is padded or
truncated to it.

Output: for a sentence-transformers folder (modules.json with a mean-`Pooling` module) the output is
the sentence embedding (masked mean of the token states, L2-normalized when the folder lists a
`Normalize` module), exactly what sentence-transformers returns. It is the quantity users compare
(cosine similarity), and verification of it is meaningful: the token states at padded positions are
arbitrary and differ freely between a pruned model and its original, which would swamp the error
figures of `last_hidden_state`. Other folders (and modules) output `last_hidden_state`.

Loading never unpickles: weights come from `.safetensors`; a folder with only `pytorch_model.bin` is
read with `torch.load(weights_only=True)` (plain tensors), or refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from .bert import bert_encoder, load_pruned

WHY = "Hugging Face models"
SEQ_LEN = 128


def check_folder(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(
            f"{path} is a folder with neither config.json nor saved_model.pb; give a Hugging Face model "
            "folder (config.json + model.safetensors), a TensorFlow SavedModel folder (saved_model.pb + "
            "variables/) or a model file (.onnx, .pt2, .keras, .h5 or .tflite)"
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_file} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise InputError(f"{config_file} must hold a JSON object")
    return config


def _pooling(path: Path) -> str:
    """'none', 'mean' or 'mean-normalize', from a sentence-transformers folder's modules.json."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "none"
    try:
        modules = json.loads(modules_file.read_text())
        types = [m.get("type", "") for m in modules]
        pool = next(m for m in modules if m.get("type", "").endswith(".Pooling"))
        pool_config = json.loads((path / pool.get("path", "") / "config.json").read_text())
    except (json.JSONDecodeError, OSError, StopIteration, AttributeError, TypeError):
        return "none"
    if not pool_config.get("pooling_mode_mean_tokens"):
        return "none"  # CLS or max pooling: not reproduced; the token states are the output
    return "mean-normalize" if any(t.endswith(".Normalize") for t in types) else "mean"


def _load_state_bin(torch, path: Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"{path} is a pickle that does not load as plain tensors (weights_only=True: {str(exc)[:120]}); "
            "it is not unpickled: save the model with save_pretrained(..., safe_serialization=True)"
        ) from exc


def load_hf_model(path: Path):
    """The Hugging Face model in `path` (BERT-like, checked), loaded without unpickling anything."""
    torch = require("torch", "convert", WHY)
    transformers = require("transformers", "convert", WHY)
    config = check_folder(path)
    if "edgesmith_heads" in config:
        return load_pruned(path)
    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}/config.json is not a config transformers can read ({first})") from exc
    if getattr(hf_config, "is_encoder_decoder", False) or not hasattr(hf_config, "num_hidden_layers"):
        raise InputError(
            f"{path}: model_type '{hf_config.model_type}' is not a BERT-like encoder; edgesmith converts "
            "BERT-like Hugging Face encoders from folders (export others to ONNX first)"
        )
    safetensors = sorted(path.glob("*.safetensors"))
    hf_logging = transformers.utils.logging
    bar_was_on, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # "Loading weights" bars and load reports: the CLI's output is ours
    hf_logging.set_verbosity_error()
    try:
        if safetensors:
            model = transformers.AutoModel.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True
            )
        elif (path / "pytorch_model.bin").is_file():
            state = _load_state_bin(torch, path / "pytorch_model.bin")
            model = transformers.AutoModel.from_config(hf_config)
            prefix = getattr(model, "base_model_prefix", "")
            state = {k.removeprefix(f"{prefix}."): v for k, v in state.items()}
            missing, _ = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if "position_ids" not in k and not k.startswith("pooler.")]
            if missing:
                raise InputError(
                    f"{path}/pytorch_model.bin does not hold this model's weights ({missing[0]})"
                )
        else:
            raise InputError(f"{path} has config.json but no weights (model.safetensors)")
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"transformers could not load {path} ({first})") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_was_on:
            hf_logging.enable_progress_bar()
    bert_encoder(model)  # a non-BERT-like model fails here, with a one-line error
    return model.eval()


def _encoder_class():
    torch = require("torch", "convert", WHY)

    class HFEncoder(torch.nn.Module):
        """`(input_ids, attention_mask) -> sentence embedding or last_hidden_state` around a HF model.

        `model` is the Hugging Face model (steps prune and distill it), `pooling` the output head,
        `tokenize` turns sentences into the inputs (None when no tokenizer came with the model)."""

        def __init__(self, model, pooling: str = "none", tokenize=None, seq_len: int = SEQ_LEN):
            super().__init__()
            self.model = model
            self.pooling = pooling
            self.tokenize = tokenize
            self.seq_len = seq_len

        def forward(self, input_ids, attention_mask):
            extra = {}
            if "token_type_ids" in inspect.signature(self.model.forward).parameters:
                # explicit zeros: BERT's default slices and expands a buffer, which ONNX constant
                # folding trips over (harmless, but it prints warnings)
                extra["token_type_ids"] = torch.zeros_like(input_ids)
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            if self.pooling == "none":
                return hidden
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            embedding = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.pooling == "mean-normalize":
                embedding = torch.nn.functional.normalize(embedding, p=2.0, dim=-1)
            return embedding

        def rewrap(self, model):
            """The same head and tokenizer around another (pruned, distilled) model."""
            return type(self)(model, self.pooling, self.tokenize, self.seq_len)

    return HFEncoder


_CLASS = None


def wrap(model, pooling: str = "none", tokenize=None, seq_len: int = SEQ_LEN):
    global _CLASS
    _CLASS = _CLASS or _encoder_class()
    return _CLASS(model, pooling, tokenize, seq_len)


def is_encoder(module) -> bool:
    return _CLASS is not None and isinstance(module, _CLASS)


def is_bert_like(module) -> bool:
    """A BERT-like Hugging Face encoder (checked by shape, so transformers need not be imported);
    other models given in Python go through the plain PyTorch frontend."""
    if not hasattr(getattr(module, "config", None), "num_hidden_layers"):
        return False
    try:
        bert_encoder(module)
    except InputError:
        return False
    return True


def tokenizer_for(path: Path):
    """`tokenize(sentences, seq_len) -> {input_ids, attention_mask}` (int64, padded and truncated to
    seq_len), or None when the folder holds no tokenizer."""
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return None
    transformers = require("transformers", "convert", WHY)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: the tokenizer does not load ({first})") from exc

    def tokenize(sentences: list[str], seq_len: int | None = SEQ_LEN) -> dict[str, np.ndarray]:
        enc = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=seq_len or SEQ_LEN,
                        return_tensors="np")  # fmt: skip
        return {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}

    return tokenize


def _example(model, tokenize, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Two sentences' worth of inputs (batch 2 keeps the batch axis dynamic in torch.export)."""
    if tokenize is not None:
        enc = tokenize(["An example sentence to trace the model with.", "A second, shorter one."], seq_len)
        return enc["input_ids"], enc["attention_mask"]
    vocab = int(getattr(model.config, "vocab_size", 1000))
    ids = np.random.default_rng(0).integers(min(1000, vocab - 1), vocab, (2, seq_len)).astype(np.int64)
    mask = np.ones((2, seq_len), np.int64)
    mask[1, seq_len // 2 :] = 0
    return ids, mask


def load_folder(path: Path, workdir: Path):
    """A Source for a Hugging Face model folder."""
    model = load_hf_model(path)
    tokenize = tokenizer_for(path)
    seq_len = min(SEQ_LEN, int(getattr(model.config, "max_position_embeddings", SEQ_LEN) or SEQ_LEN))
    return _source(wrap(model, _pooling(path), tokenize, seq_len), workdir, path, None)


def load_module(module, workdir: Path, example_inputs: tuple | None):
    """A Source for a Hugging Face model object (or an `HFEncoder` around one) given in Python."""
    if not is_encoder(module):
        bert_encoder(module)
        seq_len = min(SEQ_LEN, int(getattr(module.config, "max_position_embeddings", SEQ_LEN) or SEQ_LEN))
        module = wrap(module.eval(), seq_len=seq_len)
    return _source(module, workdir, None, example_inputs)


def _source(wrapper, workdir: Path, path: Path | None, example_inputs: tuple | None):
    from . import torch_frontend

    example = example_inputs or _example(wrapper.model, wrapper.tokenize, wrapper.seq_len)
    example = tuple(np.asarray(a, dtype=np.int64) for a in example)
    if len(example) != 2:
        raise InputError("a Hugging Face encoder takes example_inputs=(input_ids, attention_mask)")
    if example[0].shape[1] != wrapper.seq_len:  # the example fixes the exported sequence length
        wrapper = wrap(wrapper.model, wrapper.pooling, wrapper.tokenize, int(example[0].shape[1]))
    source = torch_frontend.load_module(wrapper, workdir, example)
    return dataclasses.replace(source, path=path)


SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def save_folder(wrapper, dest: Path, original: Path | None = None) -> Path:
    """Write the (pruned, distilled) model inside `wrapper` as a Hugging Face folder: config.json (with
    `edgesmith_heads` when heads were pruned: reload with `prune_transformer.load_pruned`) and
    model.safetensors, plus the tokenizer and sentence-transformers files of the `original` folder."""
    import shutil

    dest = Path(dest)
    hf_logging = require("transformers", "convert", WHY).utils.logging
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards": the CLI's output is ours
    try:
        wrapper.model.save_pretrained(str(dest), safe_serialization=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if original is not None:
        for item in sorted(Path(original).iterdir()):
            if item.name.startswith(("tokenizer", "vocab", "special_tokens", "merges")) or item.name in (
                SENTENCE_TRANSFORMERS_FILES
            ):
                shutil.copyfile(item, dest / item.name)
            elif item.is_dir() and item.name.endswith("_Pooling"):
                shutil.copytree(item, dest / item.name, dirs_exist_ok=True)
    return dest
