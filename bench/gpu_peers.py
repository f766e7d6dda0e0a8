"""PyTorch and DeepSpeed peers of issue 7's GPU benchmarks, and the result files.

bench/gpu_bench.sh runs each peer in a process of its own (one peer's crash, hang or
failed op build cannot take the others down) and joins everything into JSON lines
plus a Markdown table. Every measurement, and every failure, is one JSON line.

Workloads (the sizes dsrun's plans are built with; flags override them for smoke tests):
  ref       torchvision resnet101(num_classes=10), ImageNet stem, 32x32, micro-batch 128,
            fp16 (AMP / dynamic loss scaling), AdamW lr 1e-4 wd 0.01: the reference workload
            (/work/shared/reference/WORKLOAD.md) at world size 1
  r101_224  resnet101(num_classes=1000), 224x224, batch 64, fp16, AdamW, channels_last
  gpt       GPT-2-small size (12 layers, d 768, 12 heads, vocab 50257, seq 1024), batch 8,
            bf16 autocast, AdamW; the layout of dsmodel's / models/export_torch.py's GPT
            (pre-LayerNorm blocks, exact GELU, LayerNorm eps 1e-5, lm_head tied to wte)

Peers:
  eager      PyTorch eager: torch.autocast + GradScaler (fp16) or bf16 autocast, AdamW with
             fused=True on CUDA, cudnn.benchmark on
  compile    the same with torch.compile(model) (default mode); the first step, which
             compiles, is reported as first_step_s
  deepspeed  (ref only) DeepSpeed ZeRO-3 with the reference config, world size 1, in this
             process (no `deepspeed` launcher: MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK
             set here, then deepspeed.init_distributed()). --ds-variant ref keeps its
             optimizer offload (DeepSpeedCPUAdam, a JIT-built C++ op); no_offload drops it
             (FusedAdam, a JIT-built CUDA op); torch_adam also uses torch.optim.AdamW, which
             needs no build

Timing: every step is bracketed by torch.cuda.synchronize(); the --warmup first steps
are dropped, and more while the last one overflowed (fp16: the dynamic loss scale falls
from 2^16 over the first steps, and a skipped step has no optimizer update, so it is
cheaper; at most --max-extra-warmup more), and the median of the next --steps is
reported (throughput = batch / median).
The PyTorch peers train on one random batch resident on the GPU. dsrun's step time
(`dsrun` subcommand) comes from its --metrics file (samples_per_s per step, which also
includes putting that step's batch in place from the host).

Model FLOPs (gpt): per token 6 N + 12 L T d (N = parameters without the position
embedding, L layers, T sequence, d width): the 6N of dense forward + backward plus the
attention score and context products, as in the PaLM paper (Chowdhery et al. 2022,
arXiv:2204.02311, Appendix B, "model FLOPs utilization") and nanoGPT's estimate_mfu.
It counts the full T x T attention, not the causal half, and the tied lm_head through N.
MFU = model FLOP/s / --peak-tflops (default 989: H100 SXM dense bf16, NVIDIA's datasheet).

Usage:
  gpu_peers.py peer  --workload ref|r101_224|gpt --peer eager|compile|deepspeed
                     [--steps 20 --warmup 5 --device cuda --json-out FILE] [size flags]
  gpu_peers.py dsrun --workload W --metrics M.jsonl --rc RC --log LOG [--summary LOG]
                     [--peer dsrun --variant NAME --data synthetic|feed] --json-out FILE
  gpu_peers.py feeds --workload W DIR          (one batch as DIR/input.npy, DIR/label.npy)
  gpu_peers.py config --workload W --variant V -o FILE   (dscompile's DeepSpeed config)
  gpu_peers.py note  --workload W --peer P --status failed|skipped --error TEXT --json-out FILE
  gpu_peers.py ds-prebuild                     (JIT-builds DeepSpeed's cpu_adam and fused_adam)
  gpu_peers.py table FILE.jsonl                (Markdown table on stdout)
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
import types

WORKLOADS = {
    "ref": {"model": "resnet101", "image": 32, "classes": 10, "batch": 128, "precision": "fp16",
            "channels_last": False},
    "r101_224": {"model": "resnet101", "image": 224, "classes": 1000, "batch": 64,
                 "precision": "fp16", "channels_last": True},
    "gpt": {"model": "gpt", "layers": 12, "d_model": 768, "heads": 12, "vocab": 50257,
            "seq": 1024, "batch": 8, "precision": "bf16"},
}
H100_BF16_DENSE_TFLOPS = 989.0
LR, WEIGHT_DECAY = 1e-4, 0.01
DEFAULT_DS_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                                 "ds_config_resnet101_zero3.json")


# ---------------------------------------------------------------- workload and FLOPs

def workload_spec(args):
    """The workload's sizes with any size flags given on the command line applied."""
    spec = dict(WORKLOADS[args.workload])
    for key in ("model", "image", "classes", "batch", "layers", "d_model", "heads", "vocab", "seq",
                "precision"):
        value = getattr(args, key, None)
        if value is not None:
            spec[key] = value
    if getattr(args, "channels_last", None) is not None:
        spec["channels_last"] = args.channels_last
    return spec


