"""Issue 11, as an attacker and a careless user: every bad input ends in one line and exit 2 (or 1
for a failed verification), nothing given is modified or deleted (sha256 before and after), and
nothing is left beside --out. One test per class of case."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgesmith.converter import outdir

from conftest import ROOT, SHIPPED_MODEL
from models import small_cnn

PYTHON_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def one_line(result, code: int = 2, *phrases: str) -> str:
    """The CLI ended with `code` and printed one line (no traceback) holding every phrase."""
    got, _, stderr = result
    lines = stderr.strip().splitlines()
    assert got == code, stderr
    assert len(lines) == 1 and "Traceback" not in stderr and lines[0].startswith("edgesmith: "), stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def hashes(*paths: Path) -> dict[str, str]:
    """sha256 of every file under the given files and folders (the inputs' fingerprint)."""
    out = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def beside(out: Path) -> list[Path]:
    """What a run may have left next to --out: staging, trash, lock files."""
    return sorted(out.parent.glob(f".{out.name}.*"))


# -- 1. data loss: --out and the inputs -----------------------------------------------------------


@pytest.mark.parametrize("inside", ["calibration", "eval", "recipe", "model"])
def test_force_never_deletes_an_input(cli, tmp_path, inside):
    out = tmp_path / "out"
    out.mkdir()
    where = {k: (out if k == inside else tmp_path) for k in ("calibration", "eval", "recipe", "model")}
    model = small_cnn(where["model"] / "cnn.onnx")
    calibration = where["calibration"] / "cal"  # a folder, like an image folder
    calibration.mkdir()
    np.save(calibration / "x.npy", np.zeros((2, 1, 28, 28), np.float32))
    evaluation = where["eval"] / "eval.npz"
    np.savez(evaluation, input=np.zeros((2, 1, 28, 28), np.float32), labels=np.zeros(2, np.int64))
    recipe = where["recipe"] / "r.toml"
    recipe.write_text("[profile]\nenabled = false\n")
    before = hashes(tmp_path)
    result = cli("convert", model, "--recipe", recipe, "--calibration", calibration, "--eval", evaluation,
                 "--out", out, "--force", "-q")  # fmt: skip
    name = {"calibration": "cal", "eval": "eval.npz", "recipe": "r.toml", "model": "cnn.onnx"}[inside]
    one_line(result, 2, "--force would delete the input", name)
    assert hashes(tmp_path) == before and beside(out) == []


def test_out_inside_an_input_folder_is_refused(cli, tmp_path, cnn):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"not really")
    before = hashes(tmp_path)
    for out in (images, images / "out"):
        one_line(cli("convert", cnn, "--calibration", images, "--out", out, "-q"), 2, "the input")
    assert hashes(tmp_path) == before and sorted(images.iterdir()) == [images / "a.png"]


@pytest.mark.parametrize("case", ["dot", "parent of cwd", "dangling symlink", "symlink loop", "under a file",
                                  "too long a name", "too long a path", "read-only parent"])  # fmt: skip
