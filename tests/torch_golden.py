"""Golden data from PyTorch: trains models exported with torch.onnx.export in PyTorch and
with dscompile + dsrun from the same ONNX file, data and DeepSpeed config, and checks
that the per-step losses and the final weights agree. Run with Debian's
/usr/bin/python3 (torch 1.13, torchvision, onnx, numpy):

    torch_golden.py --bin BUILD_DIR --work DIR [--models mlp,cnn,gpt]
                    [--optimizers sgd,adam,adamw] [--variants plain,clip,accum,clip+accum]
                    [--onnx-bn-variance]

Models (models/export_torch.py, exported in training mode, opset 15): a small MLP, a
small CNN with BatchNorm (training-mode BN: batch statistics, running statistics
updated) and a 2-layer GPT (tied lm_head, no dropout; labels are the next tokens,
int64 [batch, seq]). Optimizers, with DeepSpeed's meaning of its config: SGD with
momentum 0.9 and weight decay (torch.optim.SGD), "Adam" with "adam_w_mode": false
(torch.optim.Adam: weight decay as an L2 term in the gradient) and "AdamW"
(torch.optim.AdamW: decoupled weight decay). DeepSpeed builds a config's optimizer
over the parameters it is given (usually model.parameters(), one group), so every
parameter decays, BatchNorm's and biases included.
Variants: plain; gradient_clipping active on most steps (checked); 2 accumulation
steps; both; and the 2 micro-batches on 2 ranks instead, at ZeRO-2, and clipped at
ZeRO-3 (BatchNorm running statistics are then per rank and not compared).

PyTorch is the oracle with DeepSpeed's engine semantics written out: optimizer step s
(from 1) runs G micro-steps; micro-step g takes the `micro` samples that start at
((s - 1) G + g) micro (cycled over the dataset), computes the mean cross-entropy of its
micro-batch, and backpropagates loss / G (BatchNorm normalises with the statistics of
that micro-batch and updates its running statistics once per micro-step); then
clip_grad_norm_ (DeepSpeed's coefficient C / (norm + 1e-6), applied when below 1) and
optimizer.step(). The step's loss is the mean of the G micro-losses.

Checks, each within TOLERANCE (1e-5) relative:
  * every step's loss: |ours - torch| / |torch|, and the pre-clipping grad_norm;
  * every final float tensor of the state_dict (parameters and BatchNorm running
    mean/var), read back from `dsrun --export-onnx` by its PyTorch name:
    ||ours - torch||_2 / ||torch||_2 per tensor. A per-tensor norm, not an elementwise
    relative error: weights cross zero and biases start at zero, and an element near
    zero has an arbitrarily large relative error for an absolute difference at the
    level of float32 rounding of its neighbours; the norm-wise error is what float32
    arithmetic can promise for the tensor as a whole (the error of a computation is
    bounded relative to the size of the values it combines, not to each result).

Ill-conditioned tensors. Adam divides by sqrt(v) + eps, so an element whose gradient
is at the level of rounding noise moves by up to lr in a direction the noise decides.
The GPT has such a parameter: the key third of attn.c_attn.bias, whose exact gradient
is zero (it adds q . b_k to every score of a softmax row), so PyTorch's own float32
c_attn.bias ends 2e-4 (AdamW) to 2e-3 (Adam) from its float64 one, and no float32
implementation can match it to 1e-5. A tensor over TOLERANCE is therefore rerun in
float64: it passes only if PyTorch's float32 result is itself more than TOLERANCE / 2
from float64 and ours is at most twice as far from float64 as PyTorch's float32 is;
the case's line lists it as ill-conditioned. (Adam with L2 decay runs with eps 1e-6:
with the default 1e-8, GPT elements whose gradient and decay term cancel to ~eps lose
their digits the same way and PyTorch float32 is 1e-5 from float64 on mlp.c_proj.)

BatchNorm's running variance: PyTorch updates running_var with the unbiased batch
variance (n / (n - 1)); the ONNX BatchNormalization-15 text, which torch.onnx.export
relies on without a correction, and dscompile's kernels use the biased one.
--onnx-bn-variance makes the oracle follow ONNX instead (hooks correct PyTorch's
update after each backward). Note also that the export traces the model in training
mode, which moves the running statistics once: both sides start from the file.

One line per case (model, optimizer, variant, worst loss error, worst weight error and
its tensor); exit status 1 if any case fails.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnx.numpy_helper
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import export_torch  # noqa: E402  (the models/ directory is not a package)

STEPS = 6
TOLERANCE = 1e-5
SEED = 0

# Per model: export_torch.py arguments, the input name, train_batch_size (the global
# batch of one optimizer step) and a gradient_clipping value below its gradient norms.
MODELS = {
    "mlp": {"argv": ["mlp", "--in", "32", "--hidden", "64,64", "--classes", "10"],
            "input": "input", "batch": 16, "clip": 0.3},
    "cnn": {"argv": ["cnn", "--image", "16", "--classes", "10"],
            "input": "input", "batch": 8, "clip": 0.5},
    "gpt": {"argv": ["gpt", "--layers", "2", "--d-model", "32", "--heads", "4", "--vocab", "50",
                     "--seq", "8"],
            "input": "input_ids", "batch": 8, "clip": 0.5},
}
OPTIMIZERS = {
    "sgd": ({"type": "SGD", "params": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}},
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    # eps 1e-6: a non-default eps shows where it goes; the default, 1e-8, makes the GPT's
    # elements whose gradient and L2 term cancel ill-conditioned (see the docstring).
    "adam": ({"type": "Adam", "params": {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-6,
                                         "weight_decay": 0.01, "adam_w_mode": False}},
             lambda p: torch.optim.Adam(p, lr=2e-3, betas=(0.9, 0.999), eps=1e-6,
                                        weight_decay=0.01)),
    "adamw": ({"type": "AdamW", "params": {"lr": 2e-3, "weight_decay": 0.05}},  # defaults
              lambda p: torch.optim.AdamW(p, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=0.05)),
}
# variant: (clipped, micro-batches per step, ranks, ZeRO stage). On 2 ranks each rank
# takes one of the step's 2 micro-batches, exactly as the reference's 2 accumulation
# micro-steps do (docs/zero.md).
VARIANTS = {"plain": (False, 1, 1, 0), "clip": (True, 1, 1, 0), "accum": (False, 2, 1, 0),
            "clip+accum": (True, 2, 1, 0), "zero2x2": (False, 2, 2, 2),
            "clip+zero3x2": (True, 2, 2, 3)}


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def export_args(spec):
    return export_torch.parse_args(spec["argv"] + ["--seed", str(SEED), "-o", "-"])


def build(spec, onnx_path=None):
    """The seeded model from export_torch.py's builders (training mode), with the
    initial state that `onnx_path` holds when given."""
    torch.manual_seed(SEED)
    model, _, input_name = export_torch.build(torch, export_args(spec))
    assert input_name == spec["input"], input_name
    model.train()
    if onnx_path:
        load_initializers(model, onnx_path)
    return model


def export(spec, path):
    """Exports the model with models/export_torch.py (training mode, opset 15, symbolic
    batch axis)."""
    if export_torch.main(spec["argv"] + ["--seed", str(SEED), "-o", path]) != 0:
        sys.exit(f"export_torch.py {' '.join(spec['argv'])} failed")


def float_state(model):
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def initializers(path):
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def load_initializers(model, path):
    weights = initializers(path)
    state = float_state(model)
    missing = sorted(set(state) - set(weights))
    if missing:
        sys.exit(f"{path}: no initializer for {', '.join(missing)}")
    with torch.no_grad():
        for key, tensor in state.items():
            tensor.copy_(torch.from_numpy(weights[key].copy()))


def make_data(name, spec, path):
    """A dataset of 2.5 global batches (so that the steps cycle through it): returns
    (inputs, labels) and writes them as .npy files for dsrun."""
    rng = np.random.default_rng(1)
    samples = spec["batch"] * 5 // 2
    args = export_args(spec)
    if name == "gpt":  # labels: the next tokens
        tokens = rng.integers(0, args.vocab, (samples, args.seq + 1), dtype=np.int64)
        x, y = tokens[:, :-1].copy(), tokens[:, 1:].copy()
    else:
        shape = (args.in_features,) if name == "mlp" else (3, args.image, args.image)
        x = rng.standard_normal((samples,) + shape).astype(np.float32)
        y = rng.integers(0, args.classes, samples, dtype=np.int64)
    np.save(path(f"{name}_x.npy"), x)
    np.save(path(f"{name}_y.npy"), y)
    return x, y


def onnx_running_var(model):
    """Makes each BatchNorm2d update running_var with the biased batch variance, as the
    ONNX BatchNormalization-15 text specifies, instead of PyTorch's unbiased one: returns
    a function that corrects the running_var updates of the last forward pass (to call
    after backward, which needs running_var unmodified)."""
    pending = []

    def hook(module, inputs, _):
        x = inputs[0].detach()
        n = x.numel() // x.shape[1]
        # PyTorch added m var_unbiased, ONNX adds m var_biased (m: PyTorch's momentum)
        pending.append((module.running_var, module.momentum * x.var(dim=(0, 2, 3), unbiased=False)
                        * (n / (n - 1) - 1)))

    def correct():
        with torch.no_grad():
            for running_var, excess in pending:
                running_var.sub_(excess)
        pending.clear()

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(hook)
    return correct


def torch_train(model, optimizer, x, y, batch, accumulation, clip, dtype=torch.float32,
                after_backward=lambda: None):
    """DeepSpeed's engine in PyTorch: returns the per-step losses and grad norms."""
    micro = batch // accumulation
    losses, norms = [], []
    for step in range(STEPS):
        optimizer.zero_grad()
        total = 0.0
        for g in range(accumulation):
            start = (step * accumulation + g) * micro
            rows = [(start + i) % len(x) for i in range(micro)]
            inputs = torch.from_numpy(x[rows])
            logits = model(inputs.to(dtype) if inputs.is_floating_point() else inputs)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     torch.from_numpy(y[rows]).reshape(-1))
            (loss / accumulation).backward()
            after_backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                              clip if clip > 0 else float("inf"))
        optimizer.step()
        losses.append(total / accumulation)
        norms.append(float(norm))
    return losses, norms


