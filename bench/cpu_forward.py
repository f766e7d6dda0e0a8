"""Timing helper of bench/cpu_forward.sh: one runtime per call, results as JSON.

Why a helper: the three runtimes live in different interpreters (dsrun is a
binary, ONNX Runtime is in the project venv, PyTorch in Debian's /usr/bin/python3),
so each is timed by its own call and `table` joins the JSON files.

What is measured (wall clock, time.perf_counter):
  dsrun  cold    = `dsrun PLAN --feed ...`: process start, plan load (weights
                   copied in), kernel build, one run; median of --runs.
         steady  = median per-run time of `dsrun --repeat N+1 --print-times`
                   after the first run, in one process.
  ort    cold    = InferenceSession(model file) + the first run, in process.
         steady  = median of --runs runs after one more warm-up run.
  torch  cold    = building the model (random init) + the first forward.
         steady  = median of the next --runs forwards (the first one warmed up),
                   model.train() (BatchNorm on batch statistics, as the ONNX graphs
                   say) under torch.no_grad(). Debian's torch 1.13 does matrix
                   products with the reference BLAS (torch.__config__: BLAS_INFO=
                   generic), so its GPT time says little about PyTorch elsewhere.

Usage:
  cpu_forward.py inputs resnet50|gpt DIR            (writes DIR/<input>.npy)
  cpu_forward.py dsrun  NAME DSRUN PLAN DIR --runs N --threads T -o OUT.json
  cpu_forward.py ort    NAME MODEL.onnx DIR --runs N --threads T -o OUT.json
  cpu_forward.py torch  NAME resnet50|gpt --runs N --threads T -o OUT.json
  cpu_forward.py table  OUT.json ...
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

# The benchmarked configurations (bench/cpu_forward.sh passes the same to dsmodel).
RESNET = {"batch": 8, "image": 224, "classes": 1000}
GPT = {"batch": 1, "layers": 12, "d_model": 768, "heads": 12, "vocab": 50257, "seq": 128}


def cmd_inputs(args):
    import numpy as np
    rng = np.random.default_rng(0)
    os.makedirs(args.dir, exist_ok=True)
    if args.family == "resnet50":
        x = rng.standard_normal((RESNET["batch"], 3, RESNET["image"], RESNET["image"]))
        np.save(os.path.join(args.dir, "input.npy"), x.astype(np.float32))
    else:
        ids = rng.integers(0, GPT["vocab"], size=(GPT["batch"], GPT["seq"]))
        np.save(os.path.join(args.dir, "input_ids.npy"), ids.astype(np.int64))


def feeds_in(directory):
    return {os.path.basename(f)[:-4]: f for f in sorted(glob.glob(os.path.join(directory, "*.npy")))}


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cmd_dsrun(args):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    feeds = [f"--feed={k}={v}" for k, v in feeds_in(args.dir).items()]

    def full():
        subprocess.run([args.dsrun, args.plan, *feeds], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def steady_runs():
        """dsrun --repeat N+1: per-run times after plan load and kernel build, in process;
        the first run (cold caches, first-touch of the arena) is dropped."""
        r = subprocess.run([args.dsrun, args.plan, *feeds, "--repeat", str(args.runs + 1),
                            "--print-times"], env=env, capture_output=True, text=True, check=True)
        times = [float(line.split()[-2]) / 1000 for line in r.stderr.splitlines()
                 if line.startswith("dsrun: run ")]
        if len(times) != args.runs + 1:
            raise RuntimeError(f"dsrun --print-times: unexpected output {r.stderr}")
        return times[1:]

    cold = [timed(full) for _ in range(args.runs)]
    steady = steady_runs()
    return {"cold": statistics.median(cold), "steady": statistics.median(steady),
            "cold_runs": cold, "steady_runs": steady}


def cmd_ort(args):
    import numpy as np
    import onnxruntime as ort
    feeds = {k: np.load(v) for k, v in feeds_in(args.dir).items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    start = time.perf_counter()
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    cold = time.perf_counter() - start
    session.run(None, feeds)
    steady = [timed(lambda: session.run(None, feeds)) for _ in range(args.runs)]
    return {"cold": cold, "steady": statistics.median(steady), "steady_runs": steady,
            "version": ort.__version__}


def cmd_torch(args):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.family == "resnet50":
        import torchvision
        model = torchvision.models.resnet50(num_classes=RESNET["classes"])
        x = torch.randn(RESNET["batch"], 3, RESNET["image"], RESNET["image"])
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../models"))
        import export_torch  # the GPT that models/export_torch.py exports
        model = export_torch.build_gpt(torch, argparse.Namespace(**GPT))
        x = torch.randint(0, GPT["vocab"], (GPT["batch"], GPT["seq"]))
    model.train()
    with torch.no_grad():
        model(x)
        cold = time.perf_counter() - start
        steady = [timed(lambda: model(x)) for _ in range(args.runs)]
    return {"cold": cold, "steady": statistics.median(steady), "steady_runs": steady,
            "version": torch.__version__}


def cmd_table(args):
    rows = [json.load(open(f)) for f in args.results]
    models = list(dict.fromkeys(r["model"] for r in rows))
    print(f"{'model':34} {'runtime':16} {'cold (s)':>9} {'steady (s)':>11} "
          f"{'cold/ORT':>9} {'steady/ORT':>11}")
    for m in models:
        group = [r for r in rows if r["model"] == m]
        ort_row = next((r for r in group if r["runtime"].startswith("ORT")), None)
        for r in group:
            ratio_c = f"{r['cold'] / ort_row['cold']:.2f}" if ort_row else "-"
            ratio_s = f"{r['steady'] / ort_row['steady']:.2f}" if ort_row else "-"
            print(f"{m:34} {r['runtime']:16} {r['cold']:9.3f} {r['steady']:11.3f} "
                  f"{ratio_c:>9} {ratio_s:>11}")
    print("cold: dsrun = process + plan load + kernel build + 1 run; ORT = session from file + "
          "1st run; PyTorch = model build + 1st forward.")
    print("steady: median per-run time after a warm-up run, in process (dsrun: "
          "--repeat N+1 --print-times).")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("family", choices=["resnet50", "gpt"])
    p.add_argument("dir")
    for name, positional in (("dsrun", ["dsrun", "plan", "dir"]), ("ort", ["model", "dir"]),
                             ("torch", ["family"])):
        p = sub.add_parser(name)
        p.add_argument("name")
        for arg in positional:
            p.add_argument(arg)
        p.add_argument("--runs", type=int, default=5)
        p.add_argument("--threads", type=int, default=os.cpu_count())
        p.add_argument("-o", "--output", required=True)
    p = sub.add_parser("table")
    p.add_argument("results", nargs="+")
    args = parser.parse_args()

    if args.cmd == "inputs":
        return cmd_inputs(args)
    if args.cmd == "table":
        return cmd_table(args)
    result = {"dsrun": cmd_dsrun, "ort": cmd_ort, "torch": cmd_torch}[args.cmd](args)
    label = {"dsrun": "dsrun", "ort": "ORT", "torch": "PyTorch"}[args.cmd]
    if "version" in result:
        label += " " + result["version"].split("+")[0]
    result.update(model=args.name, runtime=label, threads=args.threads, runs=args.runs)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.name}: {label}: cold {result['cold']:.3f} s, steady {result['steady']:.3f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
