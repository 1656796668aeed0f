"""`edgesmith profile`: latency (and energy) of an artifact: measured here, measured on a device
over SSH or adb, or estimated by the cost model for a named target."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = """\
Times ARTIFACT on random inputs (warm-up runs, then N timed runs) and prints p50/p90/p99, mean,
stdev, peak memory and energy per inference, each labelled with its source.

  edgesmith profile model.onnx                        measured on this machine
  edgesmith profile model.onnx --target rpi4          estimated (no device given)
  edgesmith profile model.onnx --target rpi4 --ssh pi@raspberrypi.local
                                                      measured on the Pi over SSH
  edgesmith profile model.tflite --target pixel2 --adb SERIAL --probe android
                                                      measured on the phone, energy from its battery
  edgesmith profile out/model.onnx --target rpi4 --ssh pi@raspberrypi.local
                                                      kept in out/measurements/ for `edgesmith report out`
  edgesmith profile model.onnx --target host --estimate   the model's estimate for this machine
  edgesmith profile model.tflite --target stm32f746   estimate + RAM/flash fit
  edgesmith profile detector.onnx --input-shape images=1x3x320x320
                                                      a model with dynamic H/W, timed at 320x320

`edgesmith targets` lists the target names.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "profile",
        help="latency and energy of an artifact: here, on a device, or estimated for a target",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--target", metavar="NAME", help="a device spec (see `edgesmith targets`)")
    p.add_argument("--estimate", action="store_true", help="use the cost model even for `host`")
    p.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="measure on a Linux board over SSH")
    p.add_argument("--adb", metavar="SERIAL", help="measure on an Android device over adb")
    p.add_argument("--ssh-config", metavar="FILE", help="ssh_config file for --ssh (ssh -F)")
    p.add_argument("--remote-python", default="python3", help="the device's Python (default python3)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for a remote run (default 300)")
    p.add_argument("--probe", default="auto", help="power probe: auto (default), rapl, pi5-pmic, "
                   "android-battery (alias android; read over adb with --adb), ina219, ina226, none")  # fmt: skip
    p.add_argument("--save", metavar="DIR", help="keep the measurement in convert folder DIR (DIR/measurements/) "
                   "for `edgesmith report DIR`; device measurements of an artifact inside a convert folder "
                   "are kept there without it")  # fmt: skip
    p.add_argument("--no-save", action="store_true", help="do not keep the measurement")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: backend's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random inputs")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS",
                   help="sizes of an input's dynamic axes, e.g. images=1x3x320x320 (repeatable); "
                        "needed when a model leaves axes other than the batch open")  # fmt: skip
    p.add_argument("--backend", default="auto", help="ort, numpy or auto (default)")
    p.add_argument("--layers", type=int, default=0, metavar="N",
                   help="also list the N slowest layers (measured via ORT/OpenVINO profiling here, else estimated)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(args) -> int:
    import sys
    import time

    from ..errors import InputError
    from ..targets import measurements, power, spec
    from ..targets.latency import parse_shapes

    args.shapes = parse_shapes(args.input_shape)
    if args.runs < 1 or args.warmup < 0 or args.batch < 1 or (args.threads is not None and args.threads < 0):
        raise InputError("--runs and --batch must be >= 1, --warmup and --threads >= 0")
    if args.ssh and args.adb:
        raise InputError("give --ssh or --adb, not both")
    args.probe = power.probe_name(args.probe)
    if args.adb and args.probe not in ("auto", "none", "android-battery"):
        raise InputError(f"over adb, --probe can be android-battery (or auto, none), not '{args.probe}'; "
                         "the other probes run on a Linux board with --ssh")  # fmt: skip
    artifact = Path(args.artifact)
    if not artifact.is_file():
        raise InputError(f"{artifact}: no such file; check the path")
    target = spec.get(args.target or "host")
    if target.kind != "host" and artifact.suffix.lower() not in target.formats:
        raise InputError(
            f"{target.name} runs {'/'.join(target.formats)} files ({', '.join(target.runtimes)}), not "
            f"'{artifact.suffix}'; export one with `edgesmith convert --format tflite`"
        )
    save = _save_folder(args, artifact, target)
    if args.shapes:  # a misspelt name would otherwise leave the axis unsized, with a less helpful error
        from ..runtime import load
        from ..targets.latency import check_names

        check_names(args.shapes, [s.name for s in load(artifact, backend=args.backend).inputs])
    started = time.perf_counter()
    if args.ssh or args.adb:
        result = _remote(args, artifact, target)
    elif target.kind == "host" and not args.estimate:
        result = _here(args, artifact, target)
    else:
        result = _estimated(args, artifact, target)
    if args.layers and not (args.ssh or args.adb):
        result["layers"] = _layers(args, artifact, target, result)
    result["profile_s"] = round(time.perf_counter() - started, 3)
    if save is not None:
        saved = measurements.save(save, artifact, target.name, result)
        print(
            f"edgesmith: measurement saved to {saved} (`edgesmith report {save}` shows it)", file=sys.stderr
        )
    _print(result, args)
    return 0


def _save_folder(args, artifact: Path, target) -> Path | None:
    """Where to keep this measurement: --save DIR (checked before any work), else the convert folder
    the artifact sits in for a device measurement with a target, else nowhere."""
    from ..errors import InputError
    from ..targets import measurements

    measured = bool(args.ssh or args.adb) or (target.kind == "host" and not args.estimate)
    if args.save:
        if args.no_save:
            raise InputError("give --save or --no-save, not both")
        if not measured:
            raise InputError("--save keeps measurements, and this run is an estimate; add --ssh/--adb to "
                             "measure on the device (`edgesmith report` estimates by itself)")  # fmt: skip
        if (args.ssh or args.adb) and not args.target:
            raise InputError("--save needs --target NAME: the report shows the measurement under that target")
        return measurements.check_folder(args.save, artifact)
    if args.no_save or not (args.ssh or args.adb) or not args.target:
        return None
    return measurements.convert_folder(artifact)


def _layers(args, artifact: Path, target, result: dict) -> list[dict]:
    """The N slowest layers: the backend's own profile when measured here, else the cost model's."""
    from ..targets import costmodel, graph, hostprofile

    layers = graph.layers(artifact, args.batch, args.shapes)
    if result["source"] == "measured":
        threads = args.threads or 1
        if result.get("backend") == "openvino":
            times = hostprofile.openvino_node_times(artifact, threads, shapes=args.shapes)
        else:
            times = hostprofile.ort_node_times(artifact, threads, shapes=args.shapes)
        rows: list[dict[str, Any]] = [
            {"name": n, "ms": ms, "source": "measured"} for n, ms in hostprofile.match(layers, times).items()
        ]
    else:
        est = costmodel.estimate(layers, target, args.threads)
        rows = [{"name": r["name"], "ms": r["ms"], "source": "estimated"} for r in est.layers]
    return sorted(rows, key=lambda r: -r["ms"])[: args.layers]


def _here(args, artifact: Path, target) -> dict:
    from ..runtime import load
    from ..targets import power
    from ..targets.latency import measure, random_feeds

    session = load(artifact, backend=args.backend, threads=args.threads)
    m = measure(session, runs=args.runs, warmup=args.warmup, batch=args.batch, shapes=args.shapes)
    result = m.to_json() | {"target": target.name}
    probe = None if args.probe == "none" else power.find_probe(args.probe)
    if probe is not None:
        feeds = random_feeds(session, args.batch, shapes=args.shapes)
        energy = power.measure(probe, lambda: session.run(feeds), max(args.runs, 20))
    else:
        energy = power.estimate(target, m.p50_ms, args.threads)
    return result | energy.to_json()


def _remote(args, artifact: Path, target) -> dict:
    from ..targets import power

    if args.ssh:
        from ..targets import ssh

        device = ssh.SshDevice.parse(args.ssh, config=args.ssh_config, python=args.remote_python)
        probe = None if args.probe == "none" else args.probe
        result = ssh.profile(device, artifact, args.runs, args.warmup, args.threads, args.timeout, probe)
    else:
        from ..targets import adb

        probe = None if args.probe == "none" else args.probe
        result = adb.profile(args.adb, artifact, args.runs, args.warmup, args.threads, args.timeout, probe)
    if result.get("energy_source", "").startswith("measured"):
        energy = {k: result.pop(k) for k in ("energy_mj", "energy_source")}
    elif args.target:
        energy = power.estimate(target, result["p50_ms"], args.threads).to_json()
    else:  # the host's power figures say nothing about the device
        energy = {"energy_mj": None, "energy_source": "unknown: pass --target NAME for an estimate"}
    return result | {"target": args.target or "unknown"} | energy


def _estimated(args, artifact: Path, target) -> dict:
    from ..targets import costmodel, graph, mcu, power

    if target.kind == "host":  # this CPU's own figures, benchmarked once and cached
        from ..targets import hostcal

        target = hostcal.calibrated(target)
    layers = graph.layers(artifact, args.batch, args.shapes)
    est = costmodel.estimate(layers, target, args.threads)
    result = est.to_json(per_layer=False) | {"device": target.name}
    result |= power.estimate(target, est.p50_ms, est.threads).to_json()
    if target.is_mcu:
        result["mcu_fit"] = mcu.fit(artifact, target, layers)
    return result


def _print(result: dict, args) -> None:
    if args.json:
        print(json.dumps(result))
        return
    where = result.get("device", "host")
    print(f"{args.artifact} on {result['target']} ({where}), {result['source']}:")
    if "p90_ms" in result:
        print(
            f"  p50 {result['p50_ms']:.3f} ms   p90 {result['p90_ms']:.3f} ms   p99 {result['p99_ms']:.3f} ms"
        )
        print(f"  mean {result['mean_ms']:.3f} ms   stdev {result['stdev_ms']:.3f} ms   "
              f"({result['runs']} runs, {result['warmup']} warm-up, {result.get('threads') or 'default'} "
              f"thread(s), {result['backend']})")  # fmt: skip
        print(f"  peak RSS {result['peak_rss_mb']:.1f} MiB")
    else:
        print(f"  p50 {result['p50_ms']:.3f} ms with {result['threads']} thread(s) "
              f"({result['macs'] / 1e6:.1f} M MACs; cost model, not a measurement)")  # fmt: skip
    if result["energy_mj"] is not None:
        print(f"  energy {result['energy_mj']:.3f} mJ per inference ({result['energy_source']})")
    print(f"  ({result['profile_s']:.2f} s to profile)")
    for row in result.get("layers", []):
        print(f"    {row['ms']:9.4f} ms  {row['name']}  ({row['source']})")
    if "mcu_fit" in result:
        from ..targets import mcu, spec

        print(f"  {mcu.describe(result['mcu_fit'], spec.get(result['target']))}")
        if result["mcu_fit"].get("note"):
            print(f"  note: {result['mcu_fit']['note']}")
