"""Progress bars on stderr for long work (tqdm when installed); silent with `quiet`, and when stderr is
not a terminal (a log file or a pipe would get a line per update: 100+ lines for one convert)."""

from __future__ import annotations

import contextlib
import sys


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def bar(total: int, desc: str, unit: str = "it", quiet: bool = False):
    if quiet or not _is_terminal(sys.stderr):
        yield _Silent()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _Silent()
        return
    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True) as b:
        yield b


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
