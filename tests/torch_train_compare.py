"""Trains dsmodel's MLP with dscompile + dsrun and with PyTorch from the same
initial weights, data and DeepSpeed config, and checks that the per-step losses
agree. Run with Debian's /usr/bin/python3 (torch 1.13, onnx, numpy):

    torch_train_compare.py --bin BUILD_DIR --work DIR
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import torch

STEPS = 10
BATCH = 16
TOLERANCE = 1e-4  # relative, per step loss


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def torch_mlp(model_path):
    weights = {t.name: torch.tensor(onnx.numpy_helper.to_array(t).copy())
               for t in onnx.load(model_path).graph.initializer}
    layers = []
    index = 0
    while f"layers.{index}.weight" in weights:
        w = weights[f"layers.{index}.weight"]
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data.copy_(w)
        linear.bias.data.copy_(weights[f"layers.{index}.bias"])
        layers.append(linear)
        index += 2
        if f"layers.{index}.weight" in weights:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_losses(model, optimizer, x, y):
    losses = []
    for step in range(STEPS):
        rows = [(step * BATCH + i) % len(x) for i in range(BATCH)]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x[rows])), torch.tensor(y[rows]))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    path = lambda name: os.path.join(args.work, name)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 784)).astype(np.float32)
    y = x[:, :10].argmax(axis=1).astype(np.int64)
    np.save(path("x.npy"), x)
    np.save(path("y.npy"), y)
    cases = {
        "AdamW": ({"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01}},
                  lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, eps=1e-8)),
        "Adam-L2": ({"type": "Adam", "params": {"lr": 1e-3, "weight_decay": 0.01, "adam_w_mode": False}},
                    lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=0.01, eps=1e-8)),
        "SGD-nesterov": ({"type": "SGD", "params": {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                                    "weight_decay": 1e-4}},
                         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                                   weight_decay=1e-4)),
    }
    run([os.path.join(args.bin, "dsmodel"), "mlp", "-o", path("mlp.onnx")])
    failed = False
    for name, (optimizer_config, make_optimizer) in cases.items():
        config = {"train_micro_batch_size_per_gpu": BATCH, "optimizer": optimizer_config}
        with open(path("config.json"), "w") as f:
            json.dump(config, f)
        run([os.path.join(args.bin, "dscompile"), path("mlp.onnx"), "--config", path("config.json"),
             "--loss", "cross_entropy", "-o", path("mlp.plan")])
        run([os.path.join(args.bin, "dsrun"), path("mlp.plan"), "--feed", "input=" + path("x.npy"),
             "--feed", "label=" + path("y.npy"), "--steps", str(STEPS), "--metrics", path("m.jsonl")])
        with open(path("m.jsonl")) as f:
            ours = [json.loads(line)["loss"] for line in f]
        model = torch_mlp(path("mlp.onnx"))
        theirs = torch_losses(model, make_optimizer(model.parameters()), x, y)
        worst = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
        print(f"{name}: losses {ours[0]:.6f} -> {ours[-1]:.6f} (torch {theirs[0]:.6f} -> "
              f"{theirs[-1]:.6f}), max relative difference {worst:.2e}")
        failed |= worst > TOLERANCE or len(ours) != STEPS
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
