"""`edgesmith sweep` on a real Ray cluster that the tests start (a head node on 127.0.0.1 plus one
more worker node) and stop by the processes they started, never by name (`ray stop` would kill
every Ray on the machine, other users' included)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import tomllib

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist_cnn.onnx"
CALIBRATION = ROOT / "calibration_data" / "mnist"
RAY = Path(sys.executable).with_name("ray")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _ports_flags() -> list[str]:
    """Every port a node opens, chosen free, so the cluster never meets another one on this machine."""
    names = ("node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
             "dashboard-agent-grpc-port", "dashboard-agent-listen-port")  # fmt: skip
    ports = _free_ports(len(names) + 1)
    low = 20000 + (ports[-1] % 200) * 100  # a private range of worker ports
    return [f"--{n}={p}" for n, p in zip(names, ports, strict=False)] + [
        f"--min-worker-port={low}", f"--max-worker-port={low + 99}"
    ]  # fmt: skip


class Cluster:
    """`ray start --block` processes, each in a session of its own, so stopping one stops exactly the
    processes it started (its raylet, workers, GCS) and nothing else."""

    def __init__(self, temp: Path):
        self.temp, self.nodes, self.address = temp, [], None
        token = secrets.token_hex(32)  # Ray's token authentication, as a real cluster would use it
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}  # fmt: skip

    def start_head(self) -> None:
        (port,) = _free_ports(1)
        self.address = f"127.0.0.1:{port}"
        self._start(["--head", f"--port={port}", "--include-dashboard=false",
                     f"--ray-client-server-port={_free_ports(1)[0]}", f"--temp-dir={self.temp}"])  # fmt: skip

    def add_worker_node(self) -> None:
        self._start([f"--address={self.address}"])

    def _start(self, flags: list[str]) -> None:
        cmd = [
            str(RAY),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--disable-usage-stats",
        ]
        log = open(self.temp / f"node-{len(self.nodes)}.log", "w")  # noqa: SIM115 (kept for the node's life)
        self.nodes.append(subprocess.Popen(cmd + flags + _ports_flags(), env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip

    def wait_cpus(self, cpus: int, timeout: float = 90) -> None:
        """Until the cluster reports `cpus` CPUs (every node joined)."""
        code = (f"import ray; ray.init(address='{self.address}', log_to_driver=False); "
                "print(ray.cluster_resources().get('CPU', 0))")  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True)
            if found.returncode == 0 and float(found.stdout.split()[-1]) >= cpus:
                return
            time.sleep(1)
        raise AssertionError(f"the cluster did not reach {cpus} CPUs: {self.logs()}")

    def session_pids(self) -> set[int]:
        """Every live process in the sessions of the nodes this test started."""
        sessions, pids = {p.pid for p in self.nodes}, set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) in sessions:
                        pids.add(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    pass
        return pids

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.session_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while self.session_pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        for node in self.nodes:
            node.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.temp.glob("node-*.log")))


@pytest.fixture(scope="module")
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="es-ray-", dir="/tmp"))  # short: Ray's socket paths are limited
    c = Cluster(temp)
    try:
        c.start_head()
        c.add_worker_node()
        c.wait_cpus(2)
        yield c
    finally:
        c.stop()
        shutil.rmtree(temp, ignore_errors=True)


def sweep(args: list[str], cache: Path, cluster: Cluster, **popen) -> subprocess.Popen:
    env = {**cluster.env, "EDGESMITH_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "edgesmith", "sweep", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


PRESETS = ["--preset", "int8", "--preset", "int8-dynamic", "--preset", "fp16", "--preset", "fp32"]


def _artifacts(folder: Path) -> dict[str, bytes]:
    """The artifacts and their manifests (report.json and report.html hold timings and paths)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.onnx*"))}


def _check_complete(out: Path, expected: int) -> dict:
    report = json.loads((out / "report.json").read_text())
    records = report["results"]
    assert [r["status"] for r in records] == ["ok"] * expected, records
    folders = [r["folder"] for r in records]
    assert len(set(folders)) == expected  # every task exactly once
    for record in records:
        sub = json.loads((Path(record["folder"]) / "report.json").read_text())
        assert sub["recipe"]["steps"] == [] or sub["recipe"]["steps"][0]["kind"] == "quantize"
        for row, artifact in zip(record["artifacts"], sub["artifacts"], strict=True):
            assert row["sha256"] == artifact["sha256"]
            assert (Path(record["folder"]) / row["file"]).stat().st_size == row["size_bytes"]
    assert not list(out.glob(".*partial*")), "a staging folder was left behind"
    return report


