"""Measure an artifact on a Linux board over SSH: push the model and `runner.py`, run them with the
device's Python, bring back the runner's JSON.

Uses the system `ssh`/`scp` (OpenSSH), so keys, agents, jump hosts and `~/.ssh/config` work as the
user already set them up. Connection failures (exit 255) are retried with a short back-off; a
timeout, an unreachable host, a connection dropped mid-run, or a device without the backend each
raise an InputError that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import InputError

RUNNER = Path(__file__).with_name("runner.py")
PACKAGE = Path(__file__).resolve().parents[1]
POWER_FILES = ("edgesmith/__init__.py", "edgesmith/errors.py", "edgesmith/targets/__init__.py",
               "edgesmith/targets/power.py")  # fmt: skip
CONNECTION_ERROR = 255  # ssh's own exit code for connection problems


@dataclass(frozen=True)
class SshDevice:
    """USER@HOST[:PORT] plus how to reach it."""

    user: str | None
    host: str
    port: int = 22
    config: str | None = None  # an ssh_config file (-F)
    identity: str | None = None  # a private key (-i)
    python: str = "python3"
    connect_timeout: int = 10
    retries: int = 2
    options: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for part in (self.user, self.host):
            if part is not None and (part.startswith("-") or not part):  # `ssh -oProxyCommand=...`
                raise InputError(f"--ssh '{self.login}': a user or host may not start with '-'; "
                                 "give USER@HOST[:PORT], e.g. pi@raspberrypi.local")  # fmt: skip

    @classmethod
    def parse(cls, spec: str, **kwargs: Any) -> SshDevice:
        m = re.fullmatch(r"(?:([^@\s]+)@)?(\[[^\]]+\]|[^:@\s]+)(?::(\d+))?", spec.strip())
        if not m:
            raise InputError(f"--ssh '{spec}' is not USER@HOST[:PORT]; e.g. pi@raspberrypi.local:22")
        user, host, port = m.groups()
        return cls(user, host.strip("[]"), int(port or 22), **kwargs)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}" if self.user else f"{self.host}:{self.port}"

    def _base(self, tool: str = "ssh") -> list[str]:
        if shutil.which(tool) is None:
            raise InputError(f"`{tool}` is not installed; install OpenSSH (apt-get install openssh-client)")
        args = [tool, "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=2"]  # fmt: skip
        if self.config:
            args += ["-F", self.config]
        if self.identity:
            args += ["-i", self.identity]
        for option in self.options:
            args += ["-o", option]
        return args

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def argv(self, command: str) -> list[str]:
        """The ssh command line running the shell `command` on the device. `--` ends ssh's options,
        so nothing in the host (or what follows it) is ever read as one."""
        return self._base("ssh") + ["--", self.login, command]

    def run(
        self, words: list[str], timeout: float, prefix: str = "", what: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run a program on the device: every word is quoted for the device's shell (ssh hands the
        remote side one string, which that shell splits and expands); `prefix` is fixed shell code."""
        return self._retry(self.argv(prefix + shlex.join(words)), timeout, what or words[0])

    def push(self, files: list[Path], timeout: float) -> str:
        """Copy files into a new temporary folder on the device in one session; returns the folder.

        A tar stream over ssh (`tar` is on every Linux board, busybox included) rather than scp: no
        SFTP server is needed (dropbear), and one session instead of one per file."""
        with tempfile.TemporaryFile() as bundle:
            with tarfile.open(fileobj=bundle, mode="w") as tar:
                for path in files:
                    tar.add(path, arcname=path.name)
                for name in POWER_FILES:  # what the runner's --probe imports (numpy-free, tiny)
                    tar.add(PACKAGE.parent / name, arcname=name)
            command = 'd=$(mktemp -d /tmp/edgesmith.XXXXXX) && tar -C "$d" -xf - && echo "$d"'
            done = self._retry(self.argv(command), timeout, "copy", stdin=bundle)
        folder = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0 and not done.stderr.strip():
            raise InputError(f"the SSH connection to {self.address} dropped while copying the model; "
                             "check the network and the board's power, then retry")  # fmt: skip
        if done.returncode != 0 or not re.fullmatch(r"/tmp/edgesmith\.\w+", folder):
            raise InputError(f"copying to {self.address} failed ({_first(done.stderr)}); "
                             "check free space in /tmp and that `tar` is installed on the device")  # fmt: skip
        return folder

    def _retry(
        self, args: list[str], timeout: float, what: str, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        for attempt in range(self.retries + 1):
            if stdin is not None:
                stdin.seek(0)
            try:
                done: subprocess.CompletedProcess[Any] = subprocess.run(
                    args,
                    capture_output=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL if stdin is None else stdin,
                )
            except subprocess.TimeoutExpired:
                raise InputError(
                    f"{what} on {self.address} did not finish within {timeout:.0f} s; "
                    "raise --timeout or lower --runs"
                ) from None
            done.stdout, done.stderr = (x.decode(errors="replace") for x in (done.stdout, done.stderr))
            if done.returncode != CONNECTION_ERROR:
                return done
            if attempt < self.retries:
                time.sleep(0.5 * 2**attempt)
        message = _first(done.stderr)
        if re.search(r"refused|timed out|No route|resolve|unreachable|Permission denied", message):
            raise InputError(
                f"cannot reach {self.address} over SSH ({message}); check the address, that sshd runs "
                "there and that your key is authorized (ssh-copy-id)"
            )
        raise InputError(
            f"the SSH connection to {self.address} dropped ({message or 'no reason given'}) after "
            f"{self.retries + 1} tries; check the network and the board's power, then retry"
        )


def _first(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def profile(device: SshDevice, artifact: str | Path, runs: int = 50, warmup: int = 5, threads: int | None = None,
            timeout: float = 300.0, probe: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `artifact` on `device`; returns the runner's Measurement JSON plus the device address.

    Two SSH sessions when all goes well: copy (into a fresh /tmp/edgesmith.* folder), then run,
    with the folder removed by the device's shell on exit; a third removes it after a failure."""
    artifact = Path(artifact)
    started = time.perf_counter()
    remote = device.push([RUNNER, artifact], timeout)
    # `timeout` on the device too, so a run we give up on does not keep the board busy
    command = ["timeout", str(int(timeout)), device.python, f"{remote}/runner.py", f"{remote}/{artifact.name}",
               "--runs", str(runs), "--warmup", str(warmup)] + (["--threads", str(threads)] if threads else [])  # fmt: skip
    command += ["--probe", probe] if probe else []
    remove = ["rm", "-rf", remote]
    try:
        trap = f"trap {shlex.quote(shlex.join(remove))} EXIT HUP INT TERM; "
        done = device.run(command, timeout + 10, prefix=trap, what="the run")
    except InputError:
        with contextlib.suppress(InputError):  # the measurement error is the one to report
            device.run(remove, timeout=device.connect_timeout + 10)
        raise
    return _result(device, done, artifact, time.perf_counter() - started)


def _result(
    device: SshDevice, done: subprocess.CompletedProcess[str], artifact: Path, seconds: float
) -> dict[str, Any]:
    if done.returncode == 124:  # coreutils/busybox `timeout` on the device
        raise InputError(
            f"the run on {device.address} did not finish within {seconds:.0f} s; raise --timeout or lower --runs"
        )
    if done.returncode == 127:
        raise InputError(
            f"'{device.python}' was not found on {device.address}; install Python 3 there or pass "
            "--remote-python PATH"
        )
    try:
        data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise InputError(
            f"the runner on {device.address} failed (exit {done.returncode}: {_first(done.stderr)}); "
            "check the device's Python is 3.6 or newer"
        ) from None
    if data.get("error") == "missing_backend":
        wanted = " or ".join(data["wanted"])
        raise InputError(
            f"{device.address} cannot run {artifact.name}: {wanted} is not installed for "
            f"{device.python}; run `{device.python} -m pip install numpy {data['wanted'][0]}` on the device"
        )
    if data.get("energy_error"):
        raise InputError(
            f"{data['energy_error'].split('; ')[0]} on {device.address}; drop --probe for an estimate"
        )
    if data.get("error") == "bad_model":
        raise InputError(f"{device.address} could not load {artifact.name} ({data['detail']})")
    return data | {"device": device.address, "transport": "ssh", "wall_s": round(seconds, 2)}
