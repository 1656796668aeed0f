"""`edgesmith profile`: latency of an artifact on this machine."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "profile",
        help="measure an artifact's latency on this machine",
        description="Times ARTIFACT on random inputs: warm-up runs, then N timed runs; "
        "prints p50/p90/p99/mean/stdev and peak memory. Example: edgesmith profile "
        "out/mnist_cnn.int8.onnx --threads 1 --runs 500 --json",
    )
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: backend's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random inputs")
    p.add_argument("--backend", default="auto", help="ort, numpy or auto (default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(args) -> int:
    from ..errors import InputError
    from ..runtime import load
    from ..targets.latency import measure

    if args.runs < 1 or args.warmup < 0 or args.batch < 1 or (args.threads is not None and args.threads < 0):
        raise InputError("--runs and --batch must be >= 1, --warmup and --threads >= 0")
    session = load(args.artifact, backend=args.backend, threads=args.threads)
    m = measure(session, runs=args.runs, warmup=args.warmup, batch=args.batch)
    if args.json:
        print(json.dumps(m.to_json()))
    else:
        print(f"{args.artifact} on {m.backend}, {m.threads or 'default'} thread(s), batch {m.batch}:")
        print(f"  p50 {m.p50_ms:.3f} ms   p90 {m.p90_ms:.3f} ms   p99 {m.p99_ms:.3f} ms")
        print(f"  mean {m.mean_ms:.3f} ms   stdev {m.stdev_ms:.3f} ms   ({m.runs} runs, {m.warmup} warm-up)")
        print(f"  peak RSS {m.peak_rss_mb:.1f} MiB")
    return 0
