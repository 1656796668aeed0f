import subprocess
import sys

import numpy as np
import pytest
from backend_models import small_cnn_openvino, small_cnn_tflite

import edgesmith.runtime as runtime
from edgesmith.errors import InputError, MissingExtra
from edgesmith.targets.latency import measure, random_feeds

from models import small_cnn, two_input_add

BACKENDS = [name for name, ok in runtime.available_backends().items() if ok]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return small_cnn(tmp_path_factory.mktemp("m") / "cnn.onnx")


@pytest.fixture(scope="module")
def cnn_for(cnn):
    """small_cnn in a backend's format (.onnx, .tflite, .xml), built from the same weights on first use."""
    built = {".onnx": cnn}
    builders = {".tflite": small_cnn_tflite, ".xml": small_cnn_openvino}

    def get(backend: str):
        suffix = runtime.backends.get(backend).SUFFIXES[0]
        if suffix not in built:
            built[suffix] = builders[suffix](cnn, cnn.with_suffix(suffix))
        return built[suffix]

    return get


def _specs(specs):
    return [(s.name, s.shape, s.dtype) for s in specs]


@pytest.mark.parametrize("backend", BACKENDS)
def test_conformance_same_specs_and_outputs_as_reference(cnn, cnn_for, backend):
    """Every installed backend, on the same model in its own format, gives the numpy reference's
    tensor specs and outputs, at any batch size."""
    reference = runtime.load(cnn, backend="numpy")
    session = runtime.load(cnn_for(backend), backend=backend, threads=1, exact=True)
    assert session.backend == backend and session.threads == 1
    assert _specs(session.inputs) == _specs(reference.inputs) == [("input", (None, 1, 28, 28), "float32")]
    assert _specs(session.outputs) == _specs(reference.outputs) == [("logits", (None, 10), "float32")]
    for batch in (3, 1, 5):  # a changing batch size: backends with static shapes must resize
        feeds = random_feeds(session, batch=batch, seed=batch)
        got, want = session.run(feeds)["logits"], reference.run(feeds)["logits"]
        assert got.shape == (batch, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_auto_picks_onnxruntime_for_onnx(cnn):
    assert runtime.load(cnn).backend == "ort"


def test_multi_input_model(tmp_path):
    session = runtime.load(two_input_add(tmp_path / "add.onnx"))
    a, b = np.ones((2, 4), np.float32), np.full((2, 4), 2, np.float32)
    np.testing.assert_array_equal(session.run({"a": a, "b": b})["y"], a + b)
    with pytest.raises(InputError, match=r"model wants \['a', 'b'\], got \['a'\]"):
        runtime.check_feeds(session, {"a": a})


def test_load_errors(tmp_path, cnn):
    with pytest.raises(InputError, match="no such file"):
        runtime.load(tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="unknown backend 'onnxrt'"):
        runtime.load(cnn, backend="onnxrt")
    (tmp_path / "m.tflite2").write_bytes(b"x")
    with pytest.raises(InputError, match="no backend reads '.tflite2'"):
        runtime.load(tmp_path / "m.tflite2")
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(cnn.read_bytes()[:200])
    with pytest.raises(InputError, match="is not a valid ONNX model"):
        runtime.load(truncated)


def test_missing_backend_names_the_extra(cnn, monkeypatch):
    from edgesmith.runtime.backends import ort_backend

    monkeypatch.setattr(ort_backend, "available", lambda: False)
    with pytest.raises(MissingExtra, match=r"pip install 'edgesmith\[ort\]'"):
        runtime.load(cnn, backend="ort")


def test_measure_reports_ordered_percentiles(cnn):
    m = measure(runtime.load(cnn, threads=1), runs=30, warmup=3)
    assert 0 < m.min_ms <= m.p50_ms <= m.p90_ms <= m.p99_ms
    assert (m.runs, m.warmup, m.threads, m.backend, m.batch) == (30, 3, 1, "ort", 1)
    assert m.peak_rss_mb > 10


def test_device_side_imports_stay_light():
    """`import edgesmith.runtime, edgesmith.targets` must not load torch, onnx or tensorflow."""
    code = (
        "import sys, edgesmith, edgesmith.runtime, edgesmith.targets.latency, edgesmith.targets.cpu\n"
        "import edgesmith.targets.spec, edgesmith.targets.costmodel, edgesmith.targets.graph, edgesmith.targets.mcu\n"
        "import edgesmith.targets.power, edgesmith.targets.ssh, edgesmith.targets.adb, edgesmith.targets.report\n"
        "import edgesmith.targets.svg, edgesmith.targets.hostprofile, edgesmith.targets.runner\n"
        "import edgesmith.targets.tflite_graph, edgesmith.targets.arena, edgesmith.targets.measurements\n"
        "import edgesmith.runtime.backends.ort_backend, edgesmith.runtime.backends.litert_backend\n"
        "import edgesmith.runtime.backends.openvino_backend\n"
        "heavy = [m for m in ('torch', 'onnx', 'tensorflow', 'onnxruntime', 'openvino', 'nncf', 'ai_edge_litert',"
        " 'edgesmith.converter') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_convert_run_and_profile_never_import_ray_or_optuna():
    """The `scale` extra (Ray, Optuna) is for `sweep` and `tune` only: the CLI, the converter's
    pipeline, steps and exporters, and the device side load without them."""
    code = (
        "import sys, edgesmith.cli, edgesmith.converter.pipeline, edgesmith.converter.exporters\n"
        "import edgesmith.converter.steps.quantize, edgesmith.converter.profile_step, edgesmith.runtime\n"
        "import edgesmith.targets.latency, edgesmith.targets.costmodel, edgesmith.cli.convert, edgesmith.cli.run\n"
        "edgesmith.cli.build_parser()  # every command's module, sweep and tune included\n"
        "print(','.join(m for m in ('ray', 'optuna', 'edgesmith.scale') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