def test_unusable_out_is_one_line_and_leaves_nothing(cli, tmp_path, cnn, cal, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    out = {"dot": Path("."), "parent of cwd": Path(".."), "dangling symlink": tmp_path / "link",
           "symlink loop": tmp_path / "loop" / "out", "under a file": tmp_path / "f" / "out",
           "too long a name": tmp_path / ("x" * 250), "too long a path": tmp_path.joinpath(*["d" * 200] * 25),
           "read-only parent": tmp_path / "ro" / "sub" / "out"}[case]  # fmt: skip
    if case == "dangling symlink":
        out.symlink_to(tmp_path / "missing")
    if case == "symlink loop":
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
    if case == "under a file":
        (tmp_path / "f").write_text("a file")
    if case == "read-only parent":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        if os.access(tmp_path / "ro", os.W_OK):  # root writes anywhere: a folder root cannot write in
            out = Path("/sys/es-out/sub/out")
    listing = sorted(tmp_path.iterdir())
    before = hashes(tmp_path)
    line = one_line(cli("convert", cnn, "--calibration", cal, "--out", out, "-q"), 2, "--out")
    assert ".partial-" not in line and "/edgesmith-" not in line  # no temporary path
    assert sorted(tmp_path.iterdir()) == listing and hashes(tmp_path) == before
    assert not Path("/sys/es-out").exists()


def test_failed_verification_keeps_the_previous_output(cli, tmp_path, mnist_eval_npz):
    """A good run, then one whose INT8 calibration clips everything: the good output stays byte for
    byte, the rejected run is in out.rejected/ and the message says so."""
    recipe = tmp_path / "r.toml"
    recipe.write_text("[verify]\nmax_drop = 0.5\nmax_samples = 500\n[profile]\nenabled = false\n")
    wide = np.random.default_rng(0).normal(0, 1, (64, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "wide.npy", wide)
    np.save(tmp_path / "narrow.npy", wide * 0.01)
    out = tmp_path / "out"
    args = ("convert", SHIPPED_MODEL, "--recipe", recipe, "--eval", mnist_eval_npz, "--out", out, "-q")
    assert cli(*args, "--calibration", tmp_path / "wide.npy", "--preset", "fp16")[0] == 0
    good = hashes(out)
    (tmp_path / "int8.toml").write_text(  # as configured: the default rescue would keep layers float
        recipe.read_text() + '[[steps]]\nkind = "quantize"\nmode = "static"\nsearch = "off"\n'
    )
    args = ("convert", SHIPPED_MODEL, "--recipe", tmp_path / "int8.toml", *args[4:])
    line = one_line(cli(*args, "--calibration", tmp_path / "narrow.npy", "--force"), 1, "max_drop")
    assert f"this run is in {out}.rejected" in line and hashes(out) == good
    rejected = json.loads((tmp_path / "out.rejected" / "report.json").read_text())
    assert rejected["verify"]["drop"] > 0.5 and beside(out) == []


def test_one_run_per_output_folder(cli, tmp_path, cnn, cal):
    out = tmp_path / "out"
    running = outdir.OutputDir(out)  # another run, in the middle of its work
    try:
        one_line(cli("convert", cnn, "--calibration", cal, "--out", out, "-q"), 2, "another edgesmith run")
    finally:
        running.discard()
    assert not out.exists() and beside(out) == []
    assert cli("convert", cnn, "--calibration", cal, "--out", out, "-q")[0] == 0
    first = hashes(out)
    one_line(
        cli("convert", cnn, "--calibration", cal, "--out", out, "-q"), 2, "already holds files", "--force"
    )
    assert hashes(out) == first and beside(out) == []


def test_replace_is_one_exchange(tmp_path, monkeypatch):
    """renameat2(RENAME_EXCHANGE): at no moment is there no folder at the output's name."""
    old, new = tmp_path / "out", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "v").write_text("1")
    (new / "v").write_text("2")
    inodes = old.stat().st_ino, new.stat().st_ino
    assert outdir._exchange(new, old), "Linux with glibc >= 2.28 has renameat2"
    assert (old.stat().st_ino, new.stat().st_ino) == inodes[::-1] and (old / "v").read_text() == "2"
    out = tmp_path / "out2"
    staged = outdir.OutputDir(out)
    (staged.staging / "a").write_text("first")
    staged.commit()
    staged = outdir.OutputDir(out, force=True)
    (staged.staging / "a").write_text("second")
    staged.commit()
    assert (out / "a").read_text() == "second" and beside(out) == []
    monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)  # an OS without it: two renames
    staged = outdir.OutputDir(out, force=True)
    (staged.staging / "a").write_text("third")
    staged.commit()
    assert (out / "a").read_text() == "third" and beside(out) == []
    trash = tmp_path / f".out2.old-{_dead_pid()}-abcd1234"  # killed between the two renames:
    trash.mkdir()  # the next run puts the old tree back before anything else
    out.rename(trash / "old")
    outdir.clean_stale(out)
    assert (out / "a").read_text() == "third" and beside(out) == []


