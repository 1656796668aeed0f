"""A conversion with a time limit (`tune --trial-timeout`): `run_task` in a process of its own.

A Ray Tune trial reports once, at its end, so Tune cannot stop one that runs too long (a MiniLM
static INT8 rescue took over 40 minutes here). With a limit, the trial's conversion runs in a child
process in a session of its own; past the limit that session (the child and what it started: the
ARM check's qemu, ONNX Runtime's helpers) is killed by its process-group id, the staging folder it
left is removed, and the trial becomes a record with status `stopped`: infeasible, and the search
goes on. The child imports the frameworks again (a few seconds), so this runs only with a limit.

    python -m edgesmith.scale.deadline TASK.json RECORD.json   (what the parent runs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .sweep import Task, run_task


def run_within(task: Task, cache: str | None, seconds: float) -> dict:
    """`run_task(task, cache)`, or a `stopped` record if it has not finished after `seconds`."""
    from ..converter.outdir import clean_stale

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgesmith-trial-") as tmp:
        spec, result, log = Path(tmp) / "task.json", Path(tmp) / "record.json", Path(tmp) / "stderr.log"
        spec.write_text(json.dumps({"task": dataclasses.asdict(task), "cache": cache}))
        with open(log, "wb") as stderr:
            child = subprocess.Popen([sys.executable, "-m", __name__, str(spec), str(result)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                     start_new_session=True)  # fmt: skip
            try:
                code = child.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)  # its session: the child's pid is the group id
                child.wait()
                clean_stale(Path(task.out))  # the staging folder of the killed conversion
                return _record(
                    task, "stopped", f"not finished within {seconds / 60:g} min (--trial-timeout)", started
                )
        if result.exists():
            return json.loads(result.read_text())
        tail = (log.read_text(errors="replace").strip().splitlines() or [f"exit code {code}"])[-1]
        return _record(task, "error", f"internal error: the trial's process died: {tail}", started)


def _record(task: Task, status: str, error: str, started: float) -> dict:
    """A record in `run_task`'s shape for a conversion that returned none."""
    return {"model": task.model, "recipe": task.label, "target": task.target, "folder": task.out,
            "recipe_sha256": task.recipe_sha256, "status": status, "error": error,
            "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip


def main(spec: str, result: str) -> None:
    job = json.loads(Path(spec).read_text())
    record = run_task(Task(**job["task"]), job["cache"])
    tmp = Path(result).with_suffix(".partial")
    tmp.write_text(json.dumps(record))
    tmp.replace(result)  # whole or not at all: a kill while writing leaves no half record


if __name__ == "__main__":
    main(*sys.argv[1:])
