"""The output folder appears whole or not at all: work happens in a hidden sibling, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError


class OutputDir:
    def __init__(self, path: str | Path, force: bool = False, protect: tuple[Path, ...] = ()):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--out {self.path} is a file; choose a folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not force:
                raise InputError(
                    f"{self.path} already holds files; pass --force to replace them or choose another --out"
                )
            for p in protect:
                if p.resolve().is_relative_to(self.path.resolve()):
                    raise InputError(
                        f"--force would delete the input {p}, which lies in {self.path}; choose another --out"
                    )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))

    def commit(self) -> Path:
        """Move the staged files into place, replacing the old folder only now."""
        trash = None
        if self.path.exists():
            trash = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            self.path.rename(trash)
        self.staging.rename(self.path)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
