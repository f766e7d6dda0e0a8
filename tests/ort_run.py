"""Runs an ONNX model with ONNX Runtime (CPU) on .npy inputs and writes each output as
OUT_DIR/NAME.npy: the independent check of models dsrun --export-onnx writes.

Usage: .venv/bin/python tests/ort_run.py MODEL OUT_DIR NAME=FILE.npy ...
"""

import os
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, out_dir, feeds = sys.argv[1], sys.argv[2], sys.argv[3:]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inputs = {}
    for feed in feeds:
        name, path = feed.split("=", 1)
        inputs[name] = np.load(path)
    os.makedirs(out_dir, exist_ok=True)
    for info, value in zip(session.get_outputs(), session.run(None, inputs)):
        np.save(os.path.join(out_dir, info.name + ".npy"), value)


if __name__ == "__main__":
    main()
