#!/usr/bin/python3
"""Exports the model families of `dsmodel` from PyTorch to ONNX training graphs.

For users who start from PyTorch: the graphs come out the way torch.onnx.export
writes them (training-mode BatchNormalization, Shape/Gather/Unsqueeze/Concat
chains around view()), so dscompile's importer sees the real thing.

Usage: /usr/bin/python3 models/export_torch.py
       resnet18|resnet34|resnet50|resnet101|resnet152|mobilenet_v2|mobilenet_v3_small|
       densenet121|efficientnet_b0|convnext_tiny|regnet_x_400mf|resnext50_32x4d|
       shufflenet_v2_x0_5|squeezenet1_0|mnasnet0_5|googlenet|vit_b_16|mlp|cnn|gpt
       [--classes 10] [--image 32] [--batch 2] [--seed 0] -o FILE.onnx
"""

import argparse
import math
import sys
import warnings

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# torchvision classifiers taken as they are: the ResNets, MobileNetV2 for its ReLU6
# (Clip) and depthwise convolutions, MobileNetV3 for HardSwish and HardSigmoid,
# DenseNet-121 for its concatenations and average pools (exported after a Pad),
# EfficientNet-B0 for SiLU and squeeze-and-excitation, ConvNeXt-T for channels-last
# LayerNorm and GELU, RegNetX, ResNeXt and ShuffleNetV2 for grouped convolutions
# and channel shuffles, SqueezeNet, MNASNet, GoogLeNet for its branches, ViT-B/16
# for attention over patches.
TORCHVISION = RESNETS + ("mobilenet_v2", "mobilenet_v3_small", "densenet121", "efficientnet_b0",
                         "convnext_tiny", "regnet_x_400mf", "resnext50_32x4d",
                         "shufflenet_v2_x0_5", "squeezenet1_0", "mnasnet0_5", "googlenet",
                         "vit_b_16")


def torchvision_options(family, args):
    """Constructor options: stochastic depth off where torch.onnx cannot export it in
    training mode (it samples with Bernoulli); GoogLeNet without its auxiliary heads;
    ViT at the image size asked."""
    options = {"num_classes": args.classes}
    if family.startswith(("efficientnet", "convnext")):
        options["stochastic_depth_prob"] = 0.0
    if family == "googlenet":
        options.update(aux_logits=False, init_weights=True)
    if family == "vit_b_16":
        options["image_size"] = args.image
    return options
FAMILIES = TORCHVISION + ("mlp", "cnn", "gpt")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a PyTorch model as an ONNX training graph (opset 15).")
    parser.add_argument("family", choices=FAMILIES, help="model family to export")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed value")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the example input")
    parser.add_argument("--classes", type=int, default=10, help="classes (resnet, mlp, cnn)")
    parser.add_argument("--image", type=int, default=32, help="image height = width (resnet, cnn)")
    parser.add_argument("--in", dest="in_features", type=int, default=784,
                        help="input features (mlp)")
    parser.add_argument("--hidden", default="256,256",
                        help="comma-separated hidden widths (mlp)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (gpt)")
    parser.add_argument("--d-model", type=int, default=64, help="embedding width (gpt)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (gpt)")
    parser.add_argument("--vocab", type=int, default=100, help="vocabulary size (gpt)")
    parser.add_argument("--seq", type=int, default=16, help="sequence length (gpt)")
    parser.add_argument("--eval", action="store_true",
                        help="export the inference form (model.eval(); BatchNormalization uses "
                             "running statistics, first moved off their defaults by a few "
                             "training-mode forward passes on random data; all-zero weights "
                             "get random values)")
    args = parser.parse_args(argv)
    positive = ["batch", "classes", "image", "in_features", "layers", "d_model", "heads",
                "vocab", "seq"]
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    try:
        args.hidden = [int(w) for w in args.hidden.split(",") if w]
    except ValueError:
        parser.error(f"--hidden must be comma-separated integers, got '{args.hidden}'")
    if any(w <= 0 for w in args.hidden):
        parser.error("--hidden widths must be positive")
    if args.d_model % args.heads:
        parser.error("--d-model must be a multiple of --heads")
    return args