def gpt_parameters(spec):
    """GPT-2 layout parameter count (tied lm_head): wte + wpe + blocks + ln_f."""
    d, L = spec["d_model"], spec["layers"]
    return spec["vocab"] * d + spec["seq"] * d + L * (12 * d * d + 13 * d) + 2 * d


def gpt_flops_per_token(spec):
    """6 N + 12 L T d, N without the position embedding (PaLM Appendix B; nanoGPT)."""
    n = gpt_parameters(spec) - spec["seq"] * spec["d_model"]
    return 6 * n + 12 * spec["layers"] * spec["seq"] * spec["d_model"]


def throughput_fields(spec, step_times, warmup, peak_tflops):
    """Median step time and what follows from it; step_times excludes nothing yet."""
    timed = step_times[warmup:]
    median = statistics.median(timed)
    out = {"steps_timed": len(timed), "warmup": warmup, "median_step_s": median,
           "mean_step_s": statistics.fmean(timed), "min_step_s": min(timed),
           "max_step_s": max(timed), "throughput": spec["batch"] / median}
    if spec["model"] == "gpt":
        tokens = spec["batch"] * spec["seq"]
        flops = gpt_flops_per_token(spec) * tokens
        out.update(unit="sequences/s", tokens_per_s=tokens / median, flops_per_step=flops,
                   model_tflops_per_s=flops / median / 1e12,
                   mfu=flops / median / (peak_tflops * 1e12), peak_tflops=peak_tflops)
    else:
        out["unit"] = "images/s"
    return out


def base_record(args, spec, peer):
    rec = {"workload": args.workload, "peer": peer, "model": spec["model"],
           "precision": spec["precision"], "batch": spec["batch"]}
    if spec["model"] == "gpt":
        rec.update(seq=spec["seq"], layers=spec["layers"], d_model=spec["d_model"],
                   heads=spec["heads"], vocab=spec["vocab"], parameters=gpt_parameters(spec))
    else:
        rec.update(image=spec["image"], classes=spec["classes"])
    return rec


def emit(record, path):
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def short_error(text, limit=400):
    """One line; of a build log (an op's JIT build failed), its head and first error."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) > 1:
        head = lines[0].split(": [", 1)[0]  # "Error building extension 'x': [1/3] c++ ..."
        errors = [line for line in lines[1:] if re.search(r"\berror\b", line, re.I)]
        lines = [head] + errors[:2] if errors else lines
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- models

def build_resnet(torch, spec):
    import torchvision
    return getattr(torchvision.models, spec["model"])(num_classes=spec["classes"])


def build_gpt(torch, spec, attn):
    """dsmodel's GPT, from models/export_torch.py (the one PyTorch definition of it),
    with the attention written out ('math', the graph dsmodel emits) or as
    scaled_dot_product_attention ('sdpa')."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    import export_torch
    sizes = types.SimpleNamespace(d_model=spec["d_model"], heads=spec["heads"], seq=spec["seq"],
                                  layers=spec["layers"], vocab=spec["vocab"])
    return export_torch.build_gpt(torch, sizes, attn)