def ours_train(bin_dir, path, name, spec, config, ranks):
    """dscompile + dsrun: returns the metrics and the exported initializers."""
    with open(path("config.json"), "w") as f:
        json.dump(config, f)
    run([os.path.join(bin_dir, "dscompile"), path(f"{name}.onnx"), "--config", path("config.json"),
         "--loss", "cross_entropy", "--gpus", str(ranks), "-o", path("train.plan")])
    run([os.path.join(bin_dir, "dsrun"), path("train.plan"),
         "--feed", f"{spec['input']}={path(f'{name}_x.npy')}",
         "--feed", f"label={path(f'{name}_y.npy')}", "--steps", str(STEPS),
         "--metrics", path("metrics.jsonl"), "--export-onnx", path("trained.onnx")])
    with open(path("metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    return metrics, initializers(path("trained.onnx"))


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a))


def torch_reference(spec, onnx_path, make_optimizer, data, accumulation, clip, onnx_bn, dtype):
    model = build(spec, onnx_path)  # tracing moved the BN statistics: start from the file
    model.to(dtype)
    losses, norms = torch_train(model, make_optimizer(model.parameters()), *data, spec["batch"],
                                accumulation, clip, dtype,
                                onnx_running_var(model) if onnx_bn else lambda: None)
    return losses, norms, {k: v.numpy() for k, v in float_state(model).items()}


