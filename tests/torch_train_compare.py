"""Trains dsmodel's MLP with dscompile + dsrun and with PyTorch from the same
initial weights, data and DeepSpeed config, and checks that the per-step losses
agree. Run with Debian's /usr/bin/python3 (torch 1.13, onnx, numpy):

    torch_train_compare.py --bin BUILD_DIR --work DIR [--clip C] [--accumulation G]

Each optimizer runs with the given gradient_clipping and gradient_accumulation_steps
(default: every variant in VARIANTS). PyTorch is the oracle in its plainest form: one
step over the whole global batch (train_batch_size samples), then
torch.nn.utils.clip_grad_norm_, then optimizer.step(); dsrun instead runs G
micro-steps of train_batch_size / G samples and accumulates the gradients.
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
BATCH = 16  # train_batch_size: the global batch of one optimizer step
# (gradient_clipping, gradient_accumulation_steps); clipping at 0.5 is active on
# every step (the MLP's gradient norms are above 1).
VARIANTS = [(0.0, 1), (0.5, 1), (0.0, 2), (0.0, 4), (0.5, 4)]
TOLERANCE = 1e-5  # relative, per step loss and grad_norm (observed: below 2e-6)
ONE_CYCLE = {"cycle_min_lr": 1e-4, "cycle_max_lr": 1e-3, "cycle_first_step_size": 3,
             "decay_step_size": 2, "decay_lr_rate": 0.5, "cycle_min_mom": 0.8,
             "cycle_max_mom": 0.9, "decay_mom_rate": 0.1}


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


def one_cycle(p, it):
    """DeepSpeed's OneCycle (lr, beta1) at scheduler iteration `it`, written from its
    docstring: lr rises from cycle_min_lr to cycle_max_lr over cycle_first_step_size
    iterations and falls back over as many, momentum inversely; then both decay."""
    if it < 0:  # the constructor's values
        return p["cycle_min_lr"], p["cycle_min_mom"]
    half = p["cycle_first_step_size"]
    if it < 2 * half:
        position = (it + 1) % (2 * half)
        up = position / half if position <= half else (2 * half - position) / half
        return (p["cycle_min_lr"] + (p["cycle_max_lr"] - p["cycle_min_lr"]) * up,
                p["cycle_max_mom"] - (p["cycle_max_mom"] - p["cycle_min_mom"]) * up)
    intervals = (it - 2 * half + 1) / p["decay_step_size"]
    return (p["cycle_min_lr"] / (1 + p["decay_lr_rate"] * intervals),
            p["cycle_max_mom"] * (1 + p["decay_mom_rate"] * intervals))


class Lion(torch.optim.Optimizer):
    """Lion as the paper's Algorithm 2 states it (Chen et al. 2023, "Symbolic
    Discovery of Optimization Algorithms"), with decoupled weight decay: torch.optim
    has no Lion."""

    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = (beta1 * m + (1 - beta1) * p.grad).sign()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)


class Lamb(torch.optim.Optimizer):
    """DeepSpeed's FusedLamb as its documentation and kernel state it, per parameter:
    Adam's moments; the direction u = m / (sqrt(v) + eps) + weight_decay * p; the trust
    ratio |p| / |u| clamped to [min_coeff, max_coeff] (1 when either is 0); the step
    lr * sqrt(1 - beta2^t) / (1 - beta1^t) * trust * u."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, max_coeff=10.0,
                 min_coeff=0.01):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                                      max_coeff=max_coeff, min_coeff=min_coeff))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                m = state.setdefault("exp_avg", torch.zeros_like(p))
                v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                u = m / (v.sqrt() + group["eps"]) + group["weight_decay"] * p
                p_norm, u_norm = p.norm().item(), u.norm().item()
                trust = 1.0
                if p_norm > 0 and u_norm > 0:
                    trust = min(group["max_coeff"], max(group["min_coeff"], p_norm / u_norm))
                t = state["step"]
                step_size = group["lr"] * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)
                p.sub_(step_size * trust * u)