def test_output_folders_follow_the_umask(cli, tmp_path, cnn, cal):
    previous = os.umask(0o027)
    try:
        assert cli("convert", cnn, "--calibration", cal, "--out", tmp_path / "out", "-q")[0] == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_leftovers_of_dead_runs_are_removed_by_the_next(cli, tmp_path, cnn, cal):
    out, dead = tmp_path / "out", _dead_pid()
    stale = [
        tmp_path / f".out.partial-{dead}-abcd1234",
        Path(outdir.tempfile.gettempdir()) / f"edgesmith-{dead}-x1",
    ]
    live = [tmp_path / f".out.partial-{os.getppid()}-abcd1234", tmp_path / f".other.partial-{dead}-abcd1234"]
    for folder in stale + live:
        folder.mkdir()
        (folder / "half-written.onnx").write_bytes(b"x")
    try:
        assert cli("convert", cnn, "--calibration", cal, "--out", out, "-q")[0] == 0
        assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    finally:
        for folder in stale + live:
            shutil.rmtree(folder, ignore_errors=True)


def _convert_in_background(tmp_path: Path, mnist_eval_npz: Path, out: Path) -> subprocess.Popen:
    """A real `edgesmith convert` in a child process, returned once its staging folder exists."""
    recipe = tmp_path / "background.toml"
    recipe.write_text("[verify]\nmax_samples = 500\n[profile]\nenabled = false\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesmith", "convert", str(SHIPPED_MODEL), "--preset", "int8-dynamic",
         "--recipe", str(recipe), "--eval", str(mnist_eval_npz), "--out", str(out), "-q"],
        stderr=subprocess.PIPE, text=True, env=PYTHON_ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    return proc


@pytest.mark.slow  # a whole convert in a child process: 5 s alone, 30 s on a loaded 2-core machine
def test_a_second_process_waits_its_turn(cli, tmp_path, mnist_eval_npz, cnn, cal):
    """Two real processes on one --out: the second is refused while the first runs, whose output
    then appears whole."""
    out = tmp_path / "out"
    first = _convert_in_background(tmp_path, mnist_eval_npz, out)
    one_line(cli("convert", cnn, "--calibration", cal, "--out", out, "-q"), 2, "another edgesmith run")
    assert first.wait(120) == 0, first.stderr.read()
    first.stderr.close()
    assert json.loads((out / "report.json").read_text())["artifacts"][0]["verify"]["agreement"] > 90
    assert beside(out) == []


def test_sigterm_and_sigkill_leave_nothing(cli, tmp_path, mnist_eval_npz, cnn, cal):
    out = tmp_path / "out"
    proc = _convert_in_background(tmp_path, mnist_eval_npz, out)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    stderr = proc.stderr.read()
    assert code == 143, stderr  # 128 + SIGTERM, after the clean-up
    assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr, stderr
    assert beside(out) == [] and not out.exists()
    assert not list(Path(outdir.tempfile.gettempdir()).glob(f"edgesmith-{proc.pid}-*"))
    proc = _convert_in_background(tmp_path, mnist_eval_npz, out)
    proc.kill()  # SIGKILL: nothing can clean up now; the next run does
    proc.wait(60)
    proc.stderr.close()
    assert list(tmp_path.glob(".out.partial-*"))
    assert cli("convert", cnn, "--calibration", cal, "--out", out, "-q")[0] == 0
    assert beside(out) == [] and not list(Path(outdir.tempfile.gettempdir()).glob(f"edgesmith-{proc.pid}-*"))


