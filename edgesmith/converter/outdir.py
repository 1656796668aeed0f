"""The output folder appears whole or not at all, and nothing the user gave is ever lost.

Work happens in a hidden sibling (`.DIR.partial-PID-*`), then one atomic exchange puts it in place
(`renameat2(RENAME_EXCHANGE)` on Linux; two renames elsewhere) and the old tree is removed after.
A run that fails verification goes beside the output as `DIR.rejected/`, leaving DIR as it was.
One run at a time per folder: an `flock` on `.DIR.lock` beside it. Folders of runs that died
(SIGKILL, power loss) carry their PID in their name and are removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .._io import check_utf8_path
from .._signals import raise_terminated
from ..errors import InputError

STAGING_ROOM = 40  # bytes a staging name adds to DIR's: ".", ".partial-", a PID, 8 random hex digits


class OutputDir:
    """A staging folder beside `path`, committed into place (or beside it, rejected) at the end.

    `inputs` are the files and folders the run reads: none may lie in what `--force` replaces, and
    the output may not go inside one of them."""

    def __init__(self, path: str | Path, force: bool = False, inputs: tuple[Path, ...] = ()):
        check_utf8_path(path, "--out")  # the exporters write into it
        self.path = _checked_path(Path(path))
        self.rejected = self.path.with_name(f"{self.path.name}.rejected")
        _check_inputs(self.path, self.rejected, inputs)
        self._created = _missing_parents(self.path)
        self._lock = None
        self._restore_signal = None
        staging: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _FolderLock(self.path)
            clean_stale(self.path)
            self._check_existing(force)
            self._restore_signal = _raise_on_sigterm()  # set before the staging exists: always cleaned
            staging = _fresh_name(self.path.parent, _staging_prefix(self.path))
            staging.mkdir(0o777)  # the umask applies, as to any folder the user makes
        except BaseException as exc:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            self._release()
            self._remove_created()
            if isinstance(exc, OSError):
                raise InputError(
                    f"cannot write --out {self.path}: {exc.strerror}; choose another --out"
                ) from exc
            raise
        self.staging: Path = staging

    def _check_existing(self, force: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--out {self.path} is a file; choose a folder")
        if self.path.is_dir() and any(self.path.iterdir()) and not force:
            raise InputError(
                f"{self.path} already holds files; pass --force to replace them or choose another --out"
            )

    def commit(self) -> Path:
        """Put the staged files in place, replacing the old folder in one step."""
        self._restore_sigterm()  # from here a SIGTERM ends the process: the swap itself is atomic
        try:
            _replace(self.staging, self.path)
        finally:
            self._release()
        return self.path

    def reject(self) -> Path:
        """Keep a run that failed verification beside the output (DIR.rejected), DIR untouched."""
        target = self.rejected
        if target.exists() and not _is_ours(target):  # a folder of the user's: pick a free name
            target = next(
                p for i in range(2, 10_000) if not (p := target.with_name(f"{target.name}-{i}")).exists()
            )
        self._restore_sigterm()
        try:
            _replace(self.staging, target)
        finally:
            self._release()
        return target

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._release()
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:  # parents this run created, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _restore_sigterm(self) -> None:
        if self._restore_signal is not None:
            self._restore_signal()
            self._restore_signal = None

    def _release(self) -> None:
        self._restore_sigterm()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _checked_path(path: Path) -> Path:
    """The folder to write for --out `path` (a symlink's target), or one line saying why it cannot
    be one. Nothing is created."""
    absolute = Path(os.path.abspath(path))
    _check_length(absolute)
    try:
        return _usable_folder(path, absolute)
    except OSError as exc:  # a loop of symlinks, a path the file system refuses
        raise InputError(f"--out {_short(path)}: {exc.strerror}; choose another --out") from None


def _check_length(absolute: Path) -> None:
    name_max, path_max = _limit(absolute, "PC_NAME_MAX", 255), _limit(absolute, "PC_PATH_MAX", 4096)
    longest = max(absolute.parts, key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) + STAGING_ROOM > name_max:
        raise InputError(f"--out: the name {_short(longest)} is {len(os.fsencode(longest))} bytes; keep names "
                         f"under {name_max - STAGING_ROOM} (the file system allows {name_max})")  # fmt: skip
    if len(os.fsencode(absolute)) + STAGING_ROOM > path_max:
        raise InputError(f"--out {_short(absolute)} is {len(os.fsencode(absolute))} bytes long; keep it under "
                         f"{path_max - STAGING_ROOM} (the system allows {path_max})")  # fmt: skip


def _usable_folder(path: Path, absolute: Path) -> Path:
    if path.is_symlink():
        if not path.exists():
            raise InputError(f"--out {path} is a symlink to {os.readlink(path)}, which does not exist; "
                             "remove the link or choose another --out")  # fmt: skip
        path = absolute = _real(path)
    if absolute.parent == absolute or _real(Path.cwd()).is_relative_to(_real(absolute)):
        raise InputError(f"--out {path} is the current folder or one above it, which a run would replace; "
                         "name a new folder, e.g. --out build")  # fmt: skip
    for ancestor in reversed(absolute.parents):
        if ancestor.is_symlink() and not ancestor.exists():
            raise InputError(f"--out {path}: {ancestor} is a symlink to {os.readlink(ancestor)}, which does not "
                             "exist (or loops); choose another --out")  # fmt: skip
        if ancestor.exists() and not ancestor.is_dir():
            raise InputError(f"--out {path}: {ancestor} is a file, not a folder; choose another --out")
    writable = next(p for p in [absolute.parent, *absolute.parent.parents] if p.exists())
    if not os.access(writable, os.W_OK | os.X_OK):
        raise InputError(
            f"--out {path}: cannot write in {writable} (permission denied); choose a folder you own"
        )
    return Path(os.path.normpath(path))  # as given (report.json names it so), without "x/.." parts


def _real(path: Path) -> Path:
    """The path with symlinks followed as far as they go (a loop stays a path, to fail when used)."""
    return Path(os.path.realpath(path))


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path.anchor or "/", name)
    except (OSError, ValueError, AttributeError):  # not on this OS
        return default


def _short(text) -> str:
    text = str(text)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-30:]}"


def _check_inputs(out: Path, rejected: Path, inputs: tuple[Path, ...]) -> None:
    """Refuse an output that would replace an input, or that would be written into one."""
    out_forms = {Path(os.path.abspath(out)), _real(out)}
    rejected = Path(os.path.abspath(rejected))
    for given in inputs:
        for a in {Path(os.path.abspath(given)), _real(Path(given))}:
            for o in out_forms:
                if a == o:
                    raise InputError(f"--out {out} is the input {given} itself; choose another --out")
                if a.is_relative_to(rejected):
                    raise InputError(f"the input {given} lies in {rejected.name}, where a run that fails "
                                     "verification goes; move it or choose another --out")  # fmt: skip
                if a.is_relative_to(o):
                    raise InputError(
                        f"--force would delete the input {given}, which lies in --out {out}; choose another --out"
                    )
                if o.is_relative_to(a):
                    raise InputError(
                        f"--out {out} is inside the input {given}; write the output somewhere else"
                    )


def _missing_parents(path: Path) -> list[Path]:
    """Parents of `path` that do not exist yet (deepest first): removed again if the run fails."""
    return [p for p in path.parents if not p.exists()]


def _staging_prefix(path: Path) -> str:
    return f".{path.name}.partial-{os.getpid()}-"


def _fresh_name(parent: Path, prefix: str) -> Path:
    """A new folder's path, known before the folder exists (unlike mkdtemp's), so an interrupt at
    any moment leaves nothing that its cleanup cannot name."""
    return parent / f"{prefix}{secrets.token_hex(4)}"


def _is_ours(folder: Path) -> bool:
    return folder.is_dir() and (not any(folder.iterdir()) or (folder / "report.json").is_file())


# -- the atomic replace ---------------------------------------------------------------------------

RENAME_EXCHANGE = 2


def _replace(new: Path, dest: Path) -> None:
    """Make `new` appear at `dest`; an old `dest` is swapped out in the same step, then removed."""
    if not dest.exists():
        new.rename(dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old tree
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-", dir=dest.parent))
    dest.rename(trash / "old")  # two renames where the OS has no exchange; a kill in between
    new.rename(dest)  # leaves the old tree in .DIR.old-PID-*, removed by the next run
    shutil.rmtree(trash, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # a libc without it (glibc < 2.28)
        return False
    at_fdcwd = -100
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


# -- one run per folder ---------------------------------------------------------------------------


class _FolderLock:
    """An exclusive flock on `.DIR.lock` beside DIR, held for the whole run, the file removed after.

    Removing a lock file races with a run that opened it just before: each run checks, once it
    holds the lock, that the file it locked is still the one at that name, and starts over if not."""

    def __init__(self, folder: Path):
        self.path = folder.with_name(f".{folder.name}.lock")
        self.fd = None
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not serialized there
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(f"another edgesmith run is writing --out {folder} (it holds {self.path.name}); "
                                 "wait for it to finish or choose another --out") from None  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.fd = fd
                    return
            os.close(fd)  # the holder before us removed it as we opened it: lock the new one

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding the lock, so no one else holds this inode
        os.close(self.fd)
        self.fd = None


# -- leftovers of runs that died ------------------------------------------------------------------

_PID = re.compile(r"-(\d+)-[^-]*$")


def clean_stale(folder: Path) -> None:
    """Remove staging and trash folders beside `folder`, and edgesmith work folders in the temp
    folder, whose process is gone (SIGKILL, a crash): the PID is part of each name. An old tree
    whose run died between the two renames of the fallback replace is put back first."""
    for path in folder.parent.glob(f".{glob_escape(folder.name)}.*-*-*"):
        if path.name.startswith(f".{folder.name}.old-") and not folder.exists() and _dead(path):
            with contextlib.suppress(OSError):
                (path / "old").rename(folder)
        if path.name.startswith((f".{folder.name}.partial-", f".{folder.name}.old-")):
            _remove_if_dead(path)
    for path in Path(tempfile.gettempdir()).glob("edgesmith-*-*"):
        _remove_if_dead(path)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _remove_if_dead(path: Path) -> None:
    if _dead(path):
        shutil.rmtree(path, ignore_errors=True)


def _dead(path: Path) -> bool:
    """Whether `path` is a folder of ours whose name holds the PID of a process that is gone."""
    match = _PID.search(path.name)
    if not match or not path.is_dir() or path.is_symlink():
        return False
    try:
        return path.stat().st_uid == os.getuid() and not _alive(int(match.group(1)))
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a number no process has): leave it
    return True


# -- permissions and signals ----------------------------------------------------------------------


def _raise_on_sigterm():
    """Turn SIGTERM into `Terminated` (a KeyboardInterrupt) for the run, so the staging and work
    folders are removed as on Ctrl-C. Returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous not in (signal.SIG_DFL, None):  # an application's own handler: leave it
            return None

        def handler(signum, frame):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process
            raise_terminated(signum, frame)

        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        return None
    return lambda: signal.signal(signal.SIGTERM, previous)
