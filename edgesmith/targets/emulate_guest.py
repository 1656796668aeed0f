"""The guest side of `emulate.run_aarch64`: runs inside the emulated arm64 Python (`-I -S`, so nothing of
the host's or the userland's site-packages is seen) with only numpy, the aarch64 wheels and the copied
device side of edgesmith on its path.

Usage: python3.11 -I -S emulate_guest.py PKG SITE MODEL WORK. Reads WORK/feeds.npz, writes
WORK/outputs.npz and WORK/info.json. Bad input prints `edgesmith: error: ...` and exits 2, as the CLI.
"""

import json
import platform
import sys
import time


def main(pkg: str, site: str, model: str, work: str) -> int:
    sys.path[:0] = [pkg, site]
    import numpy as np

    from edgesmith.errors import EdgesmithError
    from edgesmith.runtime import backends, check_feeds, load

    try:
        start = time.perf_counter()
        session = load(model, threads=1, exact=True)
        loaded = time.perf_counter()
        with np.load(f"{work}/feeds.npz", allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
        check_feeds(session, feeds)
        outputs = session.run(feeds)
        done = time.perf_counter()
    except EdgesmithError as exc:
        print(f"edgesmith: error: {exc}", file=sys.stderr)
        return exc.exit_code
    np.savez(f"{work}/outputs.npz", allow_pickle=False, **outputs)
    info = {
        "outputs": list(outputs),
        "backend": session.backend,
        "backend_version": getattr(backends.get(session.backend), "version", lambda: "?")(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_s": round(loaded - start, 3),
        "run_s": round(done - loaded, 3),
    }
    with open(f"{work}/info.json", "w") as f:
        json.dump(info, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