def make_batch(torch, spec, device, dtype=None):
    g = torch.Generator(device="cpu").manual_seed(0)
    if spec["model"] == "gpt":
        shape = (spec["batch"], spec["seq"])
        x = torch.randint(0, spec["vocab"], shape, generator=g)
        y = torch.randint(0, spec["vocab"], shape, generator=g)
    else:
        x = torch.randn(spec["batch"], 3, spec["image"], spec["image"], generator=g)
        y = torch.randint(0, spec["classes"], (spec["batch"],), generator=g)
        if dtype is not None:
            x = x.to(dtype)
    return x.to(device), y.to(device)


def loss_of(torch, spec, logits, y):
    F = torch.nn.functional
    if spec["model"] == "gpt":
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
    return F.cross_entropy(logits.float(), y)


# ---------------------------------------------------------------- timing

def time_steps(torch, device, step, skipped, warmup, steps, max_extra):
    """Runs step() warm-up steps, more while the last one was skipped (fp16 overflow: the
    dynamic loss scale still falling from 2^16, no optimizer update, a cheaper step), at
    most max_extra more, then `steps` timed ones; each bracketed by a device
    synchronisation. skipped: the list step() appends its overflow flag to.
    Returns (all step times, warm-up steps run)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []

    def one():
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)

    while len(times) < warmup or (skipped and skipped[-1] and len(times) < warmup + max_extra):
        one()
    used = len(times)
    for _ in range(steps):
        one()
    return times, used


def peer_pytorch(args, spec, torch, rec):
    device = args.device
    compiled = args.peer == "compile"
    torch.manual_seed(0)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    gpt = spec["model"] == "gpt"
    model = build_gpt(torch, spec, args.attn) if gpt else build_resnet(torch, spec)
    model = model.to(device)
    channels_last = bool(spec.get("channels_last")) and not gpt
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    x, y = make_batch(torch, spec, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    # Mixed precision: fp16 with a GradScaler set like the config's dynamic loss scaling
    # (2^16 initial, x2 after 1000 clean steps; GradScaler has no hysteresis), or bf16.
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(spec["precision"])
    notes = []
    if device == "cpu" and amp_dtype == torch.float16:
        amp_dtype = torch.bfloat16  # CPU autocast of older PyTorch has bf16 only (smoke tests)
        notes.append("cpu: fp16 autocast replaced by bf16")
    use_scaler = amp_dtype == torch.float16 and device == "cuda"
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 16, growth_interval=1000,
                                      enabled=use_scaler)
    else:
        scaler = torch.cuda.amp.GradScaler(init_scale=2.0 ** 16, growth_interval=1000,
                                           enabled=use_scaler)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY,
                                fused=device == "cuda")
        fused = device == "cuda"
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        fused = False
    forward = model
    if compiled:
        if not hasattr(torch, "compile"):
            raise RuntimeError(f"torch.compile needs PyTorch 2 (this is {torch.__version__})")
        forward = torch.compile(model)

    skipped = []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            logits = forward(x)
        loss = loss_of(torch, spec, logits, y)
        before = scaler.get_scale() if use_scaler else 1.0
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skipped.append(use_scaler and scaler.get_scale() < before)

    times, used = time_steps(torch, device, step, skipped, args.warmup, args.steps,
                             args.max_extra_warmup)
    rec.update(throughput_fields(spec, times, used, args.peak_tflops))
    rec.update(status="ok", first_step_s=times[0], skipped_steps_timed=int(sum(skipped[used:])),
               skipped_steps_warmup=int(sum(skipped[:used])))
    rec["details"] = {"amp_dtype": str(amp_dtype).replace("torch.", ""), "grad_scaler": use_scaler,
                      "adamw_fused": fused, "channels_last": channels_last,
                      "cudnn_benchmark": device == "cuda", "data": "one batch resident on device"}
    if gpt:
        rec["details"]["attention"] = model.attention_impl
        rec["details"]["parameters_counted"] = sum(p.numel() for p in model.parameters())
    if compiled:
        rec["details"]["compile"] = "torch.compile(model), default mode; optimizer eager"
    if notes:
        rec["details"]["notes"] = notes


def read_ds_config(path):
    """The reference config as DeepSpeed reads it (hjson: comments allowed)."""
    text = open(path).read()
    try:
        import hjson
        return json.loads(json.dumps(hjson.loads(text)))
    except ImportError:
        # // comments outside strings, then plain JSON.
        out, in_string, i = [], False, 0
        while i < len(text):
            c = text[i]
            if in_string:
                out.append(c)
                if c == "\\":
                    out.append(text[i + 1])
                    i += 1
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
                out.append(c)
            elif text.startswith("//", i):
                while i < len(text) and text[i] != "\n":
                    i += 1
                continue
            else:
                out.append(c)
            i += 1
        return json.loads("".join(out))


def deepspeed_config(path, batch, variant, precision="fp16"):
    """The reference config for world size 1: the micro-batch of this run, and "auto"
    bucket sizes removed so DeepSpeed takes its defaults (the Hugging Face integration
    fills them from the model's hidden size, which a ResNet has not; dscompile also takes
    DeepSpeed's defaults, docs/zero.md)."""
    cfg = read_ds_config(path)
    cfg["train_micro_batch_size_per_gpu"] = batch
    cfg.pop("train_batch_size", None)
    zero = cfg.setdefault("zero_optimization", {})
    for key in [k for k, v in zero.items() if v == "auto"]:
        del zero[key]
    if variant in ("no_offload", "torch_adam"):
        zero.pop("offload_optimizer", None)
    if variant == "torch_adam":
        cfg["optimizer"].setdefault("params", {})["torch_adam"] = True
    if precision == "fp32":  # smoke tests on the CPU only
        cfg.pop("fp16", None)
    cfg.setdefault("steps_per_print", 10 ** 9)
    cfg.setdefault("wall_clock_breakdown", False)
    return cfg


def peer_deepspeed(args, spec, torch, rec):
    if spec["model"] == "gpt":
        raise RuntimeError("the DeepSpeed peer is the reference workload's (ResNet) only")
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(args.master_port)),
                       ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    import deepspeed
    rec["deepspeed"] = deepspeed.__version__
    deepspeed.init_distributed(dist_backend="nccl" if args.device == "cuda" else "gloo")
    cfg = deepspeed_config(args.ds_config, spec["batch"], args.ds_variant, spec["precision"])
    torch.manual_seed(0)
    model = build_resnet(torch, spec)
    if cfg.get("fp16", {}).get("enabled"):
        # ZeRO-3 turns the parameters to fp16 but not the buffers, and BatchNorm then
        # fails ("Expected running_mean to have type Half but got Float"): the whole
        # module in fp16, as DeepSpeed's fp16 training of BatchNorm models does.
        model = model.half()
    setup = time.perf_counter()
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                   config=cfg)
    setup = time.perf_counter() - setup
    fp16 = engine.fp16_enabled()
    x, y = make_batch(torch, spec, engine.device, torch.float16 if fp16 else None)

    def step():
        loss = loss_of(torch, spec, engine(x), y)
        engine.backward(loss)
        engine.step()

    skipped = []

    def counted_step():
        before = getattr(engine, "skipped_steps", 0)
        step()
        skipped.append(getattr(engine, "skipped_steps", 0) > before)

    times, used = time_steps(torch, args.device, counted_step, skipped, args.warmup, args.steps,
                             args.max_extra_warmup)
    rec.update(throughput_fields(spec, times, used, args.peak_tflops))
    rec.update(status="ok", first_step_s=times[0], setup_s=setup,
               skipped_steps_timed=int(sum(skipped[used:])),
               skipped_steps_warmup=int(sum(skipped[:used])))
    zero = cfg.get("zero_optimization", {})
    rec["details"] = {"variant": args.ds_variant, "zero_stage": zero.get("stage"),
                      "offload_optimizer": zero.get("offload_optimizer", {}).get("device", "none"),
                      "optimizer": type(optimizer).__name__ if optimizer is not None else None,
                      "fp16": fp16, "data": "one batch resident on device",
                      "launch": "single process, deepspeed.init_distributed(), world size 1"}
    inner = getattr(optimizer, "optimizer", None)
    if inner is not None:
        rec["details"]["inner_optimizer"] = type(inner).__name__