@pytest.mark.slow
def test_sweep_on_a_cluster_survives_a_killed_worker_and_resumes_from_the_cache(cluster, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(MODEL), *PRESETS, "--calibration", str(CALIBRATION), "--target", "rpi4",
            "--address", cluster.address, "--out", str(out), "--quiet"]  # fmt: skip
    run = sweep(args, cache, cluster)
    killed = _kill_a_converting_worker(out, cluster, run)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr + cluster.logs()
    report = _check_complete(out, 4)
    assert report["sweep"]["cluster_cpus"] == 2
    # the killed task was retried in another worker, and counted once (checked above)
    assert killed not in {r["pid"] for r in report["results"]}
    assert {r["how"] for r in report["results"]} == {"converted"}
    int8 = next(r for r in report["results"] if r["recipe"] == "int8")["artifacts"][0]
    assert int8["precision"] == "int8" and int8["cosine_min"] > 0.98 and int8["target_p50_ms"] > 0

    # a second sweep into a new folder takes every conversion from the cache, byte for byte
    again = tmp_path / "again"
    rerun = sweep([*args[:-3], "--out", str(again), "--quiet"], cache, cluster)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    second = _check_complete(again, 4)
    assert {r["how"] for r in second["results"]} == {"cached"}
    for first, cached in zip(report["results"], second["results"], strict=True):
        assert _artifacts(Path(first["folder"])) == _artifacts(Path(cached["folder"]))


