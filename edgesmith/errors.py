"""Errors a user can act on.

Every error edgesmith raises on bad input is an `EdgesmithError`: one line that names the problem and
the fix. The CLI prints it and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib


class EdgesmithError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""

    exit_code = 2


class InputError(EdgesmithError):
    """A file, flag or recipe value is wrong."""


class InvalidModel(InputError):
    """A model file a runtime refuses to open. Bad input when the user gave the file; when edgesmith
    wrote it (an artifact), the converter turns it into an internal error instead."""


class MissingExtra(EdgesmithError):
    """An optional dependency is not installed; the message names the `pip install` that fixes it."""

    def __init__(self, extra: str, module: str | None = None, why: str = ""):
        self.extra = extra
        what = f"'{module}' is not installed" if module else f"the '{extra}' extra is not installed"
        reason = f" ({why})" if why else ""
        super().__init__(f"{what}{reason}: run `pip install 'edgesmith[{extra}]'`")


class VerificationFailed(EdgesmithError):
    """An artifact lost more accuracy than the recipe allows (`[verify] max_drop`)."""

    exit_code = 1


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def require(module: str, extra: str, why: str = ""):
    """Import `module` or raise MissingExtra naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(extra, module.split(".")[0], why) from exc
