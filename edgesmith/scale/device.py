"""The device `tune` measures its latency objective on (`--ssh` or `--adb`), instead of the cost model.

Each feasible trial's artifact is copied to the device and timed there by the same runner as
`edgesmith profile --ssh/--adb` (targets/ssh.py, targets/adb.py). Trials run side by side, but two
measurements at once on one board would each slow the other: a measurement holds a lock (an `flock`
in the temp folder, per device) while it runs. The lock serializes the workers of this machine; the
nodes of a cluster do not share it (measure with one node, or one worker per device).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Device:
    """USER@HOST[:PORT] over SSH, or an adb serial, and how to time an artifact there."""

    ssh: str | None = None
    adb: str | None = None
    ssh_config: str | None = None
    python: str = "python3"  # the board's Python, for the runner over SSH
    runs: int = 50
    warmup: int = 5
    threads: int = 1  # as the cost-model estimates: one core
    timeout: float = 300.0

    @property
    def name(self) -> str:
        return self.ssh if self.ssh else f"adb:{self.adb}"

    def check(self) -> None:
        """Fail now, in one line, for a device that cannot be reached, before any trial runs."""
        if bool(self.ssh) == bool(self.adb):
            raise InputError("give one device: --ssh USER@HOST[:PORT] or --adb SERIAL")
        if self.ssh:
            from ..targets import ssh

            device = ssh.SshDevice.parse(self.ssh, config=self.ssh_config, python=self.python)
            device.run(["true"], timeout=device.connect_timeout + 10, what="a test command")
        else:
            from ..targets import adb

            adb.check(str(self.adb))

    def measure(self, artifact: Path) -> dict:
        """The runner's measurement of `artifact` on the device (p50_ms, ...), one at a time."""
        with _one_at_a_time(self.name):
            if self.ssh:
                from ..targets import ssh

                device = ssh.SshDevice.parse(self.ssh, config=self.ssh_config, python=self.python)
                return ssh.profile(device, artifact, self.runs, self.warmup, self.threads, self.timeout)
            from ..targets import adb

            return adb.profile(str(self.adb), artifact, self.runs, self.warmup, self.threads, self.timeout)


@contextlib.contextmanager
def _one_at_a_time(name: str) -> Iterator[None]:
    import fcntl

    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"edgesmith-device-{digest}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def measured(record: dict, device: Device) -> dict:
    """`record` (run_task's) with its first artifact's latency measured on `device`
    (`device_p50_ms`); a failed measurement makes the record failed, with the device's one line."""
    if record["status"] != "ok":
        return record
    artifact = record["artifacts"][0]
    try:
        result = device.measure(Path(record["folder"]) / artifact["file"])
    except InputError as exc:
        return record | {"status": "failed", "error": f"measuring on {device.name}: {exc}"}
    artifact = artifact | {"device_p50_ms": result["p50_ms"], "device": result.get("device", device.name)}
    return record | {"artifacts": [artifact, *record["artifacts"][1:]]}
