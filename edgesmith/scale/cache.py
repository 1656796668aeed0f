"""A content-addressed cache of whole conversions, shared by sweep tasks, tune trials and re-runs.

Key: sha256 of the input model's bytes, the resolved recipe as canonical JSON (paths included: the
artifacts' manifests record them, so a hit must come from the same paths to be byte-identical), the
bytes of every data file the recipe reads (calibration, eval, a step's training data) and the tool
versions of `converter/environment.py`. Value: the output folder of a successful run, with its
report.json holding `{out}` where the run's output folder was.

Two levels: a whole conversion that was run before is restored from here without running anything;
a conversion that shares only its first PyTorch steps with an earlier one (a tune trial with the
same pruning and distillation, another quantization) takes those steps' results from
`<root>/torch-steps/` (converter/step_cache.py) and runs the rest.

Safe with many writers: an entry is filled in a private temp folder in the cache and renamed into
place with `os.replace` (step_cache.publish), which is atomic and fails when another process got there first (that
process's entry is kept: both are the same bytes). A reader only ever sees whole entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from ..converter.environment import versions
from ..converter.handle import sha256
from ..converter.outdir import OutputDir
from ..converter.recipe import Recipe
from ..converter.step_cache import canonical, publish

PLACEHOLDER = "{out}"  # where the output folder was, in a cached report.json
STEPS = "torch-steps"  # the sub-folder of PyTorch step results


def cache_dir() -> Path:
    """$EDGESMITH_CACHE, else ~/.cache/edgesmith/steps (XDG_CACHE_HOME respected)."""
    if os.environ.get("EDGESMITH_CACHE"):
        return Path(os.environ["EDGESMITH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesmith" / "steps"


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(canonical(recipe.to_dict()).encode()).hexdigest()


def _data_paths(recipe: Recipe) -> list[str]:
    paths = [recipe.calibration.path, recipe.verify.eval] + [getattr(s, "data", None) for s in recipe.steps]
    return sorted({str(p) for p in paths if p})


def key(model: Path, recipe: Recipe) -> str:
    """The cache key of converting `model` with `recipe` (see the module docstring)."""
    data = {p: sha256(Path(p)) if Path(p).exists() else None for p in _data_paths(recipe)}
    parts = {
        "model": sha256(model),
        "recipe": recipe.to_dict(),
        "data": data,
        "tools": versions(deterministic=True),
    }
    return hashlib.sha256(canonical(parts).encode()).hexdigest()


class Cache:
    """Folders `<root>/<key>/` holding a converted output folder."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()

    def lookup(self, key: str) -> Path | None:
        entry = self.root / key
        return entry if (entry / "report.json").is_file() else None

    def store(self, key: str, out: Path) -> None:
        """Copy a finished output folder into the cache; a no-op when the entry exists already."""

        def fill(folder: Path) -> bool:
            shutil.copytree(out, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("report.json"))
            text = (out / "report.json").read_text().replace(f"{out}/", f"{PLACEHOLDER}/")
            (folder / "report.json").write_text(text)
            return True

        publish(self.root, key, fill)

    def steps(self) -> Path:
        """Where PyTorch step results are cached (converter/step_cache.py), beside whole conversions."""
        return self.root / STEPS

    def restore(self, entry: Path, out: Path, inputs: tuple[Path, ...] = ()) -> dict:
        """Put a cached entry in place as `out`, all or nothing (the converter's own OutputDir)."""
        output = OutputDir(out, force=True, inputs=inputs)
        try:
            shutil.copytree(entry, output.staging, dirs_exist_ok=True)
            text = (entry / "report.json").read_text().replace(f"{PLACEHOLDER}/", f"{output.path}/")
            (output.staging / "report.json").write_text(text)
        except BaseException:
            output.discard()
            raise
        output.commit()
        return json.loads(text)


def clean_partials(root: Path) -> None:
    """Remove temp folders that dead processes left in the cache (called by `sweep`, once)."""
    for tmp in [*root.glob(".*.partial"), *(root / STEPS).glob(".*.partial")]:
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < _hour_ago():
                shutil.rmtree(tmp)


def _hour_ago() -> float:
    import time

    return time.time() - 3600
