"""`tune --trial-timeout`: a conversion in a process of its own, killed with what it started at the
limit (`scale/deadline.py`), and the same record as `run_task` when it finishes in time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist_cnn.onnx"
HOLDOUT = ROOT / "calibration_data" / "mnist" / "holdout.npz"

# A user's metric: top-1, but while a file `hang` lies beside it, it notes its process and group ids
# and never returns
METRIC = """
import os, time
from pathlib import Path

def top1(outputs, labels):
    here = Path(__file__).parent
    if (here / "hang").exists():
        (here / "ids").write_text(f"{os.getpid()} {os.getpgid(0)}")
        while True:
            time.sleep(1)
    return float(100 * (outputs[0].argmax(-1) == labels).mean())
"""


def _task(tmp_path: Path, name: str):
    from edgesmith.converter import build_recipe
    from edgesmith.scale.sweep import Task

    recipe = build_recipe(
        None, "fp32", None, str(HOLDOUT), model=str(MODEL), metric=f"{tmp_path / 'm.py'}:top1"
    )
    return Task(str(MODEL), name, recipe.to_dict(), None, str(tmp_path / name))


def test_a_trial_over_its_limit_is_stopped_with_everything_it_started(tmp_path):
    from edgesmith.scale.deadline import run_within
    from edgesmith.scale.sweep import run_task

    (tmp_path / "m.py").write_text(METRIC)
    in_time = run_within(_task(tmp_path, "a"), None, 300)  # finishes: run_task's record, through JSON
    here = run_task(_task(tmp_path, "b"), None)
    assert in_time["status"] == here["status"] == "ok", in_time.get("error")
    assert in_time["artifacts"][0]["score"] == here["artifacts"][0]["score"] > 95
    assert in_time["pid"] != os.getpid()  # converted in the child

    (tmp_path / "hang").touch()
    stopped = run_within(_task(tmp_path, "c"), None, 20)
    assert stopped["status"] == "stopped" and "not finished within 0.333333 min" in stopped["error"]
    assert 20 <= stopped["seconds"] < 40
    pid, group = map(int, (tmp_path / "ids").read_text().split())
    assert group == pid != os.getpgid(0)  # the conversion ran in a session of its own ...
    assert not Path(f"/proc/{pid}").exists()  # ... and is gone
    # no output and no staging folder left; the run's lock file (as after any killed run) is free
    assert not (tmp_path / "c").exists() and [p.name for p in tmp_path.glob(".c.*")] == [".c.lock"]
    with open(tmp_path / ".c.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