def check_weights(trained, weights, float64_reference):
    """Per-tensor errors of `trained` against PyTorch's float32 `weights`; returns
    (worst error, its tensor, excused tensors, problems). A tensor over TOLERANCE is
    excused when it is ill-conditioned at float32 (PyTorch's own float32 result is more
    than TOLERANCE / 2 from its float64 one) and ours is at most twice as far from the
    float64 result as PyTorch's float32 is."""
    worst, worst_key, excused, problems = 0.0, "-", [], []
    reference64 = None
    for key, tensor in weights.items():
        if key not in trained:
            problems.append(f"no {key} in the exported model")
            continue
        error = relative(trained[key], tensor)
        if error > TOLERANCE:
            reference64 = reference64 or float64_reference()
            torch_error = relative(tensor, reference64[key])
            ours_error = relative(trained[key], reference64[key])
            if torch_error > TOLERANCE / 2 and ours_error <= 2 * torch_error:
                excused.append(f"{key} (vs float64: ours {ours_error:.1e}, "
                               f"torch {torch_error:.1e})")
                continue
            problems.append(f"weights: {key} off by {error:.2e} (vs float64: ours "
                            f"{ours_error:.1e}, torch float32 {torch_error:.1e})"
                            + (" [biased batch variance? see --onnx-bn-variance]"
                               if key.endswith("running_var") else ""))
        if error >= worst:
            worst, worst_key = error, key
    return worst, worst_key, excused, problems


