"""Run an artifact on ARM kernels on an x86 host: qemu-user + an arm64 Debian userland + aarch64 wheels.

    run_aarch64(model, feeds, cpu="cortex-a72") -> outputs   # edgesmith.runtime, executed under qemu

The userland is Debian bookworm's arm64 `python3.11` and the shared libraries the wheels link
against, extracted (no chroot, no root) by `mmdebstrap --mode=chrootless --variant=extract`. The
aarch64 wheels of numpy, onnxruntime and ai-edge-litert (the versions installed here, so the host
and the device run the same release) are fetched with `pip download --platform ...` and unpacked.
Both are built once into `~/.cache/edgesmith/arm64-<hash>` (the hash covers everything that goes
in): in a temporary folder beside it, renamed into place when complete, so an interrupted or
concurrent build never leaves a half-made userland behind. Each emulated core gets a small root of
symlinks into it with its own /proc/cpuinfo.

`qemu-aarch64-static -L ROOT` looks guest paths up under ROOT first, then on the host: the guest's
Python finds its stdlib in ROOT and reads the model and the feeds from the host's temporary folder.
ONNX Runtime reads /proc/cpuinfo at import to identify the cores and crashes on the host's x86
cpuinfo, so ROOT/proc/cpuinfo holds one of the emulated core (`CPUS`). The edgesmith package is
copied in per run (the device side only: `__init__`, `errors`, `runtime/`), so the guest always
runs the code of this checkout.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import work_folder
from ..errors import EdgesmithError

if TYPE_CHECKING:
    from .spec import Target

ARCHES = ("aarch64",)
SUITE = "bookworm"
PYTHON = "python3.11"  # bookworm's Python; the wheels are fetched for it
PACKAGES = (
    "python3.11",
    "libpython3.11-stdlib",
    "libstdc++6",
    "zlib1g",
    "libffi8",
    "libssl3",
    "libexpat1",
    "libgomp1",
)
# aarch64 wheels, at the versions installed here (`_pins`). ai-edge-litert's aarch64 wheels are
# tagged manylinux_2_27, onnxruntime's 2_28: bookworm's glibc 2.36 takes both.
WHEELS = ("numpy", "onnxruntime", "ai-edge-litert")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64")

# Emulated cores: qemu's -cpu name -> the MIDR part number and hwcaps a real one reports in
# /proc/cpuinfo (Arm's Technical Reference Manuals, MIDR_EL1; Linux arch/arm64 cpuinfo names).
CPUS = {
    "cortex-a53": ("0xd03", "fp asimd evtstrm crc32 cpuid"),  # Raspberry Pi 3, phones' little cores
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid"),  # Raspberry Pi 4
    "cortex-a76": ("0xd0b", "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
}
# The device side of the package: what `edgesmith.runtime` imports, nothing of the converter.
# the device side of the package: what `import edgesmith.runtime` loads (tests/test_runtime.py checks
# that list stays this short)
DEVICE_FILES = ("__init__.py", "errors.py", "_io.py", "_quiet.py", "runtime")
GUEST = Path(__file__).with_name("emulate_guest.py")


def cpu_for(target: Target) -> str:
    """The emulated core for a device spec (`spec.Target`): its own core when qemu has it
    (rpi4: cortex-a72), else the closest by ISA (armv8.2-a and later: cortex-a76, with dot product)."""
    core = target.core.lower()
    if core in CPUS:
        return core
    return "cortex-a72" if target.isa in ("armv8-a", "armv8.0-a") else "cortex-a76"


def check_tools() -> str:
    """The qemu binary, or an EdgesmithError (exit 2) naming the Debian packages to install."""
    missing = [pkg for tool, pkg in (("qemu-aarch64-static", "qemu-user-static"), ("mmdebstrap", "mmdebstrap"))
               if shutil.which(tool) is None]  # fmt: skip
    if missing:
        raise EdgesmithError(
            f"ARM emulation needs {' and '.join(missing)}: run `sudo apt-get install {' '.join(missing)}` "
            "(Debian/Ubuntu)"
        )
    return shutil.which("qemu-aarch64-static") or "qemu-aarch64-static"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesmith"


def _pins() -> list[str]:
    """`name==version` of each wheel as installed here, else the bare name (the newest release)."""
    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _cpuinfo(cpu: str) -> str:
    part, features = CPUS[cpu]
    block = (
        f"BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n"
    )
    return "".join(f"processor\t: {i}\n{block}\n" for i in range(4))


def userland(cpu: str = "cortex-a72") -> tuple[Path, Path]:
    """(root, site) for `cpu`, built on first use: `root` is the -L prefix, `site` the unpacked
    wheels. The userland and wheels are shared by every core; each core's root is a folder of
    symlinks into it plus its own proc/cpuinfo (a few bytes, not another 260 MB)."""
    if cpu not in CPUS:
        raise EdgesmithError(f"unknown ARM core '{cpu}'; choose from {sorted(CPUS)}")
    check_tools()
    pins = _pins()
    key = json.dumps([SUITE, PACKAGES, pins, PLATFORMS])
    folder = cache_root() / f"arm64-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    _build_once(folder, lambda staging: _build_userland(staging, pins, key))
    cpu_root = folder / f"cpu-{cpu}"
    _build_once(cpu_root, lambda staging: _link_cpu_root(staging, folder / "root", cpu))
    return cpu_root, folder / "site"


def _build_once(folder: Path, build: Callable[[Path], None]) -> None:
    """`build(staging)` into a temporary folder beside `folder`, renamed into place when complete,
    unless `folder` exists: an interrupted build leaves nothing, a concurrent one loses the rename."""
    if folder.exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: its copy is as good as ours
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_userland(staging: Path, pins: list[str], key: str) -> None:
    _debootstrap(staging / "root")
    _wheels(pins, staging / "site", staging / "downloads")
    shutil.rmtree(staging / "downloads")
    _precompile(staging)
    (staging / "built.json").write_text(key + "\n")


def _link_cpu_root(staging: Path, root: Path, cpu: str) -> None:
    for entry in sorted(root.iterdir()):
        if entry.name != "proc":
            (staging / entry.name).symlink_to(Path("..") / root.name / entry.name)
    (staging / "proc").mkdir()
    (staging / "proc" / "cpuinfo").write_text(_cpuinfo(cpu))


def _run_tool(cmd: list[str], what: str) -> None:
    """Run a build tool; on failure raise with its last line of output (the root cause)."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"]
        raise EdgesmithError(f"{what} failed: {lines[-1][:300]}; check the network connection and retry")