def cmd_peer(args):
    spec = workload_spec(args)
    peer = args.peer if args.peer != "deepspeed" else f"deepspeed-{args.ds_variant}"
    rec = base_record(args, spec, peer)
    rec["device"] = args.device
    start = time.perf_counter()
    try:
        import torch
        rec["torch"] = torch.__version__
        if args.device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device visible to PyTorch")
            rec["device_name"] = torch.cuda.get_device_name(0)
            torch.cuda.reset_peak_memory_stats()
            # Every peer times cuDNN's algorithms, as dsrun --cudnn-benchmark does.
            torch.backends.cudnn.benchmark = True
        if args.peer == "deepspeed":
            peer_deepspeed(args, spec, torch, rec)
        else:
            peer_pytorch(args, spec, torch, rec)
        if args.device == "cuda":
            rec["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    except BaseException as error:  # a failed peer is a result line, not a crash
        if isinstance(error, KeyboardInterrupt):
            raise
        rec["status"] = "failed"
        rec["error"] = short_error(f"{type(error).__name__}: {error}")
        traceback.print_exc()
    rec["wall_s"] = time.perf_counter() - start
    emit(rec, args.json_out)
    # DeepSpeed leaves a process group behind; its destructor can hang at exit.
    if args.peer == "deepspeed":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if rec["status"] == "ok" else 1)
    return 0 if rec["status"] == "ok" else 1