def compare(name, spec, opt_name, variant, bin_dir, path, data, onnx_bn):
    optimizer_config, make_optimizer = OPTIMIZERS[opt_name]
    clipped, accumulation, ranks, stage = VARIANTS[variant]
    clip = spec["clip"] if clipped else 0.0
    config = {"train_batch_size": spec["batch"],
              "gradient_accumulation_steps": accumulation // ranks, "gradient_clipping": clip,
              "optimizer": optimizer_config, "zero_optimization": {"stage": stage}}
    metrics, trained = ours_train(bin_dir, path, name, spec, config, ranks)
    reference = lambda dtype: torch_reference(spec, path(f"{name}.onnx"), make_optimizer, data,
                                              accumulation, clip, onnx_bn, dtype)
    losses, norms, weights = reference(torch.float32)
    if ranks > 1:  # running statistics are per rank (data parallel); rank 0's are exported
        weights = {k: v for k, v in weights.items() if "running_" not in k}
    problems = []
    if len(metrics) != STEPS:
        problems.append(f"{len(metrics)} metric lines, expected {STEPS}")
    ours = [m["loss"] for m in metrics]
    loss_error = max((abs(a - b) / abs(b) for a, b in zip(ours, losses)), default=float("inf"))
    norm_error = max((abs(m["grad_norm"] - n) / n for m, n in zip(metrics, norms)),
                     default=float("inf"))
    weight_error, worst_tensor, excused, weight_problems = check_weights(
        trained, weights, lambda: reference(torch.float64)[2])
    n_clipped = sum(n > clip for n in norms) if clip > 0 else 0
    if clipped and n_clipped * 2 <= STEPS:
        problems.append(f"clipping active on {n_clipped}/{STEPS} steps only; lower MODELS clip")
    if loss_error > TOLERANCE:
        problems.append("losses " + " ".join(f"{a:.7g}/{b:.7g}" for a, b in zip(ours, losses)))
    if norm_error > TOLERANCE:
        problems.append("grad_norm " + " ".join(f"{m['grad_norm']:.7g}/{n:.7g}"
                                                for m, n in zip(metrics, norms)))
    problems += weight_problems[:4]
    if len(weight_problems) > 4:
        problems.append(f"... and {len(weight_problems) - 4} more tensors")
    status = "FAIL" if problems else "ok"
    print(f"{name:4} {opt_name:6} {variant:11} loss {loss_error:.1e}  grad_norm {norm_error:.1e}  "
          f"weights {weight_error:.1e} ({worst_tensor})  clipped {n_clipped}/{STEPS}  "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}  {status}", flush=True)
    for tensor in excused:
        print(f"    ill-conditioned at float32: {tensor}", flush=True)
    for problem in problems:
        print(f"    {problem}", flush=True)
    return not problems


def choose(value, table, flag):
    names = value.split(",") if value else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(table)})")
    return names


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="build directory with dscompile and dsrun")
    parser.add_argument("--work", required=True, help="scratch directory")
    parser.add_argument("--models", help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--optimizers", help="comma-separated subset of " + ",".join(OPTIMIZERS))
    parser.add_argument("--variants", help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--onnx-bn-variance", action="store_true",
                        help="make the PyTorch oracle update BatchNorm's running_var with the "
                             "biased batch variance (the ONNX text) instead of PyTorch's "
                             "unbiased one")
    args = parser.parse_args()
    models = choose(args.models, MODELS, "--models")
    optimizers = choose(args.optimizers, OPTIMIZERS, "--optimizers")
    variants = choose(args.variants, VARIANTS, "--variants")
    os.makedirs(args.work, exist_ok=True)
    path = lambda name: os.path.join(args.work, name)
    torch.set_num_threads(1)
    begin = time.time()
    failures = 0
    for name in models:
        spec = MODELS[name]
        export(spec, path(f"{name}.onnx"))
        data = make_data(name, spec, path)
        for opt_name in optimizers:
            for variant in variants:
                failures += not compare(name, spec, opt_name, variant, args.bin, path, data,
                                        args.onnx_bn_variance)
    total = len(models) * len(optimizers) * len(variants)
    print(f"{total - failures}/{total} cases within {TOLERANCE:g} ({time.time() - begin:.0f} s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
