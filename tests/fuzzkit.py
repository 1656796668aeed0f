"""The harness of the property-based fuzz tests (tests/test_fuzz_*.py) of what users hand edgesmith:
recipes, CLI options, model files, data, report.json.

Every generated case runs `edgesmith.cli.main` in-process (the `.tflite` runtime cases in a child
process, as a corrupt flatbuffer may crash native code) inside a sandbox folder, and must keep the
contract of issue 11:
- exit code 0 (done), 1 (verification failed), 2 (bad input) or 3 (internal error), never an
  exception escaping `main` and never "Traceback" on stderr;
- a failure is one `edgesmith: ...` line;
- nothing is written outside `--out` (the sandbox is hashed before and after; the temporary folder
  edgesmith uses must be empty again), and every input is byte-identical afterwards.

Profiles: `ci` (the default) is derandomized with no example database, so a failure reproduces on
every run and machine; `EDGESMITH_FUZZ=dev` draws fresh examples, ten times as many. With
`--hypothesis-show-statistics` the exit codes are counted (and the messages too when
`EDGESMITH_FUZZ_MESSAGES=1`), to see that a test reaches both success and refusal.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import resource
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("dev", parent=settings.get_profile("ci"), derandomize=False)
PROFILE = os.environ.get("EDGESMITH_FUZZ", "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    return n * 10 if PROFILE == "dev" else n


NO_PROFILE = "[profile]\nenabled = false\n"  # conversions without the latency runs: seconds, not minutes


# -- the sandbox and the contract ---------------------------------------------------------------------


class Sandbox:
    """A fresh folder per example: inputs go in it, `out` is the only place edgesmith may write."""

    def __init__(self, base: Path):
        self.root = Path(tempfile.mkdtemp(dir=base))
        self.tmp = self.root.parent / (self.root.name + "-tmp")  # edgesmith's temp dir: empty afterwards
        self.tmp.mkdir()
        self.out = self.root / "out"

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def sandbox_factory(base: Path):
    """`with make() as box:` gives a fresh Sandbox under `base`, removed after the block."""

    @contextlib.contextmanager
    def make():
        box = Sandbox(base)
        try:
            yield box
        finally:
            box.cleanup()

    return make


def tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 (or 'dir') for everything under `root`, symlinks not followed."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def memory_cap(extra: int = 6 << 30):
    """Address space limited to what the process has plus `extra`: a model declaring a huge tensor
    must end in an error, not in an out-of-memory kill of the test run (or of the machine's others)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_bytes() + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def _inside(box: Sandbox):
    """cwd = the sandbox and Python's temp dir = the sandbox's, for the duration of one command."""
    cwd, tempdir = Path.cwd(), tempfile.tempdir
    os.chdir(box.root)
    tempfile.tempdir = str(box.tmp)
    try:
        yield
    finally:
        os.chdir(cwd)
        tempfile.tempdir = tempdir


# Crashes this suite found in code other helpers own, by (file, function, exception) of the deepest
# edgesmith frame ("*": any exception). A generated case ending in one is set aside (hypothesis'
# `reject`, counted in the statistics) so that the rest of the run still guards the contract; each has
# a pinned reproducer at the end of this file (all fixed now: they stay as regression tests).
# the CLI writes the traceback of an internal error (exit 3) here; the harness shows it when one happens
LOGS = Path(tempfile.mkdtemp(prefix="edgesmith-fuzz-logs-"))
os.environ["EDGESMITH_LOG_DIR"] = str(LOGS)

KNOWN_CRASHES: dict[tuple[str, str, str], str] = {}  # (file, function, exception) -> what; none known now
KNOWN_TEMP_PATH = "is not a valid ONNX model"  # the ONNX frontend names its temporary copy in this message


def _known_crash(exc: BaseException) -> str | None:
    marker = f"{os.sep}edgesmith{os.sep}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if marker in f.filename]
    if not frames:
        return None
    file = frames[-1].filename.rsplit(marker, 1)[1]
    for key in ((file, frames[-1].name, type(exc).__name__), (file, frames[-1].name, "*")):
        if key in KNOWN_CRASHES:
            return KNOWN_CRASHES[key]
    return None


def cli(
    box: Sandbox, *argv, writes: tuple[Path, ...] | None = None, known: bool = True
) -> tuple[int, str, str]:
    """Run `edgesmith ARGV` in `box` and check the contract; returns (code, stdout, stderr).

    `writes`: the only paths that may change (default: `--out` and the `DIR.rejected` beside it).
    `known`: under @given, set a case that ends in a known crash aside instead of failing."""
    from edgesmith.cli import main

    writes = writes if writes is not None else (box.out, box.out.with_name(box.out.name + ".rejected"))
    argv = [str(a) for a in argv]
    before = tree(box.root)
    stdout, stderr = io.StringIO(), io.StringIO()
    with _inside(box), memory_cap(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: a malformed command line
            code = exc.code
        except BaseException as exc:  # anything escaping main() breaks the contract
            if known and _known_crash(exc):
                set_aside(f"known crash: {_known_crash(exc)}")
            pytest.fail(f"edgesmith {' '.join(argv)}: an exception escaped the CLI\n{traceback.format_exc()}")
    if known and str(box.tmp) in stderr.getvalue() and KNOWN_TEMP_PATH in stderr.getvalue():
        set_aside("known: a temporary path in the message")
    if code == 3:  # main() turned an exception into "internal error": on bad input that is a bug too
        logs = sorted(LOGS.glob("*.log"), key=lambda p: p.stat().st_mtime)
        pytest.fail(f"edgesmith {' '.join(argv)}: an internal error (exit 3) on fuzzed input\n"
                    + (logs[-1].read_text() if logs else stderr.getvalue()))  # fmt: skip
    check_contract(argv, code, stderr.getvalue(), before, tree(box.root), box, writes)
    note(f"exit {code}")
    if os.environ.get("EDGESMITH_FUZZ_MESSAGES"):  # the messages themselves, to read them over
        note(stderr.getvalue().strip()[-150:])
    return code, stdout.getvalue(), stderr.getvalue()


def set_aside(why: str) -> None:
    """Reject this generated case, counted as `why`; outside @given this does nothing."""
    from hypothesis import reject
    from hypothesis.control import currently_in_test_context

    if currently_in_test_context():
        note(why)
        reject()


def note(what: str) -> None:
    """Count an outcome in hypothesis' statistics (`--hypothesis-show-statistics`) when under @given."""
    with contextlib.suppress(Exception):
        event(what)


def check_contract(argv, code, err: str, before: dict, after: dict, box: Sandbox, writes) -> None:
    what = f"edgesmith {' '.join(argv)}"
    assert code in (0, 1, 2, 3), f"{what}: exit code {code}\n{err}"
    assert "Traceback" not in err, f"{what}: a traceback on stderr\n{err}"
    if code != 0:
        lines = [line for line in err.splitlines() if line.startswith("edgesmith")]
        assert len(lines) == 1, f"{what}: exit {code} needs exactly one 'edgesmith: ...' line\n{err}"
        assert str(box.tmp) not in err, f"{what}: the message names a temporary path\n{err}"
    allowed = [str(p.relative_to(box.root)) for p in writes]

    def free(rel: str) -> bool:
        return any(rel == a or rel.startswith(a + os.sep) for a in allowed)

    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p) and not free(p))
    assert not changed, f"{what}: changed outside {allowed}: {changed}\n{err}"
    # torch keeps its compiler cache in the temp dir on purpose (torchinductor_USER): not a leftover
    left = sorted(
        str(p.relative_to(box.tmp)) for p in box.tmp.glob("*") if not p.name.startswith("torchinductor_")
    )
    assert not left, f"{what}: left temporary files behind: {left}"
    if code >= 2:  # a refused run creates nothing
        for path in writes:
            rel = str(path.relative_to(box.root))
            assert before.get(rel) == after.get(rel), f"{what}: exit {code} but {rel} changed\n{err}"


def mutate(data: bytes, how) -> bytes:
    kind, arg = how
    if kind == "truncate":
        return data[:arg]
    buf = bytearray(data)
    if kind == "flip":
        for pos, bit in arg:
            buf[pos % len(buf)] ^= 1 << bit
    else:  # overwrite
        pos, chunk = arg
        buf[pos % len(buf) : pos % len(buf) + len(chunk)] = chunk
    return bytes(buf)


def mutations(size: int):
    """Truncations, bit flips and overwritten runs, biased to the first and last 2 KB where the
    headers, the zip directory and protobuf's trailing graph inputs/outputs live."""
    position = st.one_of(
        st.integers(0, min(size, 2048) - 1),
        st.integers(max(0, size - 2048), size - 1),
        st.integers(0, size - 1),
    )
    return st.one_of(
        st.tuples(st.just("truncate"), position),
        st.tuples(st.just("flip"), st.lists(st.tuples(position, st.integers(0, 7)), min_size=1, max_size=6)),
        st.tuples(st.just("overwrite"), st.tuples(position, st.binary(min_size=1, max_size=32))),
    )
