"""`edgesmith doctor`: which extras and backends are installed here, with versions."""

from __future__ import annotations

import argparse
import importlib.util
import json

EXTRAS = {
    "ort": ["onnxruntime"],
    "litert": ["ai-edge-litert"],
    "openvino": ["openvino"],
    "convert": ["onnx", "onnxscript", "onnxruntime", "torch", "tomli-w", "pillow", "tqdm"],
}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "doctor",
        help="show installed extras and backends",
        description="Lists each extra (ort, litert, openvino, convert) and runtime "
        "backend, whether it is installed, and versions.",
    )
    p.add_argument("--json", action="store_true")
    return p


def collect() -> dict:
    from ..converter.environment import package_version, versions
    from ..runtime import available_backends

    extras = {}
    for extra, packages in EXTRAS.items():
        found = {p: package_version(p) for p in packages}
        extras[extra] = {"installed": all(found.values()), "packages": found}
    backends = {name: ok for name, ok in available_backends().items()}
    return {
        "extras": extras,
        "backends": backends,
        "versions": versions(),
        "tflite_runtime_fallback": importlib.util.find_spec("tflite_runtime") is not None,
    }


def main(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for extra, entry in info["extras"].items():
        mark = "ok     " if entry["installed"] else "missing"
        pkgs = ", ".join(f"{p} {v or '-'}" for p, v in entry["packages"].items())
        fix = "" if entry["installed"] else f"   -> pip install 'edgesmith[{extra}]'"
        print(f"[{mark}] {extra:9} {pkgs}{fix}")
    print("backends: " + ", ".join(f"{n} ({'yes' if ok else 'no'})" for n, ok in info["backends"].items()))
    v = info["versions"]
    print(f"python {v['python']} on {v['machine']}")
    return 0