def test_a_sigterm_during_an_import_waits_for_the_import_to_finish(tmp_path):
    """An exception raised inside `import torch` aborts the process at exit (SIGABRT, seen in CI):
    a SIGTERM that lands in an import is raised just after it, with the module whole."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.2)\nWHOLE = True\n"
    )
    script = (
        "import signal, sys\n"
        "from edgesmith._signals import Terminated, raise_terminated\n"
        "signal.signal(signal.SIGTERM, raise_terminated)\n"
        "try:\n"
        "    import slow_module\n"
        "    while True: pass\n"
        "except Terminated:\n"
        "    sys.exit(143 if sys.modules['slow_module'].WHOLE else 1)\n"
    )
    env = {**PYTHON_ENV, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    assert subprocess.run([sys.executable, "-c", script], env=env, timeout=60).returncode == 143


# -- 2. injection: ssh and adb --------------------------------------------------------------------

HOSTILE_NAME = "m;touch PWNED;$(touch PWNED2).onnx"  # a legal file name, and shell code if unquoted


@pytest.mark.parametrize("spec", ["-oProxyCommand=touch${IFS}PWNED", "-oProxyCommand=x@host", "pi@-oFoo=1"])
def test_ssh_options_in_the_host_are_refused(cli, tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    before = hashes(SHIPPED_MODEL)
    one_line(cli("profile", SHIPPED_MODEL, f"--ssh={spec}", "--runs", "1"), 2, "'-'")
    assert not list(tmp_path.iterdir()) and hashes(SHIPPED_MODEL) == before


def test_ssh_argv_ends_options_before_the_host_and_quotes_every_word(tmp_path, monkeypatch):
    """The remote command string, run by a real `sh -c` as sshd does, gives back the exact words."""
    from edgesmith.targets import ssh

    device = ssh.SshDevice.parse("pi@board.local:2222", options=("StrictHostKeyChecking=no",))
    argv = device.argv("echo hi")
    assert argv[0] == "ssh" and argv[-3:] == ["--", "pi@board.local", "echo hi"]
    assert argv.index("--") > argv.index("StrictHostKeyChecking=no")
    seen = []
    monkeypatch.setattr(ssh.SshDevice, "_retry", lambda self, args, timeout, what: seen.append(args))
    device.run(["printf", "%s\\n", HOSTILE_NAME, "a b"], 10, prefix="cd . && ")
    assert seen[0][:-1] == argv[:-1]
    done = subprocess.run(["sh", "-c", seen[0][-1]], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout == f"{HOSTILE_NAME}\na b\n" and not list(tmp_path.iterdir())


def _device_adb(tmp_path: Path, monkeypatch) -> Path:
    """An `adb` on PATH whose `shell` runs its arguments the way a phone does (joined with spaces,
    given to `sh -c`) in a folder standing for the device, with this interpreter as its Python."""
    device, bin_dir = tmp_path / "device", tmp_path / "bin"
    device.mkdir()
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    script = bin_dir / "adb"
    script.write_text(f"""#!/bin/sh
[ "$1" = -s ] && shift 2
case "$1" in
  devices) printf 'List of devices attached\\nPHONE1\\tdevice\\n' ;;
  push) cp "$2" "$3" ;;
  shell) shift; cd {device} && exec sh -c "$*" ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("edgesmith.targets.adb.REMOTE", str(device / "edgesmith"))
    monkeypatch.setattr("edgesmith.targets.adb.BENCHMARK", str(device / "benchmark_model"))
    return device


