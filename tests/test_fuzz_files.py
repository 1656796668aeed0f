"""Fuzzed model files (ONNX, .pt2, Keras, .tflite), report.json and device-side options; pinned
reproducers of crashes found earlier; what a real process prints (the contract: tests/fuzzkit.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fuzzkit import (
    NO_PROFILE,
    Sandbox,
    check_contract,
    cli,
    examples,
    mutate,
    mutations,
    note,
    sandbox_factory,
    tree,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, SHIPPED_MODEL
from models import small_cnn


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    return sandbox_factory(tmp_path_factory.mktemp("fuzz"))


# -- model files ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("onnx")
    return {"small": small_cnn(folder / "small.onnx").read_bytes(), "mnist": SHIPPED_MODEL.read_bytes()}


def convert_mutated(box: Sandbox, name: str, data: bytes) -> int:
    model = box.write(name, data)
    recipe = box.write("r.toml", NO_PROFILE)
    code, _, err = cli(box, "convert", model, "--preset", "fp32", "--recipe", recipe, "--out", box.out, "-q")
    if code == 0:
        assert json.loads((box.out / "report.json").read_text())["artifacts"], err
    return code


@settings(max_examples=examples(30))
@given(data=st.data(), which=st.sampled_from(["small", "small", "small", "mnist"]))
def test_mutated_onnx(sandboxes, onnx_files, data, which):
    original = onnx_files[which]
    mutated = mutate(original, data.draw(mutations(len(original)), label="mutation"))
    with sandboxes() as box:
        code = convert_mutated(box, "model.onnx", mutated)
        if mutated == original:
            assert code == 0


def test_unmutated_models_convert(sandboxes, onnx_files):
    """The harness itself lets a good model through (else every mutated case would pass vacuously)."""
    with sandboxes() as box:
        assert convert_mutated(box, "model.onnx", onnx_files["small"]) == 0
        assert (box.out / "model.fp32.onnx").is_file()


@pytest.mark.torch
@pytest.mark.slow  # torch's import and a real conversion per intact-enough file: ~40 s
@settings(max_examples=examples(6))
@given(data=st.data())
def test_mutated_pt2(sandboxes, data):
    """A .pt2 is a zip: torn directories, flipped headers and truncations must end in one line."""
    pytest.importorskip("torch")
    original = (ROOT / "models" / "mnist_cnn.pt2").read_bytes()
    how = data.draw(
        st.one_of(
            st.tuples(st.just("truncate"), st.integers(0, len(original) - 1)), mutations(len(original))
        ),
        label="mutation",
    )
    with sandboxes() as box:
        convert_mutated(box, "model.pt2", mutate(original, how))


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A tiny Keras CNN (untrained: the bytes matter, not the weights) as .keras, .h5 and .tflite."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    tf = pytest.importorskip("tensorflow")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="input")
    h = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(h)))
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "m.keras")
    model.save(folder / "m.h5")
    (folder / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return {suffix: (folder / f"m{suffix}").read_bytes() for suffix in (".keras", ".h5", ".tflite")}


@pytest.mark.slow  # the Keras files' fixture imports TensorFlow: ~35 s
@settings(max_examples=examples(8))
@given(data=st.data(), suffix=st.sampled_from([".keras", ".h5"]))
def test_mutated_keras(sandboxes, keras_files, data, suffix):
    original = keras_files[suffix]
    with sandboxes() as box:
        convert_mutated(box, "model" + suffix, mutate(original, data.draw(mutations(len(original)))))


@pytest.mark.slow  # shares the Keras files' fixture
@settings(max_examples=examples(20))
@given(data=st.data())
def test_mutated_tflite_estimated(sandboxes, keras_files, data):
    """The cost model reads .tflite with its own flatbuffer reader: `profile --target` on a device."""
    original = keras_files[".tflite"]
    with sandboxes() as box:
        model = box.write("m.tflite", mutate(original, data.draw(mutations(len(original)))))
        cli(box, "profile", model, "--target", "rpi4", "--no-save", writes=())


@pytest.mark.slow  # shares the Keras files' fixture
@settings(max_examples=examples(5))
@given(data=st.data())
def test_mutated_tflite_run(sandboxes, keras_files, data):
    """`edgesmith run` loads the .tflite into LiteRT's native interpreter: a child process, so that a
    crash of native code is seen as a failure of this test instead of killing the test run."""
    original = keras_files[".tflite"]
    with sandboxes() as box:
        model = box.write("m.tflite", mutate(original, data.draw(mutations(len(original)))))
        inputs = box.root / "x.npz"
        np.savez(inputs, input=np.zeros((1, 8, 8, 1), np.float32))
        before = tree(box.root)
        env = {**os.environ, "TMPDIR": str(box.tmp), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from edgesmith.cli import entry; entry()",
             "run", str(model), "--input", str(inputs), "--output", str(box.out / "y.npz")],
            cwd=box.root, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        check_contract(
            ["run", model.name], proc.returncode, proc.stderr, before, tree(box.root), box, (box.out,)
        )
        note(f"exit {proc.returncode}")


# -- report.json ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def convert_folder(tmp_path_factory, onnx_files):
    """A real convert folder (the shipped CNN at fp32, no latency runs) whose report.json gets mutated."""
    from edgesmith.cli import main

    folder = tmp_path_factory.mktemp("converted")
    recipe = folder / "r.toml"
    recipe.write_text(NO_PROFILE)
    model = folder / "model.onnx"
    model.write_bytes(onnx_files["small"])
    assert (
        main(
            [
                "convert",
                str(model),
                "--preset",
                "fp32",
                "--recipe",
                str(recipe),
                "--out",
                str(folder / "out"),
                "-q",
            ]
        )
        == 0
    )
    return folder / "out"


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _json_paths(node, prefix=()):
    yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _json_paths(child, (*prefix, key))


@st.composite
def mutated_report(draw, original: bytes):
    """report.json with one value replaced or deleted somewhere in its tree, or its bytes mutated."""
    if draw(st.integers(0, 3)) == 0:
        return mutate(original, draw(mutations(len(original))))
    report = json.loads(original)
    path = draw(st.sampled_from(list(_json_paths(report))[1:]))
    parent = report
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return json.dumps(report).encode()


@settings(max_examples=examples(30))
@given(data=st.data())
def test_mutated_report_json(sandboxes, convert_folder, data):
    original = (convert_folder / "report.json").read_bytes()
    with sandboxes() as box:
        shutil.copytree(convert_folder, box.out)
        (box.out / "report.json").write_bytes(data.draw(mutated_report(original), label="report.json"))
        cli(
            box,
            "report",
            box.out,
            "--target",
            "rpi4",
            writes=(box.out / "report.html", box.out / "targets.json"),
        )


# -- device-side commands' options ------------------------------------------------------------------------


@settings(max_examples=examples(15))
@given(
    command=st.sampled_from(["profile", "run"]),
    target=st.sampled_from(["host", "rpi4", "stm32f746", "x"]),
    numbers=st.lists(st.integers(-2, 4), min_size=5, max_size=5),
    backend=st.sampled_from(["auto", "ort", "numpy", "openvino", "litert", "zz"]),
    output=st.sampled_from(["y.npz", "out/y.npz", "out/sub/y.npz"]),
)
def test_run_and_profile_options(sandboxes, onnx_files, command, target, numbers, backend, output):
    runs, warmup, threads, batch, layers = numbers
    with sandboxes() as box:
        model = box.write("m.onnx", onnx_files["small"])
        inputs = box.root / "x.npz"
        np.savez(inputs, input=np.zeros((2, 1, 28, 28), np.float32))
        if command == "profile":
            cli(box, "profile", model, "--target", target, "--runs", runs, "--warmup", warmup, "--threads", threads,
                "--batch", batch, "--layers", layers, "--backend", backend, "--no-save", writes=())  # fmt: skip
        else:
            written = box.root / output
            cli(box, "run", model, "--input", inputs, "--threads", threads, "--backend", backend, "--output", written,
                writes=(written if output == "y.npz" else box.out,))  # fmt: skip


# -- crashes found by this suite in code other helpers own (strict: remove the mark once fixed) ------------


def _truncated_npz(box: Sandbox) -> list:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.zeros((4, 1, 28, 28), np.float32))
    return ["--calibration", box.write("cal.npz", buffer.getvalue()[:100])]


def _scalar_labels(box: Sandbox) -> list:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.zeros((4, 1, 28, 28), np.float32), labels=np.array(3))
    return ["--eval", box.write("eval.npz", buffer.getvalue())]


def _non_utf8_preprocess(box: Sandbox) -> list:
    from PIL import Image

    (box.root / "images").mkdir()
    Image.new("L", (28, 28)).save(box.root / "images" / "0.png")
    box.write("images/preprocess.toml", b"size = [28, 28]\n# \xff\xfe\n")
    return ["--calibration", box.root / "images"]


def _opset_onnxruntime_lacks(box: Sandbox) -> list:
    """A model onnx.checker accepts and ONNX Runtime cannot run (opset 1's Relu): a bit flip found it."""
    import onnx

    model = onnx.load(str(small_cnn(box.root / "cnn.onnx")))
    model.opset_import[0].version = 1
    onnx.save(model, str(box.root / "cnn.onnx"))
    return []


KNOWN = {
    "truncated npz: BadZipFile from converter/data/arrays.py _open_arrays": _truncated_npz,
    "0-d labels: TypeError (len() of unsized object) from converter/data/arrays.py ArraySource.__init__": _scalar_labels,
    "non-UTF-8 preprocess.toml: UnicodeDecodeError from converter/data/images.py resolve_spec": _non_utf8_preprocess,
    "ONNX Runtime refusing a model: the message names the temporary copy (converter/frontends)": _opset_onnxruntime_lacks,
}


@pytest.mark.parametrize("case", list(KNOWN))
def test_known_crash_in_convert(sandboxes, case):
    with sandboxes() as box:
        model = box.root / "cnn.onnx"
        if not model.exists():
            small_cnn(model)
        extra = KNOWN[case](box)
        recipe = box.write("r.toml", NO_PROFILE)
        code, _, err = cli(
            box,
            "convert",
            model,
            "--preset",
            "fp32",
            "--recipe",
            recipe,
            "--out",
            box.out,
            *extra,
            known=False,
        )
        assert code == 2, err


def test_known_crash_run_output_is_a_folder(sandboxes, onnx_files):
    with sandboxes() as box:
        model = box.write("m.onnx", onnx_files["small"])
        np.savez(box.root / "x.npz", input=np.zeros((2, 1, 28, 28), np.float32))
        box.out.mkdir()
        code, _, err = cli(box, "run", model, "--input", box.root / "x.npz", "--output", box.out, known=False)
        assert code == 2, err


REPORT_DAMAGE = {
    "empty report.json: JSONDecodeError": lambda text: "",
    "non-UTF-8 report.json: UnicodeDecodeError": lambda text: text.replace("fp32", "\udcff"),
    "no artifacts: KeyError": lambda text: json.dumps(
        {k: v for k, v in json.loads(text).items() if k != "artifacts"}
    ),
    "an artifact's path a number: TypeError": lambda text: text.replace(
        '"format": "onnx",\n      "path": ', '"format": "onnx",\n      "path": 7, "x": ', 1
    ),
    "an artifact's size null: TypeError in _table": lambda text: text.replace(
        '"size_bytes": ', '"size_bytes": null, "x": '
    ),
}


@pytest.mark.parametrize(
    "damage",
    [k for k in REPORT_DAMAGE],
)
def test_known_crash_in_report(sandboxes, convert_folder, damage):
    with sandboxes() as box:
        shutil.copytree(convert_folder, box.out)
        text = (box.out / "report.json").read_text()
        damaged = REPORT_DAMAGE[damage](text)
        assert damaged != text
        (box.out / "report.json").write_bytes(damaged.encode("utf-8", "surrogateescape"))
        writes = (box.out / "report.html", box.out / "targets.json")
        code, _, err = cli(box, "report", box.out, "--target", "rpi4", writes=writes, known=False)
        assert code == 2, err


# -- what a user's terminal shows: a real process, stderr as written -------------------------------------


def _intact(request, onnx_files, suffix: str) -> bytes:
    if suffix == ".onnx":
        return onnx_files["mnist"]
    if suffix == ".pt2":
        return (ROOT / "models" / "mnist_cnn.pt2").read_bytes()
    return request.getfixturevalue("keras_files")[suffix]


@pytest.mark.slow  # one interpreter per format, importing its framework: ~15 s each
@pytest.mark.parametrize(
    "suffix",
    [
        ".onnx",
        ".pt2",
        ".keras",  # .h5 goes through the same TensorFlow import
    ],
)
def test_truncated_model_in_a_real_process_prints_one_line(request, tmp_path, onnx_files, suffix):
    """Libraries log to the process' stderr behind an in-process capture's back (torch's logging keeps
    the stream it started with): only a real process shows exactly what the user sees."""
    model = tmp_path / f"model{suffix}"
    data = _intact(request, onnx_files, suffix)
    model.write_bytes(data[: len(data) // 2])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", "from edgesmith.cli import entry; entry()",
         "convert", str(model), "--preset", "fp32", "--out", str(tmp_path / "out"), "-q"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("edgesmith: error: "), proc.stderr
    assert model.read_bytes() == data[: len(data) // 2] and not (tmp_path / "out").exists()
