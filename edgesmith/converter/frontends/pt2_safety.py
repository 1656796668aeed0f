"""Load a `.pt2` without running code from it.

`torch.export.load` is not safe on a file from someone else, in four ways (torch 2.13):

- Pickles. The sample inputs, and weights or constants saved "with pickle", go through `torch.load`,
  which falls back to `weights_only=False` when the weights-only unpickler refuses a pickle: a
  `__reduce__` calling `os.system` runs. Opaque constants go through `pickle.loads`, TorchBind objects
  through TorchScript's unpickler.
- Symbolic shapes. Each `expr_str` in `models/*.json` is parsed by `sympy.sympify`, which `eval`s it.
- Guards. `guards_code` strings are compiled with `exec` by `ExportedProgram.module()` and run on
  every call.
- Operators. A node's target is resolved by `getattr` from `torch`, `math` or `operator`:
  `torch.os.system` is `os.system`.
- (And AOTInductor packages hold a shared library that `load_pt2` opens.)

So the archive is read once, checked (refused in one line: what is in it and how to re-save it), and
the same bytes are handed to `torch.export.load` with `TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`: torch's own
switch that makes every `torch.load` weights-only, fallbacks included. A program saved by
`torch.export.save` from a plain model passes every check.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

from ..._quiet import quiet
from ...errors import InputError

RESAVE = "re-save it with torch.export.save(torch.export.export(model, args), path) from a plain nn.Module"

# What torch's serializer writes as node targets (serialize_operator) and what is pure
_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims|higher_order|quantized_decomposed)\.\w+(\.\w+)?")
_OPERATOR = {"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs",
             "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift",
             "rshift"}  # fmt: skip
_TORCH_FUNCTIONS = re.compile(r"torch\.(_?sym_\w+|_assert|_assert_scalar|_check|_check_is_size)")
_MATH = re.compile(r"math\.[a-z]\w*")
# Names a shape expression or a guard may use: symbols (s0, u3, zuf1), sympy's and torch's shape functions
_SYMBOL = re.compile(r"[a-z]+\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_SHAPE_FUNCTIONS = {
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Mod", "Abs", "floor", "ceiling", "sqrt",
    "Pow", "Mul", "Add", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "oo",
    "zoo", "nan", "True", "False", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv",
    "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "L", "math", "inf",
}  # fmt: skip
_TENSOR_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
_EXPRESSION_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name,
                     ast.Constant, ast.keyword, ast.Subscript, ast.Attribute, ast.Load, ast.operator,
                     ast.unaryop, ast.boolop, ast.cmpop, ast.Tuple)  # fmt: skip


def load_program(path: Path):
    """The `ExportedProgram` in `path`, or an InputError; no code from the file runs."""
    import torch

    data = path.read_bytes()  # read once: the bytes checked are the bytes loaded
    check_archive(data, path)
    try:
        with _weights_only(), quiet("torch.export", "torch._export"):
            return torch.export.load(io.BytesIO(data))
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path} holds pickled objects that a weights-only load refuses ({_why(exc)}); "
                         f"edgesmith does not unpickle them, as unpickling can run code: {RESAVE}") from None  # fmt: skip


def check_archive(data: bytes, path: Path) -> None:
    """Refuse, in one line, an archive holding anything that loading it would execute."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        if any(n.endswith("/data.pkl") for n in names) and not any("/models/" in n for n in names):
            raise InputError(f"{path} is a torch.save checkpoint (pickled objects), not a torch.export program; "
                             f"edgesmith does not unpickle it (unpickling can run code): {RESAVE}")  # fmt: skip
        if any("/data/aotinductor/" in n for n in names):
            raise InputError(f"{path} is an AOTInductor package (compiled code, which edgesmith does not load); "
                             "give a torch.export program saved with torch.export.save")  # fmt: skip
        for name in names:
            if re.search(r"/data/constants/\w+_constants_config\.json$", name):
                _check_constants(json.loads(archive.read(name)), path)
            elif re.search(r"/models/\w+\.json$", name):
                _check_program(json.loads(archive.read(name)), path)
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, KeyError, OSError) as exc:
        raise InputError(f"{path} is not a torch.export program ({exc}); "
                         "save one with torch.export.save(torch.export.export(model, args), path)") from None  # fmt: skip


def _check_constants(config: dict, path: Path) -> None:
    for fqn, meta in (config.get("config") or {}).items():
        file = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        if not file.startswith("tensor_"):
            raise InputError(f"{path}: constant '{fqn}' is a pickled Python object ({file}), which edgesmith "
                             f"does not unpickle (it can run code); {RESAVE}")  # fmt: skip


def _check_program(program, path: Path) -> None:
    """Walk the serialized program: node targets, shape expressions and guards must be plain."""
    for key, value in _items(program):
        if key == "target" and isinstance(value, str) and not _plain_target(value):
            raise InputError(f"{path} calls '{value[:80]}', which is not a PyTorch operator; {RESAVE}")
        if key == "expr_str" and isinstance(value, str) and not _plain_expression(value):
            raise InputError(f"{path} holds a shape expression that is not one ({value[:80]!r}); {RESAVE}")
        if key == "guards_code" and isinstance(value, list):
            for guard in value:
                if not isinstance(guard, str) or not _plain_expression(guard):
                    raise InputError(f"{path} holds a guard that is code, not a shape check ({str(guard)[:80]!r}); {RESAVE}")  # fmt: skip


def _items(tree):
    """Every (key, value) pair of a JSON tree, depth first."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _plain_target(target: str) -> bool:
    if target.startswith("_operator."):
        return target.split(".", 1)[1] in _OPERATOR
    return any(p.fullmatch(target) for p in (_OP_TARGET, _TORCH_FUNCTIONS, _MATH))


def _plain_expression(text: str) -> bool:
    """An arithmetic or comparison expression over shapes: names from a fixed list (or symbols), calls to
    those names, `.size()`-like methods, constants. No other attribute, no dunder, nothing else."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    # string constants only where a name goes: Symbol('s0', ...) and L['x']; identifiers, so a guard
    # pasted into torch's generated code cannot close its string literal
    named = {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
             and isinstance(n.func, ast.Name) and n.func.id == "Symbol"}  # fmt: skip
    named |= {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    for node in ast.walk(tree):
        literal = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        if literal is not None and (id(node) not in named or not _IDENTIFIER.fullmatch(literal)):
            return False
        if not isinstance(node, _EXPRESSION_NODES):
            return False
        if isinstance(node, ast.Name) and not (node.id in _SHAPE_FUNCTIONS or _SYMBOL.fullmatch(node.id)):
            return False
        if isinstance(node, ast.Attribute) and not (
            node.attr in _TENSOR_METHODS or (isinstance(node.value, ast.Name) and node.value.id == "math")
        ):
            return False
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return False
    return True


@contextlib.contextmanager
def _weights_only():
    """torch's own switch: every `torch.load` in the block is weights-only, even one that asks for
    `weights_only=False` (the fallbacks in torch.export's loader do)."""
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _why(exc: BaseException) -> str:
    """The line of torch's weights-only message that names the refused global."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(exc).__name__])[0][:200]
