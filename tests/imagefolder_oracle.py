"""The oracle of tests/image_folder_test.cc: PIL and torchvision.

  make DIR          writes a small ImageFolder: two classes of JPEGs (RGB up to
                    400x600, grayscale,
                    CMYK) and PNGs (RGBA, palette, one named .jpeg), one class with a
                    subdirectory, and files torchvision skips (.gif, .txt).
  list DIR          prints torchvision's ImageFolder(DIR).samples as JSON.
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

    def pattern(h, w):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                         ((x + y) * 7) % 256], axis=-1)
        return np.clip(base + rng.integers(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)

    for d in ("cat", "dog/sub"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    # One big enough to shrink 20-fold: about 40 taps per output pixel.
    for k, (h, w) in enumerate([(37, 53), (64, 48), (20, 90), (400, 600)]):
        Image.fromarray(pattern(h, w)).save(os.path.join(root, "cat", f"img{k}.jpg"), quality=90)
    # CMYK, which PIL writes inverted with Adobe's marker.
    Image.fromarray(pattern(40, 30)).convert("CMYK").save(os.path.join(root, "cat", "cmyk.jpg"))
    Image.fromarray(pattern(80, 80)).save(os.path.join(root, "dog", "img0.jpg"), quality=90)
    Image.fromarray(pattern(45, 31)).convert("L").save(os.path.join(root, "dog", "img1.jpg"))
    # A PNG named .jpeg (ImageNet has one), an RGBA and a palette PNG one level down.
    Image.fromarray(pattern(33, 44)).save(os.path.join(root, "dog", "disguised.jpeg"), "PNG")
    rgba = np.concatenate([pattern(28, 36), rng.integers(0, 256, (28, 36, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(os.path.join(root, "dog", "sub", "rgba.png"))
    Image.fromarray(pattern(50, 26)).convert("P").save(os.path.join(root, "dog", "sub", "palette.png"))
    # Neither is in torchvision's IMG_EXTENSIONS: skipped.
    Image.fromarray(pattern(10, 10)).save(os.path.join(root, "dog", "anim.gif"))
    with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
        f.write("not an image\n")


def listing(root):
    from torchvision.datasets import ImageFolder
    print(json.dumps(ImageFolder(root).samples))


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
    elif sys.argv[1] == "list":
        listing(sys.argv[2])
    else:
        transform(sys.argv[2], sys.argv[3])