def _debootstrap(root: Path) -> None:
    _run_tool(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=chrootless",
            "--arch=arm64",
            "--variant=extract",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
        ],  # fmt: skip
        f"building the arm64 Debian {SUITE} userland (mmdebstrap)",
    )


def _wheels(pins: list[str], site: Path, downloads: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _run_tool(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            *platforms,
            "--only-binary=:all:",
            "--python-version",
            PYTHON.removeprefix("python"),
            "--no-deps",
            "-d",
            str(downloads),
            *pins,
        ],  # fmt: skip
        f"downloading the aarch64 wheels ({', '.join(pins)})",
    )
    for wheel in sorted(downloads.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for path in site.rglob("*.so*"):  # zip files do not keep the execute bit
        path.chmod(0o755)


def _precompile(folder: Path) -> None:
    """Byte-compile the guest's stdlib and wheels once: the cache is read-only afterwards, and
    compiling numpy's sources on every emulated import would add ~5 s to each run. CPython 3.11 here
    writes the same .pyc as the guest's 3.11; another host Python has the guest compile them."""
    import compileall

    root = folder / "root"
    stdlib = root / "usr" / "lib" / PYTHON
    if sys.version_info[:2] == tuple(int(v) for v in PYTHON.removeprefix("python").split(".")):
        compileall.compile_dir(stdlib, quiet=2, stripdir=str(root), prependdir="/", workers=0)
        compileall.compile_dir(folder / "site", quiet=2, workers=0)
        return
    qemu = check_tools()
    guest = [qemu, "-L", str(root), str(root / "usr" / "bin" / PYTHON), "-I", "-m", "compileall", "-q", "-q"]
    subprocess.run([*guest, "-s", str(root), "-p", "/", str(stdlib)], capture_output=True)
    subprocess.run([*guest, str(folder / "site")], capture_output=True)


def _copy_device_package(dest: Path) -> None:
    package = Path(__file__).resolve().parents[1]
    target = dest / "edgesmith"
    target.mkdir(parents=True)
    for name in DEVICE_FILES:
        source = package / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)


