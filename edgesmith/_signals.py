"""SIGTERM as an exception, raised where Python can unwind safely, so that every `finally` and
clean-up (staging folders, work folders, locks) runs as on Ctrl-C.

An exception raised in the middle of an import can leave a C extension half-initialized: torch,
interrupted while `import torch` runs (ONNX Runtime's quantization tools import it), aborts the
process at exit, and a later import of the half-loaded package fails as if it were not installed.
So a SIGTERM that arrives during an import is held and raised a few milliseconds after the import
ends, by re-checking on a SIGALRM timer.
"""

from __future__ import annotations

import signal

RETRY_S = 0.02  # how often a held SIGTERM checks whether the import has finished


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM; raised in the main thread, caught by the CLI (exit 143)."""


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def raise_terminated(signum, frame) -> None:
    """A SIGTERM (and SIGALRM, for a held one) handler: raise `Terminated`, unless an import is
    running, in which case check again in RETRY_S."""
    if _importing(frame):
        signal.signal(signal.SIGALRM, raise_terminated)
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    raise Terminated()