def _kill_a_converting_worker(out: Path, cluster: Cluster, run: subprocess.Popen) -> int | None:
    """SIGKILL the Ray worker that is converting: the converter's staging folder names its PID. The
    PID must belong to the cluster this test started."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        for staging in out.glob(".*.partial-*"):
            pid = int(staging.name.rsplit(".partial-", 1)[1].split("-")[0])
            if pid in cluster.session_pids():
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.05)
    pytest.fail(f"no conversion was seen running on the cluster: {run.communicate()[1][-2000:]}")


@pytest.mark.slow
def test_a_corrupt_model_is_one_line_in_the_summary_and_the_others_succeed(cluster, tmp_path):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(MODEL.read_bytes()[:500])
    out = tmp_path / "out"
    run = sweep([str(corrupt), str(MODEL), "--preset", "fp16", "--address", cluster.address, "--out", str(out),
                 "--no-cache"], tmp_path / "cache", cluster)  # fmt: skip
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    records = json.loads((out / "report.json").read_text())["results"]
    assert [r["status"] for r in records] == ["error", "ok"]
    assert "broken.onnx" in records[0]["error"] and "\n" not in records[0]["error"]
    assert "Traceback" not in stdout + stderr
    error_line = next(line for line in stdout.splitlines() if line.startswith("broken.onnx"))
    assert records[0]["error"] in error_line
    assert "mnist_cnn.onnx" in stdout and "fp16" in stdout
    assert not (tmp_path / "cache").exists()  # --no-cache: nothing read or written

    # run again, as after a crash: the finished task is taken as it is, the failed one is retried
    rerun = sweep([str(corrupt), str(MODEL), "--preset", "fp16", "--address", cluster.address, "--out", str(out),
                   "--no-cache", "--json"], tmp_path / "cache", cluster)  # fmt: skip
    stdout, stderr = rerun.communicate(timeout=300)
    again = json.loads(stdout)["results"]
    assert [(r["status"], r.get("how")) for r in again] == [("error", None), ("ok", "resumed")]
    assert again[1]["artifacts"] == records[1]["artifacts"]


# -- the cache and the tune search, without a cluster --------------------------------------------


def _fake_output(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.int8.onnx").write_bytes(payload)
    (folder / "report.json").write_text(json.dumps({"artifacts": [{"path": f"{folder}/model.int8.onnx"}]}))
    return folder


def _store(root: str, key: str, out: str) -> None:
    from edgesmith.scale.cache import Cache

    Cache(Path(root)).store(key, Path(out))


def test_two_processes_filling_one_cache_entry_leave_one_whole_entry(tmp_path):
    import multiprocessing

    from edgesmith.scale.cache import Cache

    outs = [_fake_output(tmp_path / f"out{i}", b"x" * 4_000_000) for i in range(4)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_store, args=(str(tmp_path / "cache"), "k" * 64, str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = Cache(tmp_path / "cache")
    entry = cache.lookup("k" * 64)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["k" * 64]  # no temp folder left
    assert (entry / "model.int8.onnx").read_bytes() == b"x" * 4_000_000
    report = cache.restore(entry, tmp_path / "restored")
    assert report["artifacts"][0]["path"] == f"{tmp_path / 'restored'}/model.int8.onnx"
    assert (tmp_path / "restored" / "model.int8.onnx").read_bytes() == b"x" * 4_000_000


def test_cache_key_follows_the_data_bytes_the_recipe_and_the_model(tmp_path):
    import numpy as np

    from edgesmith.converter import build_recipe
    from edgesmith.scale.cache import key

    data = tmp_path / "cal.npz"
    np.savez(data, input=np.zeros((4, 1, 28, 28), np.float32))
    recipe = build_recipe(None, "int8", str(data), model=str(MODEL))
    first = key(MODEL, recipe)
    assert key(MODEL, recipe) == first
    np.savez(data, input=np.ones((4, 1, 28, 28), np.float32))  # same path, other bytes
    assert key(MODEL, recipe) != first
    assert key(MODEL, build_recipe(None, "fp16", str(data), model=str(MODEL))) != key(MODEL, recipe)
    other = tmp_path / "m.onnx"
    other.write_bytes(MODEL.read_bytes() + b"\0")
    assert key(other, recipe) != key(MODEL, recipe)


def test_pareto_front_keeps_only_undominated_feasible_points():
    from edgesmith.scale.tune import dominates, pareto_front

    def t(name, score, latency, size, feasible=True):
        return {"folder": name, "score": score, "latency_ms": latency, "size_kb": size, "feasible": feasible}

    trials = [t("a", 98.8, 0.20, 34), t("b", 98.7, 0.26, 116), t("c", 98.9, 0.25, 60), t("d", 99.5, 0.1, 10, False),
              t("e", 98.8, 0.20, 34)]  # fmt: skip
    assert dominates(trials[0], trials[1]) and not dominates(trials[0], trials[2])
    assert [p["folder"] for p in pareto_front(trials)] == [
        "a",
        "c",
    ]  # b dominated, d infeasible, e a copy of a


def test_a_trials_parameters_make_a_recipe_that_reloads():
    from edgesmith.converter import build_recipe
    from edgesmith.converter.recipe import Recipe
    from edgesmith.scale.space import recipe_for, space_for

    space = space_for(MODEL, "rpi4", str(CALIBRATION))
    assert "onnx" in space.formats and ".xml" not in space.formats and space.layers[0] == "node_conv2d"
    base = build_recipe(None, "fp32", str(CALIBRATION), model=str(MODEL), targets=["rpi4"])
    params = {"format": "onnx", "mode": "static", "calibration": "percentile", "keep_float": "first+last"}
    recipe = recipe_for(params, base, space)
    again = Recipe.from_dict(tomllib.loads(recipe.to_toml()))
    assert again == recipe
    (step,) = again.steps
    pt2 = space_for(MODEL.with_suffix(".pt2"), "rpi4", str(CALIBRATION))
    assert pt2.torch and pt2.layers == ()  # no ONNX node names to exclude: quantize without exclusions
    assert (
        recipe_for({"format": "onnx", "mode": "static", "keep_float": "none"}, base, pt2).steps[0].exclude
        == []
    )
    pruned = recipe_for({"format": "onnx", "mode": "fp16", "prune": 0.3, "distill_steps": 300}, base, space)
    assert [s.kind for s in pruned.steps] == ["prune", "distill", "quantize"]
    assert (pruned.steps[0].target_macs, pruned.steps[1].min_steps) == (0.7, 300)
    assert (step.mode, again.calibration.method, step.exclude) == ("static", "percentile",
                                                                   ["^node_conv2d$", "^node_linear$"])  # fmt: skip
    assert (
        step.search == "rescue" and space.search
    )  # the default; a small CNN: the sensitivity search is on offer
    ranked = recipe_for({**params, "keep_float": "none", "layers": "sensitivity"}, base, space)
    assert ranked.steps[0].search == "auto"  # the converter keeps the most sensitive layers float
    assert (
        recipe_for(space.presets()[0], base, space).steps
        == build_recipe(None, "int8", str(CALIBRATION)).steps
    )
    mcu = space_for(MODEL, "stm32f746", str(CALIBRATION))  # TFLite Micro: no hybrid or fp16 kernels
    assert mcu.modes == ["static", "none"] and list(mcu.named_presets()) == ["int8", "fp32"]


# A user's metric (`--metric file.py:function`): top-1, or it hangs while a file `hang` lies beside it
SLOW_METRIC = """
import time
from pathlib import Path