# ---------------------------------------------------------------- dsrun results

def last_error_line(path):
    try:
        lines = [line.strip() for line in open(path, errors="replace") if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "error" in line.lower() or "terminate" in line.lower() or "what()" in line:
            return line
    return lines[-1] if lines else "empty log"


def predicted_step_s(summary_path):
    try:
        text = open(summary_path, errors="replace").read()
    except (OSError, TypeError):
        return None
    m = re.search(r"predicted\s+step time ([0-9.]+) (us|ms|s)\b", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def cmd_dsrun(args):
    spec = workload_spec(args)
    rec = base_record(args, spec, args.peer)
    rec.update(variant=args.variant, data=args.data, backend=args.backend)
    if args.config_note:
        rec["config"] = args.config_note
    predicted = predicted_step_s(args.summary)
    if predicted is not None:
        rec["predicted_step_s"] = predicted
    rows = []
    if args.metrics and os.path.exists(args.metrics):
        rows = [json.loads(line) for line in open(args.metrics) if line.strip()]
    if args.rc != 0 or len(rows) <= args.warmup:
        rec["status"] = "failed"
        why = "timed out" if args.rc in (124, 137) else f"exit {args.rc}"
        rec["error"] = short_error(f"{why}; {len(rows)} steps logged; {last_error_line(args.log)}")
    else:
        # As the peers do: past --warmup and past the last overflow-skipped step that
        # leaves --steps steps to time (dsrun ran warm-up + steps + extra steps).
        skips = [i for i, r in enumerate(rows[: max(0, len(rows) - args.steps)])
                 if r.get("skipped")]
        used = max(args.warmup, skips[-1] + 1 if skips else 0)
        rows = rows[: used + args.steps]
        times = [spec["batch"] / r["samples_per_s"] for r in rows]
        rec.update(throughput_fields(spec, times, used, args.peak_tflops))
        rec.update(status="ok", first_step_s=times[0],
                   skipped_steps_timed=sum(bool(r.get("skipped")) for r in rows[used:]),
                   skipped_steps_warmup=sum(bool(r.get("skipped")) for r in rows[:used]),
                   last_loss=rows[-1].get("loss"))
    emit(rec, args.json_out)
    return 0


def cmd_note(args):
    spec = workload_spec(args)
    rec = base_record(args, spec, args.peer)
    rec.update(status=args.status, error=short_error(args.error))
    if args.variant:
        rec["variant"] = args.variant
    emit(rec, args.json_out)
    return 0


def cmd_feeds(args):
    """One batch for dsrun --feed: the trainer takes samples modulo the dataset's length,
    so every step reads this batch (copied from host memory each step)."""
    import numpy as np
    spec = workload_spec(args)
    rng = np.random.default_rng(0)
    os.makedirs(args.dir, exist_ok=True)
    b = spec["batch"]
    if spec["model"] == "gpt":
        raise SystemExit("feeds: gpt trains on --data synthetic")
    x = rng.standard_normal((b, 3, spec["image"], spec["image"]), dtype=np.float32)
    np.save(os.path.join(args.dir, "input.npy"), x)
    labels = rng.integers(0, spec["classes"], b, dtype=np.int64)
    np.save(os.path.join(args.dir, "label.npy"), labels)
    return 0


def cmd_config(args):
    """dscompile's DeepSpeed config for a workload and variant (gpu_bench.sh's fallbacks):
      ref       ref: the reference config file verbatim (ZeRO-3, optimizer offload, fp16)
                no_offload: the same without offload_optimizer
                fp32: the same without offload_optimizer and fp16 (a last resort while the
                CUDA backend lacks 16-bit plans; not comparable with the fp16 peers)
      r101_224  main: fp16 (the reference's dynamic loss scaling), AdamW, ZeRO-0
      gpt       main: bf16, AdamW, ZeRO-0
                fp32: either without its 16-bit section"""
    spec = workload_spec(args)
    if args.workload == "ref" and args.variant == "ref":
        with open(args.ds_config) as src, open(args.output, "w") as dst:
            dst.write(src.read())
        return 0
    if args.workload == "ref":
        if args.variant not in ("no_offload", "fp32"):
            raise SystemExit(f"config: ref has variants ref, no_offload, fp32, not {args.variant}")
        cfg = read_ds_config(args.ds_config)
        cfg.get("zero_optimization", {}).pop("offload_optimizer", None)
    else:
        if args.variant not in ("main", "fp32"):
            raise SystemExit(f"config: {args.workload} has variants main, fp32, not {args.variant}")
        ref = read_ds_config(args.ds_config)
        cfg = {"train_micro_batch_size_per_gpu": spec["batch"], "gradient_accumulation_steps": 1,
               "optimizer": {"type": "AdamW", "params": {"lr": LR, "weight_decay": WEIGHT_DECAY}},
               "zero_optimization": {"stage": 0}}
        if spec["precision"] == "fp16":
            cfg["fp16"] = ref["fp16"]
        elif spec["precision"] == "bf16":
            cfg["bf16"] = {"enabled": True}
    if args.variant == "fp32":
        cfg.pop("fp16", None)
        cfg.pop("bf16", None)
    with open(args.output, "w") as f:
        json.dump(cfg, f, indent=1)
    return 0


def cmd_ds_prebuild(args):
    """Builds DeepSpeed's JIT ops ahead (TORCH_EXTENSIONS_DIR caches them for the peer)."""
    status = 0
    try:
        from deepspeed.accelerator import get_accelerator
    except Exception as error:  # noqa: BLE001 - reported, not raised
        print(f"ds-prebuild: cannot import deepspeed: {error}", flush=True)
        return 1
    for name in args.ops:
        start = time.perf_counter()
        try:
            get_accelerator().create_op_builder(name).load(verbose=False)
            print(f"ds-prebuild: {name} built in {time.perf_counter() - start:.1f} s", flush=True)
        except Exception as error:  # noqa: BLE001
            status = 1
            print(f"ds-prebuild: {name} FAILED after {time.perf_counter() - start:.1f} s: "
                  f"{short_error(error)}", flush=True)
    return status


# ---------------------------------------------------------------- table

def fmt(value, spec="{:.1f}"):
    return "-" if value is None else spec.format(value)


def cmd_table(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    print("| workload | peer | status | precision | batch | median step (ms) | throughput | "
          "dsrun ÷ peer | tokens/s | MFU | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for workload in dict.fromkeys(r["workload"] for r in rows):
        group = [r for r in rows if r["workload"] == workload]
        ref = next((r for r in group if r["peer"] == "dsrun" and r["status"] == "ok"), None)
        for r in group:
            ok = r["status"] == "ok"
            ratio = None
            # Only like for like: a dsrun fallback (fp32, no offload) is no ratio
            # against 16-bit peers.
            if (ok and ref is not None and r is not ref
                    and r.get("precision") == ref.get("precision")):
                ratio = ref["throughput"] / r["throughput"]
            notes = []
            if r.get("variant"):
                notes.append(f"variant {r['variant']}")
            if r.get("data"):
                notes.append(f"data {r['data']}")
            if r.get("skipped_steps_timed"):
                notes.append(f"{r['skipped_steps_timed']} skipped (overflow) steps timed")
            if ok and r.get("warmup", 0) > args.warmup:
                notes.append(f"{r['warmup']} warm-up steps (loss scale settling)")
            if ok and r.get("first_step_s") is not None and r["peer"] == "compile":
                notes.append(f"first step (compile) {r['first_step_s']:.0f} s")
            if r.get("predicted_step_s"):
                notes.append(f"cost model {r['predicted_step_s'] * 1e3:.1f} ms")
            details = r.get("details") or {}
            if details.get("attention"):
                notes.append(f"attention {details['attention']}")
            if details.get("optimizer"):
                notes.append(details.get("inner_optimizer") or details["optimizer"])
            if not ok:
                notes.append(r.get("error", ""))
            throughput = step_ms = mfu = "-"
            if ok:
                value = r["throughput"]
                throughput = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
                throughput += " " + r["unit"]
                step_ms = f"{r['median_step_s'] * 1e3:.2f}"
                if r.get("mfu") is not None:
                    mfu = f"{r['mfu'] * 100:.1f}%"
            cells = [workload, r["peer"], r["status"], r.get("precision", "-"),
                     str(r.get("batch", "-")), step_ms, throughput, fmt(ratio, "{:.2f}x"),
                     fmt(r.get("tokens_per_s"), "{:.0f}"), mfu,
                     "; ".join(n for n in notes if n).replace("|", "/")]
            print("| " + " | ".join(cells) + " |")
    return 0


# ---------------------------------------------------------------- CLI

def add_size_flags(p):
    p.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    p.add_argument("--model", help="override: resnet18..resnet152 (smoke tests)")
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], help="override")
    for name in ("image", "classes", "batch", "layers", "d-model", "heads", "vocab", "seq"):
        p.add_argument(f"--{name}", type=int, help="override the workload's size")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                   help="peak for MFU (default: H100 SXM dense bf16, 989 TFLOP/s)")
    p.add_argument("--json-out", help="append the result line to this file")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("peer", help="run one PyTorch / DeepSpeed peer")
    add_size_flags(p)
    p.add_argument("--peer", required=True, choices=["eager", "compile", "deepspeed"])
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--max-extra-warmup", type=int, default=30,
                   help="more untimed steps while the last one overflowed (fp16)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "math"], help="gpt attention")
    p.add_argument("--ds-config", default=DEFAULT_DS_CONFIG)
    p.add_argument("--ds-variant", default="ref", choices=["ref", "no_offload", "torch_adam"])
    p.add_argument("--master-port", type=int, default=29517)

    p = sub.add_parser("dsrun", help="turn a dsrun --metrics file into a result line")
    add_size_flags(p)
    p.add_argument("--peer", default="dsrun")
    p.add_argument("--metrics", required=True)
    p.add_argument("--rc", type=int, required=True, help="dsrun's exit status")
    p.add_argument("--log", default="", help="dsrun's output (the error line on failure)")
    p.add_argument("--summary", help="dscompile --dump summary output (predicted step time)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--variant", default="")
    p.add_argument("--config-note", default="")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--backend", default="cuda")

    p = sub.add_parser("note", help="a failed or skipped peer as a result line")
    add_size_flags(p)
    p.add_argument("--peer", required=True)
    p.add_argument("--status", required=True, choices=["failed", "skipped"])
    p.add_argument("--error", required=True)
    p.add_argument("--variant", default="")

    p = sub.add_parser("feeds", help="one batch as .npy for dsrun --feed")
    add_size_flags(p)
    p.add_argument("dir")

    p = sub.add_parser("config", help="write dscompile's DeepSpeed config of a workload")
    add_size_flags(p)
    p.add_argument("--variant", required=True)
    p.add_argument("--ds-config", default=DEFAULT_DS_CONFIG, help="the reference config")
    p.add_argument("-o", "--output", required=True)

    p = sub.add_parser("ds-prebuild", help="JIT-build DeepSpeed ops ahead")
    p.add_argument("ops", nargs="*", default=["CPUAdamBuilder", "FusedAdamBuilder"])

    p = sub.add_parser("table", help="Markdown table of a results file")
    p.add_argument("results")
    p.add_argument("--warmup", type=int, default=5, help="the warm-up asked for")

    args = parser.parse_args(argv)
    return {"peer": cmd_peer, "dsrun": cmd_dsrun, "note": cmd_note, "feeds": cmd_feeds,
            "config": cmd_config, "ds-prebuild": cmd_ds_prebuild,
            "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
