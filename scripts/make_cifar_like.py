"""Writes a small dataset in CIFAR-10's binary format (data_batch_1.bin: records of
one label byte and 3072 pixel bytes, R, G and B planes of 32x32), for the demo and
for trying `dsrun --data cifar10:DIR` without the real dataset.

The images are learnable on purpose: each class has its own colour and a stripe
at its own position, under noise, so a model's loss visibly falls in a few steps.

Usage: make_cifar_like.py DIR [--samples N] [--seed S]
"""

import argparse
import os

import numpy as np


def make(samples, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, samples).astype(np.uint8)
    colours = rng.uniform(40, 215, (10, 3))
    images = rng.normal(0, 30, (samples, 3, 32, 32))
    for i, c in enumerate(labels):
        images[i] += colours[c][:, None, None]
        images[i, :, 3 * c:3 * c + 3, :] += 60  # the class's stripe
    pixels = np.clip(images, 0, 255).astype(np.uint8).reshape(samples, 3072)
    return np.concatenate([labels[:, None], pixels], axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    make(args.samples, args.seed).tofile(os.path.join(args.dir, "data_batch_1.bin"))


if __name__ == "__main__":
    main()