def run_aarch64(
    model: Path, feeds: dict[str, np.ndarray], cpu: str = "cortex-a72", timeout: float = 900
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run `model` on `feeds` with edgesmith.runtime under qemu-aarch64 emulating `cpu`.

    Returns the outputs and what ran them (backend and its version, machine, the guest's wall time of
    load and run under emulation, which says nothing about a real device's speed)."""
    qemu = check_tools()
    root, site = userland(cpu)
    with work_folder("emulate") as work:
        _copy_device_package(work / "pkg")
        np.savez(work / "feeds.npz", allow_pickle=False, **feeds)
        cmd = [qemu, "-L", str(root), "-cpu", cpu, str(root / "usr" / "bin" / PYTHON), "-I", "-S",
               str(GUEST), str(work / "pkg"), str(site), str(Path(model).resolve()), str(work)]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"the emulated run of {Path(model).name} took over {timeout:.0f} s") from exc
        wall = time.perf_counter() - start
        info_path = work / "info.json"
        if done.returncode or not info_path.is_file():
            raise _guest_error(done, Path(model).name)
        info = json.loads(info_path.read_text())
        with np.load(work / "outputs.npz", allow_pickle=False) as loaded:
            outputs = {k: loaded[k] for k in info["outputs"]}
    return outputs, info | {"cpu": cpu, "wall_s": round(wall, 3)}


def _guest_error(done: subprocess.CompletedProcess[str], name: str) -> Exception:
    """The guest's own one-line error (bad input: exit 2), else an internal failure with its last line."""
    lines = done.stderr.strip().splitlines()
    last = lines[-1] if lines else f"exit code {done.returncode}"
    if done.returncode == 2 and last.startswith("edgesmith: error: "):
        return EdgesmithError(f"on emulated aarch64: {last.removeprefix('edgesmith: error: ')}")
    if done.returncode < 0:
        last = f"killed by signal {-done.returncode}"
    return RuntimeError(f"running {name} under qemu-aarch64 failed: {last[:400]}")


def verify(
    artifact: Path,
    feeds: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    precision: str,
    cpu: str = "cortex-a72",
) -> dict[str, Any]:
    """`compare` of the emulated run of `artifact` on `feeds` with `reference` (the host's outputs),
    plus what ran it (`device`). `convert` can call this per artifact for an ARM target."""
    outputs, info = run_aarch64(artifact, feeds, cpu=cpu)
    return compare(reference, outputs, precision) | {"device": info}


# --- comparing the emulated run with the host's ---------------------------------------------------

# Per precision: the least cosine and arg-max agreement (on the rows with a decisive winner,
# `_agreement`), and the largest max abs error relative to the largest reference magnitude.
# fp32: the kernels differ only in rounding and summation order.
# INT8: ARM runs s8 x s8 kernels and another requantization path than x86's u8 x s8, so single
# rounding steps of a quantized output may differ.
TOLERANCES = {
    "fp32": {"cosine": 0.99999, "agreement": 1.0, "max_abs_rel": 1e-3},
    "fp16": {"cosine": 0.9999, "agreement": 0.99, "max_abs_rel": 1e-2},
    "int8": {"cosine": 0.99, "agreement": 0.98, "max_abs_rel": 0.1},
}
TOLERANCES["int8-dynamic"] = TOLERANCES["int8"]


def compare(reference: dict[str, np.ndarray], got: dict[str, np.ndarray], precision: str) -> dict[str, Any]:
    """Max abs error, cosine and arg-max agreement of `got` against `reference`, per output, and
    whether each is within the precision's tolerance (`ok`)."""
    tol = TOLERANCES.get(precision, TOLERANCES["int8"])
    rows = {}
    for name, want in reference.items():
        want64, got64 = want.astype(np.float64).ravel(), np.asarray(got[name]).astype(np.float64).ravel()
        scale = float(np.abs(want64).max()) or 1.0
        max_abs = float(np.abs(got64 - want64).max()) if want64.size else 0.0
        denom = np.linalg.norm(want64) * np.linalg.norm(got64)
        cosine = float(want64 @ got64 / denom) if denom else float(np.array_equal(want64, got64))
        row = {"max_abs_error": max_abs, "max_abs_rel": max_abs / scale, "cosine": round(cosine, 7)}
        if want.ndim >= 2 and want.shape[-1] > 1:
            row |= _agreement(want, np.asarray(got[name]), 2 * tol["max_abs_rel"] * scale)
        row["ok"] = bool(
            row["cosine"] >= tol["cosine"]
            and row["max_abs_rel"] <= tol["max_abs_rel"]
            and row.get("agreement", 1.0) >= tol["agreement"]
        )
        rows[name] = row
    return {
        "precision": precision,
        "tolerance": tol,
        "outputs": rows,
        "ok": all(r["ok"] for r in rows.values()),
    }


def _agreement(want: np.ndarray, got: np.ndarray, decisive_gap: float) -> dict[str, Any]:
    """Arg-max agreement over the rows whose winner is decisive: its lead over the runner-up is more
    than `decisive_gap` (twice the error the precision allows, as both values may move by it). A row
    of two near-equal values (an embedding's largest components, an unsure classifier) may swap
    them within tolerance, which is not a kernel error. No decisive row: nothing to check."""
    want2, got2 = want.reshape(-1, want.shape[-1]), got.reshape(-1, want.shape[-1])
    top2 = np.sort(want2, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > decisive_gap
    if not decisive.any():
        return {"agreement_rows": 0}
    same = got2[decisive].argmax(-1) == want2[decisive].argmax(-1)
    return {"agreement": float(same.mean()), "agreement_rows": int(decisive.sum())}
