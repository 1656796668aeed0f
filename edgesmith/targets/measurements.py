"""Measurements taken on a device, kept in a convert folder for `edgesmith report`.

`edgesmith profile DIR/ART --target T --ssh ...|--adb ...` saves its result to
`DIR/measurements/<ART>.<T>.json` when DIR is the convert folder listing ART (or to the folder given
with `--save DIR`). One file per artifact and target: the latest measurement wins. Each record is the
profile JSON plus the artifact's name and SHA-256, the target and the time, so a report can tell a
measurement of this exact file from one of an earlier build with the same name (those are shown as
stale, not used). `edgesmith report DIR` reads them all (`load`) and puts each beside the cost
model's estimate (`merge`), with the estimate's error against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError

FOLDER = "measurements"
MEASURED_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "min_ms", "runs", "warmup", "threads",
                 "backend", "device", "transport", "energy_mj", "energy_source", "measured_at")  # fmt: skip


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_names(folder: str | Path) -> list[str]:
    """File names of the artifacts DIR/report.json lists; an InputError when DIR is no convert folder."""
    folder = Path(folder)
    report = folder / "report.json"
    if not report.is_file():
        raise InputError(
            f"{folder} has no report.json; save measurements into a folder written by `edgesmith convert`"
        )
    from .records import read_report

    return [artifact.name for artifact in read_report(report).artifacts]


def check_folder(folder: str | Path, artifact: Path) -> Path:
    """DIR, once it is known to be a convert folder that lists an artifact named like `artifact`."""
    names = artifact_names(folder)
    if artifact.name not in names:
        raise InputError(f"{artifact.name} is not an artifact of {folder} (its report.json lists "
                         f"{', '.join(names) or 'none'}); pass the convert folder that holds it")  # fmt: skip
    return Path(folder)


def convert_folder(artifact: Path) -> Path | None:
    """The convert folder `artifact` sits in, or None."""
    try:
        return check_folder(artifact.resolve().parent, artifact)
    except InputError:
        return None


def path_for(folder: str | Path, artifact_name: str, target: str) -> Path:
    return Path(folder) / FOLDER / f"{artifact_name}.{target}.json"


def save(folder: str | Path, artifact: Path, target: str, result: dict[str, Any]) -> Path:
    """Write the record atomically (temp file, then rename); returns its path."""
    record = result | {"artifact": artifact.name, "artifact_sha256": sha256(artifact), "target": target,
                       "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    dest = path_for(folder, artifact.name, target)
    dest.parent.mkdir(exist_ok=True)
    atomic_write(dest, json.dumps(record, indent=2) + "\n")
    return dest


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(folder: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """{(artifact name, target): record} from DIR/measurements/*.json."""
    out = {}
    for path in sorted((Path(folder) / FOLDER).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            key = (record["artifact"], record["target"])
            if not all(isinstance(k, str) for k in key) or not _is_number(record.get("p50_ms")):
                raise TypeError("not a measurement")  # a record without a latency is not a measurement
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise InputError(f"{path} is not a saved measurement; delete it or re-run `edgesmith profile ... "
                             "--save`") from None  # fmt: skip
        out[key] = record | {"file": f"{FOLDER}/{path.name}"}
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value >= 0


def merge(estimate: dict[str, Any], record: dict[str, Any], artifact: Path) -> dict[str, Any]:
    """The report entry for a measured (artifact, target): the measured numbers first (`source` =
    "measured", with the device), the cost model's under `estimate` with its error in percent."""
    if artifact.is_file() and record.get("artifact_sha256") != sha256(artifact):
        return estimate | {"stale_measurement": f"{record['file']} measured another build of {artifact.name}; "
                           "profile it again"}  # fmt: skip
    est = {k: estimate.get(k) for k in ("p50_ms", "source", "threads", "energy_mj", "energy_source")}
    if est["p50_ms"] and record["p50_ms"]:
        est["error_pct"] = round((est["p50_ms"] - record["p50_ms"]) / record["p50_ms"] * 100, 1)
    measured = {k: record[k] for k in MEASURED_KEYS if k in record}
    return estimate | measured | {"source": "measured", "estimate": est, "measurement_file": record["file"]}