def build_mlp(torch, args):
    """Linear/ReLU stack; parameter names layers.0.weight ... like dsmodel's."""
    nn = torch.nn
    layers = []
    width = args.in_features
    for hidden in args.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, args.classes))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    return Mlp()


def build_cnn(torch, args):
    """A small BatchNorm CNN: conv3x3(3->8)-BN-ReLU-MaxPool2-conv3x3(8->16)-BN-ReLU-
    global average pool-Linear(16->classes). The convolutions have no bias (BN removes
    it, and its gradient would be rounding noise)."""
    nn = torch.nn

    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, args.classes)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc(x.mean(dim=(2, 3)))

    return Cnn()


def build_gpt(torch, args, attn="math"):
    """GPT-2 style decoder with the lm_head tied to wte. The attention is written out
    with a mask ('math': the graph dsmodel emits) or, for timing against what a
    PyTorch user writes today (bench/gpu_peers.py), as scaled_dot_product_attention
    ('sdpa', FlashAttention where it applies): the same function and model FLOPs."""
    nn = torch.nn
    F = torch.nn.functional
    d, heads, seq = args.d_model, args.heads, args.seq
    sdpa = attn == "sdpa" and hasattr(F, "scaled_dot_product_attention")

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(d, 3 * d)
            self.c_proj = nn.Linear(d, d)
            if not sdpa:
                mask = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
                self.register_buffer("mask", mask.view(1, 1, seq, seq), persistent=False)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            q = q.view(B, T, heads, C // heads).transpose(1, 2)
            k = k.view(B, T, heads, C // heads).transpose(1, 2)
            v = v.view(B, T, heads, C // heads).transpose(1, 2)
            if sdpa:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // heads))
                att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
                y = F.softmax(att, dim=-1) @ v
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(d)
            self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(d, 4 * d), c_proj=nn.Linear(4 * d, d)))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(args.vocab, d)
            self.wpe = nn.Embedding(seq, d)
            self.h = nn.ModuleList(Block() for _ in range(args.layers))
            self.ln_f = nn.LayerNorm(d)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, std=0.02 / math.sqrt(2 * args.layers))
                elif name.endswith(".weight") and p.dim() == 2:
                    nn.init.normal_(p, std=0.02)
                elif name.endswith(".bias"):
                    nn.init.zeros_(p)

        def forward(self, input_ids):
            T = input_ids.size(1)
            pos = torch.arange(0, T, dtype=torch.long, device=input_ids.device)
            x = self.wte(input_ids) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.t()

    model = Gpt()
    model.attention_impl = "sdpa" if sdpa else "math"
    return model


def build(torch, args):
    """Returns (module, example input, input name)."""
    if args.family in TORCHVISION:
        import torchvision
        model = getattr(torchvision.models, args.family)(**torchvision_options(args.family, args))
        return model, torch.randn(args.batch, 3, args.image, args.image), "input"
    if args.family == "mlp":
        return build_mlp(torch, args), torch.randn(args.batch, args.in_features), "input"
    if args.family == "cnn":
        return build_cnn(torch, args), torch.randn(args.batch, 3, args.image, args.image), "input"
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), dtype=torch.long)
    return build_gpt(torch, args), ids, "input_ids"


def main(argv):
    args = parse_args(argv)
    import torch
    # Expected for training-mode BN: num_batches_tracked updates are dropped from the graph.
    warnings.filterwarnings("ignore", message=".*Removing mutation from node aten::add_")
    torch.manual_seed(args.seed)
    model, example, input_name = build(torch, args)
    model.train()
    if args.eval:
        with torch.no_grad():
            for _ in range(3):
                model(example * 2 + 0.5)
            # A zero-initialised weight (ViT's head) would make every output its bias,
            # whatever the layers below compute: compared outputs must depend on them.
            for p in model.parameters():
                if p.dim() >= 2 and not p.any():
                    p.normal_(std=0.02)
        model.eval()
    mode = torch.onnx.TrainingMode.EVAL if args.eval else torch.onnx.TrainingMode.TRAINING
    try:
        torch.onnx.export(model, (example,), args.output, training=mode,
                          do_constant_folding=False, opset_version=15,
                          input_names=[input_name], output_names=["logits"],
                          dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}})
    except OSError as error:
        print(f"export_torch.py: cannot write '{args.output}': {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