def test_adb_shell_words_are_quoted(tmp_path, monkeypatch, cli):
    """An artifact whose name is shell code is measured as a file name; nothing runs on the device."""
    from edgesmith.targets import adb

    device = _device_adb(tmp_path, monkeypatch)
    artifact = tmp_path / HOSTILE_NAME
    shutil.copy(SHIPPED_MODEL, artifact)
    assert adb.shell("ls", HOSTILE_NAME) == ["shell", f"ls '{HOSTILE_NAME}'"]
    code, out, err = cli("profile", artifact, "--adb", "PHONE1", "--runs", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["p50_ms"] > 0 and json.loads(out)["device"] == "adb:PHONE1"
    assert not list(device.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    one_line(cli("profile", artifact, "--adb=-H", "--runs", "1"), 2, "not a device serial")


# -- 3. file arguments ----------------------------------------------------------------------------


def _bad_arrays(tmp_path: Path, kind: str) -> Path:
    x = np.random.default_rng(0).normal(size=(4, 1, 28, 28)).astype(np.float32)
    path = tmp_path / f"{kind.replace(' ', '_')}.npz"
    if kind == "truncated npy":
        path = path.with_suffix(".npy")
        np.save(path, x)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "truncated npz":
        np.savez(path, input=x, labels=np.arange(4))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        arrays = {"text": {"input": x.astype(str)}, "complex": {"input": x + 1j},
                  "objects": {"input": np.array([x, "a"], dtype=object)},
                  "text labels": {"input": x, "labels": np.array(list("abcd"))}}[kind]  # fmt: skip
        np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "kind", ["text", "complex", "objects", "text labels", "truncated npz", "truncated npy"]
)
def test_array_files_that_are_not_numbers(cli, tmp_path, cnn, cal, kind):
    """The same one line from `run --input`, `convert --calibration` and `convert --eval`."""
    bad = _bad_arrays(tmp_path, kind)
    out = tmp_path / "out"
    before = hashes(tmp_path)
    expected = {"text": "holds text", "complex": "imaginary part", "objects": "never loads",
                "text labels": "`labels` holds text", "truncated npz": "not a readable numpy file",
                "truncated npy": "not a readable numpy file"}[kind]  # fmt: skip
    one_line(cli("convert", cnn, "--calibration", bad, "--out", out, "-q"), 2, "calibration data", expected)
    one_line(
        cli("convert", cnn, "--calibration", cal, "--eval", bad, "--out", out, "-q"), 2, "eval data", expected
    )
    if kind not in ("text labels", "truncated npy"):  # `run` drops labels; it reads .npz
        one_line(cli("run", cnn, "--input", bad), 2, "--input", expected)
    assert hashes(tmp_path) == before and not out.exists() and beside(out) == []


def _model(path: Path, elem: int, shape: list) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, shape)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["text input", "huge dimension", "huge dynamic"])
def test_model_inputs_edgesmith_cannot_feed(cli, tmp_path, case):
    from onnx import TensorProto

    model = {"text input": lambda p: _model(p, TensorProto.STRING, ["batch", 4]),
             "huge dimension": lambda p: _model(p, TensorProto.FLOAT, [1, 10**12]),
             "huge dynamic": lambda p: _model(p, TensorProto.FLOAT, ["batch", 10**7, 10**7])}[case](tmp_path / "m.onnx")  # fmt: skip
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 4), np.float32))
    out = tmp_path / "out"
    before = hashes(tmp_path)
    phrase = "takes text" if case == "text input" else "GiB for one sample"
    one_line(cli("convert", model, "--preset", "fp32", "--out", out, "-q"), 2, phrase)
    one_line(cli("run", model, "--input", tmp_path / "in.npz"), 2, phrase)
    one_line(cli("profile", model, "--runs", "2"), 2, phrase)
    assert hashes(tmp_path) == before and not out.exists() and beside(out) == []


