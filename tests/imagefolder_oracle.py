"""The oracle of tests/image_folder_test.cc: PIL and torchvision.

  make DIR          writes a small ImageFolder of JPEGs (two classes, RGB and
                    grayscale, several sizes) and a file that is not an image.
  transform SPEC OUT  applies torchvision's resized_crop (PIL bilinear), hflip,
                    to_tensor and normalize (ImageNet's statistics) to each sample
                    of SPEC (JSON: height, width, samples of path, top, left,
                    box height and width, flip) and writes them to OUT.npy.
"""
import json
import os
import sys

import numpy as np
from PIL import Image


def make(root):
    rng = np.random.default_rng(7)
    sizes = {"cat": [(37, 53), (64, 48), (20, 90)], "dog": [(80, 80), (45, 31)]}
    for label, shapes in sizes.items():
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for k, (h, w) in enumerate(shapes):
            y, x = np.mgrid[0:h, 0:w]
            base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                             ((x + y) * 7) % 256], axis=-1)
            noise = rng.integers(0, 40, size=(h, w, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if label == "dog" and k == 1:
                image = image.convert("L")  # grayscale: expanded to RGB
            image.save(os.path.join(root, label, f"img{k}.jpg"), quality=90)
    with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
        f.write("not an image\n")


def transform(spec_path, out_path):
    import torch
    import torchvision.transforms.functional as F

    spec = json.load(open(spec_path))
    size = [spec["height"], spec["width"]]
    out = []
    for s in spec["samples"]:
        image = Image.open(s["path"]).convert("RGB")
        image = F.resized_crop(image, s["top"], s["left"], s["box_height"], s["box_width"], size,
                               interpolation=F.InterpolationMode.BILINEAR)
        if s["flip"]:
            image = F.hflip(image)
        x = F.normalize(F.to_tensor(image), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        out.append(x.numpy())
    np.save(out_path, np.stack(out).astype(np.float32))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        transform(sys.argv[2], sys.argv[3])