def torch_losses(model, optimizer, x, y, clip, schedule=None):
    losses, norms = [], []
    for step in range(STEPS):
        if schedule:  # DeepSpeed steps the scheduler after each step: step s at iteration s - 2
            lr, beta1 = schedule(step - 1)
            for group in optimizer.param_groups:
                group["lr"], group["betas"] = lr, (beta1, 0.99)
        rows = [(step * BATCH + i) % len(x) for i in range(BATCH)]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x[rows])), torch.tensor(y[rows]))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        optimizer.step()
        losses.append(loss.item())
        norms.append(float(norm))
    return losses, norms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--clip", type=float, help="gradient_clipping (0: none)")
    parser.add_argument("--accumulation", type=int, help="gradient_accumulation_steps")
    args = parser.parse_args()
    variants = VARIANTS
    if args.clip is not None or args.accumulation is not None:
        variants = [(args.clip or 0.0, args.accumulation or 1)]
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
        "Adagrad": ({"type": "Adagrad", "params": {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 1e-3,
                                                   "initial_accumulator_value": 0.1}},
                    lambda p: torch.optim.Adagrad(p, lr=0.05, lr_decay=0.01, weight_decay=1e-3,
                                                  initial_accumulator_value=0.1)),
        "Lion": ({"type": "Lion", "params": {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.1}},
                 lambda p: Lion(p, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)),
        "Lamb": ({"type": "Lamb", "params": {"lr": 1e-3, "weight_decay": 0.01}},
                 lambda p: Lamb(p, lr=1e-3, weight_decay=0.01)),
        # OneCycle cycles lr and Adam's beta1 (the ds.momentum feed) and sets beta2 = 0.99.
        "AdamW-OneCycle": ({"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01}},
                           lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, eps=1e-8),
                           {"type": "OneCycle", "params": ONE_CYCLE},
                           lambda it: one_cycle(ONE_CYCLE, it)),
    }
    run([os.path.join(args.bin, "dsmodel"), "mlp", "-o", path("mlp.onnx")])
    failed = False
    for (clip, accumulation), (name, case) in ((v, c) for v in variants for c in cases.items()):
        optimizer_config, make_optimizer = case[:2]
        scheduler_config, schedule = case[2:] if len(case) > 2 else (None, None)
        config = {"train_batch_size": BATCH, "gradient_accumulation_steps": accumulation,
                  "gradient_clipping": clip, "optimizer": optimizer_config}
        if scheduler_config:
            config["scheduler"] = scheduler_config
        with open(path("config.json"), "w") as f:
            json.dump(config, f)
        run([os.path.join(args.bin, "dscompile"), path("mlp.onnx"), "--config", path("config.json"),
             "--loss", "cross_entropy", "-o", path("mlp.plan")])
        run([os.path.join(args.bin, "dsrun"), path("mlp.plan"), "--feed", "input=" + path("x.npy"),
             "--feed", "label=" + path("y.npy"), "--steps", str(STEPS), "--metrics", path("m.jsonl")])
        with open(path("m.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
        ours = [m["loss"] for m in metrics]
        model = torch_mlp(path("mlp.onnx"))
        theirs, norms = torch_losses(model, make_optimizer(model.parameters()), x, y, clip,
                                     schedule)
        worst = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
        worst_norm = max(abs(m["grad_norm"] - n) / n for m, n in zip(metrics, norms))
        clipped = sum(n > clip for n in norms) if clip > 0 else 0
        print(f"{name} clip {clip} accumulation {accumulation}: losses {ours[0]:.6f} -> "
              f"{ours[-1]:.6f} (torch {theirs[0]:.6f} -> {theirs[-1]:.6f}), max relative "
              f"difference {worst:.2e}, grad_norm {worst_norm:.2e}, clipped {clipped}/{STEPS}")
        failed |= worst > TOLERANCE or worst_norm > TOLERANCE or len(ours) != STEPS
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