def test_non_utf8_paths(cli, tmp_path, cnn, cal):
    """ONNX Runtime and onnx open only UTF-8 paths: a model or --out named otherwise is refused by
    name; data and recipe files, which numpy and tomllib read, work."""
    odd = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, as an old archive or a Windows share may give
    model = tmp_path / f"{odd}.onnx"
    shutil.copy(cnn, model)
    data = tmp_path / f"{odd}.npy"
    shutil.copy(cal, data)
    recipe = tmp_path / f"{odd}.toml"
    recipe.write_text("[profile]\nenabled = false\n")
    before = hashes(tmp_path)
    line = one_line(
        cli("convert", model, "--calibration", cal, "--out", tmp_path / "o1", "-q"), 2, "not valid UTF-8"
    )
    assert "caf\\xe9.onnx" in line
    one_line(
        cli("convert", cnn, "--calibration", cal, "--out", tmp_path / odd, "-q"),
        2,
        "--out",
        "not valid UTF-8",
    )
    one_line(cli("run", model, "--input", tmp_path / "x.npz"), 2, "not valid UTF-8")
    assert hashes(tmp_path) == before and not (tmp_path / "o1").exists() and not (tmp_path / odd).exists()
    assert (
        cli("convert", cnn, "--calibration", data, "--recipe", recipe, "--out", tmp_path / "ok", "-q")[0] == 0
    )


def test_run_output_that_cannot_be_a_file(cli, tmp_path, cnn):
    np.savez(tmp_path / "in.npz", input=np.zeros((2, 1, 28, 28), np.float32))
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    before, listing = hashes(tmp_path), sorted(tmp_path.rglob("*"))
    for output, phrase in [("folder", "is a folder"), ("missing/out.npz", "does not exist"),
                           ("file/out.npz", "is a file, not a folder")]:  # fmt: skip
        one_line(cli("run", cnn, "--input", tmp_path / "in.npz", "--output", tmp_path / output), 2, phrase)
    assert hashes(tmp_path) == before and sorted(tmp_path.rglob("*")) == listing
    assert cli("run", cnn, "--input", tmp_path / "in.npz", "--output", tmp_path / "folder" / "o.npz")[0] == 0
    assert np.load(tmp_path / "folder" / "o.npz")["logits"].shape == (2, 10)


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    """A real convert folder (small CNN, fp32, no profiling) whose report.json the tests spoil."""
    from edgesmith.cli import main

    d = tmp_path_factory.mktemp("report")
    (d / "r.toml").write_text("[profile]\nenabled = false\n")
    code = main(["convert", str(small_cnn(d / "cnn.onnx")), "--recipe", str(d / "r.toml"), "--preset", "fp32",
                 "--out", str(d / "out"), "-q"])  # fmt: skip
    assert code == 0
    return d / "out"


@pytest.mark.parametrize("case", ["truncated", "not utf-8", "a list", "no artifacts", "artifact without path",
                                  "size is text", "target estimate is text", "targets is text",
                                  "artifact missing"])  # fmt: skip
def test_report_on_a_spoiled_report_json(cli, tmp_path, report_folder, case):
    folder = tmp_path / "out"
    shutil.copytree(report_folder, folder)
    good = json.loads((folder / "report.json").read_text())
    artifact = good["artifacts"][0]
    spoiled = {
        "truncated": (folder / "report.json").read_bytes()[:200],
        "not utf-8": b"\xff\xfe{}",
        "a list": b"[]",
        "no artifacts": json.dumps({k: v for k, v in good.items() if k != "artifacts"}).encode(),
        "artifact without path": json.dumps(good | {"artifacts": [{"size_bytes": 1}]}).encode(),
        "size is text": json.dumps(good | {"artifacts": [artifact | {"size_bytes": "1 KB"}]}).encode(),
        "target estimate is text": json.dumps(good | {"artifacts": [artifact | {"targets": {"host": {"p50_ms": "x"}}}]}).encode(),
        "targets is text": json.dumps(good | {"recipe": {"profile": {"targets": "rpi4"}}}).encode(),
        "artifact missing": json.dumps(good | {"artifacts": [artifact | {"path": "gone.onnx"}]}).encode(),
    }[case]  # fmt: skip
    (folder / "report.json").write_bytes(spoiled)
    listing, before = sorted(folder.iterdir()), hashes(folder)
    one_line(cli("report", folder), 2, "report.json", "edgesmith convert")
    assert hashes(folder) == before and sorted(folder.iterdir()) == listing  # no report.html, no targets.json