def top1(outputs, labels):
    while (Path(__file__).parent / "hang").exists():
        time.sleep(1)
    return float(100 * (outputs[0].argmax(-1) == labels).mean())
"""


@pytest.mark.slow
def test_tune_finds_a_front_whose_recipes_replay_byte_for_byte(cluster, tmp_path):
    out = tmp_path / "tuned"
    (tmp_path / "metric.py").write_text(SLOW_METRIC)
    cmd = [sys.executable, "-m", "edgesmith", "tune", str(MODEL), "--target", "rpi4", "--max-drop", "1.0",
           "--calibration", str(CALIBRATION), "--eval", str(CALIBRATION / "holdout.npz"),
           "--metric", f"{tmp_path / 'metric.py'}:top1", "--address", cluster.address]  # fmt: skip
    env = {**cluster.env, "EDGESMITH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([*cmd, "--trials", "2", "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["trials_run"] == 2 and report["front"]
    assert {t["score"] for t in report["trials"]} <= {p["score"] for p in report["presets"].values()}
    # the two trials are the int8 and int8-dynamic presets: the table says so, and how they stand
    assert "seed: int8" in done.stdout and "presets dominated by: int8:" in done.stdout
    assert set(report["presets"]) == {"int8", "int8-dynamic"}
    assert "<svg" in (out / "report.html").read_text()
    best = report["front"][0]
    replay = tmp_path / "replay"
    converted = subprocess.run([sys.executable, "-m", "edgesmith", "convert", "--recipe", str(out / best["best"]),
                                "--out", str(replay), "--quiet"], env=env, capture_output=True, text=True)  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    assert _artifacts(Path(best["folder"])) == _artifacts(replay)

    # --time-budget: the two presets again (from the cache), then a third trial whose metric hangs;
    # the budget stops it and the report holds the two that finished (without the budget: the timeout)
    (tmp_path / "hang").touch()
    budget = subprocess.run([*cmd, "--trials", "3", "--time-budget", "0.5", "--out", str(tmp_path / "budget")],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert budget.returncode == 0, budget.stderr
    again = json.loads((tmp_path / "budget" / "report.json").read_text())
    assert again["trials_run"] == 2 and {t["how"] for t in again["trials"]} == {"cached"}
    assert "1 not finished within --time-budget" in budget.stdout


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: ONNX Runtime's default is one thread anyway")
def test_a_sweep_worker_runs_its_kernels_on_its_share_of_the_cores(monkeypatch):
    """Two workers on two cores, each with ONNX Runtime's default (a thread per core), would fight over
    both cores: a worker's environment sets one thread, and every session edgesmith opens obeys it."""
    from edgesmith.runtime import load
    from edgesmith.scale.sweep import thread_limits

    def threads_started_by_a_session():
        before = len(os.listdir("/proc/self/task"))
        session = load(MODEL)
        return len(os.listdir("/proc/self/task")) - before, session

    monkeypatch.delenv("EDGESMITH_THREADS", raising=False)
    assert threads_started_by_a_session()[0] >= 1  # ONNX Runtime's pool: a thread per further core
    env = thread_limits(1)
    assert env["OMP_NUM_THREADS"] == env["EDGESMITH_THREADS"] == "1"  # torch reads OMP_NUM_THREADS
    monkeypatch.setenv("EDGESMITH_THREADS", env["EDGESMITH_THREADS"])
    started, session = threads_started_by_a_session()
    assert (started, session.threads) == (0, 1)
