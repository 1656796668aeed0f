"""The cost model on published device figures it was not fitted to (benchmarks/data/*.json|toml).

Every stack is fitted on its `fit` figures only, then the `held-out` figures (other devices, other
cores, other models) are estimated. No TensorFlow or graph building: the graphs' cost-model layers
are kept in benchmarks/data/device_layers.json (`benchmarks/device_graphs.py` writes them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesmith.targets import figures

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"


@pytest.fixture(scope="module")
def checked():
    published = figures.load(DATA / "device_figures.toml")
    layers = figures.load_layers(DATA / "device_layers.json")
    return published, figures.check(published, layers)[1]


def test_every_figure_names_its_stack_source_and_a_known_graph(checked):
    published, rows = checked
    layers = figures.load_layers(DATA / "device_layers.json")
    assert {f.role for f in published} <= {"fit", "fit-threads", "held-out", "prior"}
    for f in published:
        assert f.model in layers and f.runtime and f.device and f.ms > 0 and f.threads >= 1
        assert f.source.startswith("https://"), f"{f.model} on {f.device} must cite where it was published"
    assert {"rpi5", "stm32h7a3"} <= {f.target for f in published if f.role == "held-out"}, "current devices"
    assert len(rows) == len(published)


def test_held_out_median_error_is_under_the_goal(checked):
    _, rows = checked
    held_out = [r for r in rows if r["figure"].role == "held-out"]
    assert len(held_out) >= 20
    assert figures.median_error(rows, "held-out") <= figures.GOAL
    assert figures.median_error(rows, "fit") <= figures.GOAL


def test_a_held_out_figure_never_enters_a_fit(checked):
    """Moving every held-out figure's published time changes no fitted table (it would if it leaked)."""
    published, _ = checked
    layers = figures.load_layers(DATA / "device_layers.json")
    moved = [
        f if f.role != "held-out" else figures.Figure(**{**f.__dict__, "ms": f.ms * 3}) for f in published
    ]
    assert figures.fit_stacks(moved, layers) == figures.fit_stacks(published, layers)


def test_raspberry_pi_5_is_within_the_goal_figure_by_figure(checked):
    """The Cortex-A76 (held out) at the per-clock rate of Arm's published A73 -> A75 -> A76 gains:
    it was +40% / +62% when the A76 ran at the A75's rate (docs/device_figures.md, "Cores")."""
    _, rows = checked
    pi5 = [r for r in rows if r["figure"].target == "rpi5" and r["figure"].role == "held-out"]
    assert len(pi5) == 2 and all(abs(r["error"]) <= figures.GOAL for r in pi5), [r["error"] for r in pi5]


def test_the_specs_hold_their_stacks_fitted_tables(checked):
    """A spec's efficiencies are the fit of its stack's figures (paste what costmodel_validation.py
    prints when they differ): the estimates users get are the ones checked here."""
    from edgesmith.targets import spec

    published, _ = checked
    fitted = figures.fit_stacks(published, figures.load_layers(DATA / "device_layers.json"))
    table, parallel = fitted["xnnpack-arm64"]
    assert table is not None and parallel is not None
    for name in ("pixel2", "pixel3a", "rpi4", "rpi5", "jetson-orin-nano", "galaxy-s23", "pixel8"):
        target = spec.get(name)
        for op_class in ("conv", "dwconv"):
            assert target.efficiency["fp32"][op_class] == pytest.approx(table["fp32"][op_class], abs=1e-3), (
                name
            )
        assert target.parallel_fraction == pytest.approx(parallel, abs=1e-3), name
