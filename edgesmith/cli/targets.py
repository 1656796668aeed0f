"""`edgesmith targets`: list the device specs, or explain one (`targets show rpi4`)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "targets",
        help="list the devices edgesmith knows, or explain one",
        description="Lists the target specs (edgesmith/targets/specs/*.toml). `edgesmith targets show "
        "NAME` prints one: cores, clocks, peak throughput, memory, power, runtimes and where each "
        "figure comes from. Example: edgesmith targets show rpi4",
    )
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", metavar="NAME", help="target name for `show`")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.0f} GB" if n >= 2**30 else f"{n / 1024:.0f} KB"


def main(args) -> int:
    from ..errors import InputError
    from ..targets import spec

    if args.action == "list":
        targets = spec.registry()
        if args.json:
            print(json.dumps({n: t.to_json() | {"path": str(t.path)} for n, t in targets.items()}, indent=2))
            return 0
        print(f"{'name':10} {'kind':8} {'cores':>5} {'GHz':>5} {'RAM':>7}  title")
        for t in targets.values():
            print(
                f"{t.name:10} {t.kind:8} {t.cores:>5} {t.clock_ghz:>5.2f} {_size(t.ram_bytes):>7}  {t.title}"
            )
        print("\nedgesmith targets show NAME explains one; edgesmith profile ARTIFACT --target NAME uses it.")
        return 0
    if not args.name:
        raise InputError("`targets show` needs a NAME; run `edgesmith targets` for the list")
    target = spec.get(args.name)
    if args.json:
        print(json.dumps(target.to_json() | {"path": str(target.path)}, indent=2))
        return 0
    print(f"{target.name}: {target.title}")
    print(f"  kind       {target.kind} ({_HOW[target.kind]})")
    print(f"  cpu        {target.cores}x {target.core} @ {target.clock_ghz:.3g} GHz, {target.isa}, "
          f"features: {', '.join(target.features) or '-'}")  # fmt: skip
    peaks = ", ".join(
        f"{d} {target.peak_macs_per_s(d, target.cores) / 1e9:.1f}" for d in target.macs_per_cycle
    )
    print(f"  peak       {peaks} GMAC/s on all cores")
    print(f"  memory     {_size(target.ram_bytes)} RAM, {_size(target.flash_bytes)} flash, "
          f"{target.bandwidth_gbs:g} GB/s sustained")  # fmt: skip
    print(f"  power      idle {target.idle_w:g} W, active {target.active_w:g} W")
    print(f"  runs       {', '.join(target.formats)} with {', '.join(target.runtimes)}")
    print(f"  cost model stack {target.stack}; overhead {target.op_overhead_us:g} us/op; "
          f"parallel fraction {target.parallel_fraction:g}")  # fmt: skip
    if target.issue_width:
        print(f"             issue width {target.issue_width} instructions/cycle caps the MAC rate")
    if target.stacks:
        print(f"  also       stacks {', '.join(sorted(target.stacks))} (figures measured with other kernels)")
    print(f"  fitted to  {target.fitted or '-'}")
    print(f"  sources    see the comments in {target.path}")
    return 0


_HOW = {
    "host": "measured here",
    "linux": "measured over --ssh, estimated otherwise",
    "android": "measured over --adb, estimated otherwise",
    "mcu": "estimated; RAM/flash fit checked",
}
