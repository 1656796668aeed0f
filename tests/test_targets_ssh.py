"""SSH profiling against a real OpenSSH server started on 127.0.0.1 with throwaway keys.

The "device" Python is this interpreter (it has numpy and onnxruntime); a second run points at a
Python without onnxruntime to check the missing-backend error. Needs `sshd` (apt-get install
openssh-server openssh-client); skipped with that reason when it is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgesmith.errors import InputError
from edgesmith.targets import ssh

from conftest import SHIPPED_MODEL

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
pytestmark = pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None,
    reason="OpenSSH server/client not installed: apt-get install openssh-server openssh-client",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on a free port; yields (ssh_config path, port, process)."""
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    user = (
        os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    )
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\n"
    )
    (d / "ssh_config").write_text(
        f"Host *\n  User {user}\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
    )
    if not Path("/run/sshd").is_dir():
        try:
            Path("/run/sshd").mkdir(parents=True)
        except OSError:
            pytest.skip("sshd needs its privilege-separation folder /run/sshd (run as root in CI)")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {proc.stderr.read().decode()[:200]}")
        time.sleep(0.05)
    yield d / "ssh_config", port, proc, user
    proc.terminate()
    proc.wait(timeout=10)


def _device(sshd, **kw) -> ssh.SshDevice:
    config, port, _, user = sshd
    kw.setdefault("python", sys.executable)
    return ssh.SshDevice.parse(f"{user}@127.0.0.1:{port}", config=str(config), connect_timeout=5, **kw)


def test_measures_on_the_device_and_cleans_up(sshd):
    before = set(Path("/tmp").glob("edgesmith.*"))
    result = ssh.profile(_device(sshd), SHIPPED_MODEL, runs=20, warmup=2, threads=1)
    assert result["source"] == "measured" and result["transport"] == "ssh"
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["backend"] == "ort" and result["runs"] == 20
    assert set(Path("/tmp").glob("edgesmith.*")) == before, "the remote work folder must be removed"


def test_cli_profile_over_ssh(sshd, cli):
    config, port, _, user = sshd
    code, out, err = cli("profile", SHIPPED_MODEL, "--target", "rpi4", "--ssh", f"{user}@127.0.0.1:{port}",
                         "--ssh-config", config, "--remote-python", sys.executable, "--runs", "10",
                         "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == "measured" and data["device"].endswith(f"127.0.0.1:{port}")
    assert data["target"] == "rpi4" and data["p50_ms"] > 0 and "energy_mj" in data
    assert data["energy_source"].startswith("estimated")


def test_missing_backend_on_device(sshd, tmp_path):
    bare = tmp_path / "bare"  # a venv with no onnxruntime (and no numpy): a fresh board
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(InputError, match=r"onnxruntime is not installed|numpy is not installed"):
        ssh.profile(_device(sshd, python=str(bare / "bin" / "python")), SHIPPED_MODEL, runs=2)


def test_missing_python_on_device(sshd):
    with pytest.raises(InputError, match="was not found on"):
        ssh.profile(_device(sshd, python="/nonexistent/python3"), SHIPPED_MODEL, runs=2)


def test_unreachable_host_is_one_clear_error():
    device = ssh.SshDevice.parse(f"nobody@127.0.0.1:{_free_port()}", connect_timeout=2, retries=1)
    with pytest.raises(InputError, match="cannot reach nobody@127.0.0.1"):
        ssh.profile(device, SHIPPED_MODEL)


def test_timeout(sshd):
    """The device's own `timeout` ends the run (so the board is not left busy) and we say so."""
    before = set(Path("/tmp").glob("edgesmith.*"))
    with pytest.raises(InputError, match="did not finish within"):
        ssh.profile(_device(sshd), SHIPPED_MODEL, runs=10_000_000, timeout=8)
    assert set(Path("/tmp").glob("edgesmith.*")) == before


def test_dropped_connection(sshd):
    """Kill the server's session processes mid-run: the client sees the connection go away."""
    _, _, proc, _ = sshd
    device = _device(sshd, retries=0)
    errors: list[Exception] = []

    def run():
        try:
            ssh.profile(device, SHIPPED_MODEL, runs=10_000_000, timeout=60)
        except InputError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 30
    running = False
    while time.time() < deadline and not running:  # wait for the runner to run on the "device"
        running = any("runner.py" in _cmdline(pid) for pid in _descendants(proc.pid))
        time.sleep(0.1)
    # Killing a session while its login shell still runs ~/.bashrc could leave that shell's
    # locks behind (pyenv's rehash lock, for one), so the kill happens only once the runner runs.
    assert running, "the runner never started on the device"
    time.sleep(0.5)
    for pid in _descendants(proc.pid):  # only processes under the sshd this test started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    thread.join(60)
    assert errors, "a dropped connection must raise"
    assert "dropped" in str(errors[0]) or "runner on" in str(errors[0]), errors[0]


def _descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    out = [int(c) for c in children]
    return out + [d for c in out for d in _descendants(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_bad_ssh_spec():
    with pytest.raises(InputError, match="is not USER@HOST"):
        ssh.SshDevice.parse("pi@host:notaport")


def test_probe_missing_on_the_device(sshd):
    """`--probe` runs on the device (the power module is pushed with the runner): a probe the
    board lacks is one clear error naming the board."""
    with pytest.raises(
        InputError, match=r"pi5-pmic power probe is not present on this machine on .*127\.0\.0\.1"
    ):
        ssh.profile(_device(sshd), SHIPPED_MODEL, runs=5, probe="pi5-pmic")
    result = ssh.profile(_device(sshd), SHIPPED_MODEL, runs=5, probe="auto")  # nothing here: no energy
    assert "energy_mj" not in result and result["p50_ms"] > 0


def test_tune_measures_a_trials_latency_on_the_board(sshd, tmp_path, cli):
    """`tune --ssh`: a trial's latency objective is its artifact timed on the board (here sshd on
    127.0.0.1 and this Python), not the cost model's estimate; a board that cannot be reached fails in
    one line before Ray starts."""
    from edgesmith.converter import build_recipe
    from edgesmith.scale.device import Device, measured
    from edgesmith.scale.sweep import Task, run_task
    from edgesmith.scale.tune import objectives

    config, port, _, user = sshd
    board = Device(ssh=f"{user}@127.0.0.1:{port}", ssh_config=str(config), python=sys.executable, runs=10)
    board.check()
    calibration = Path(SHIPPED_MODEL).parent.parent / "calibration_data" / "mnist"
    recipe = build_recipe(None, "int8", str(calibration), str(calibration / "holdout.npz"),
                          model=str(SHIPPED_MODEL), targets=["rpi4"])  # fmt: skip
    record = run_task(Task(str(SHIPPED_MODEL), "t", recipe.to_dict(), "rpi4", str(tmp_path / "t")), None)
    assert record["status"] == "ok", record.get("error")
    (artifact,) = measured(record, board)["artifacts"]
    assert artifact["device"].endswith(f"127.0.0.1:{port}") and artifact["device_p50_ms"] > 0
    latency = objectives(measured(record, board), "rpi4", None)["latency_ms"]
    assert latency != artifact["target_p50_ms"] and latency > 0  # the board's, not the estimate

    away = f"{user}@127.0.0.1:{_free_port()}"
    code, _, err = cli("tune", SHIPPED_MODEL, "--target", "rpi4", "--max-drop", "1", "--ssh", away,
                       "--ssh-config", config, "--out", tmp_path / "tuned")  # fmt: skip
    assert code == 2 and "cannot reach" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "tuned").exists()
