#!/usr/bin/python3
"""make_photo_set.py - the photo set of benchmark P6 (bench/bench_images.c, bench/p6_torch.py).

Turns the real photos among the JPEGs of Debian's opencv-doc examples into a set of about 500
JPEGs of varied sizes around ImageNet's, in an image-folder layout that ferry's
ferry_dataset_image_folder and torchvision's ImageFolder both read:

    ROOT/CLASS/CLASS_NNNN.jpg       CLASS: the source photo's name (one class per photo)

Sources: /usr/share/doc/opencv-doc/examples/data/*.jpg (apt-get install opencv-doc), keeping the
colour photos at least MIN_SIDE pixels on each side; left out are grayscale files (the chessboard
calibration shots and a synthetic ellipse image) and, by name, 3D renders, logos and drawings
(NOT_PHOTOS).

Each file is a crop of one source (sources taken in turn), resized with Pillow's Lanczos filter
and saved as a baseline JPEG, quality 90, 4:2:0 chroma, no EXIF. The crop's aspect ratio, its
size within the source, its place and the output's size come from a fixed-seed generator
(Python's random.Random, whose sequence is stable across Python versions): output area
log-normal around TARGET_AREA, aspect ratio (width / height) log-normal around 1.13, never upscaled
(an output larger than its crop takes the crop's size), half of them mirrored. The mean comes
out near 400 x 350.

The opencv photos are smoother than ImageNet's camera photos: at quality 90 the files average
about a third of ImageNet's ~110 KB for the same pixel count (the script prints the figure).
Decoding time follows the pixel count first, and the entropy-coded bytes second.

Idempotent: the same sources and the same Pillow (libjpeg) give the same bytes; a file whose
bytes are already right is not rewritten, and files of this naming that are not in the set are
removed. The last line is a SHA-256 of every path and its bytes, to compare runs and machines.

usage: /usr/bin/python3 scripts/make_photo_set.py [ROOT] [--count N] [--sources DIR]
    ROOT       where to write (default build/photos, relative to the current directory)
    --count    files in the set (default 500)
    --sources  the source photos (default /usr/share/doc/opencv-doc/examples/data)
"""
import argparse
import hashlib
import io
import math
import os
import random
import re
import sys

from PIL import Image

SOURCES = "/usr/share/doc/opencv-doc/examples/data"
MIN_SIDE = 200
# Not photographs: 3D renders (Blender_Suzanne*, blox), logos, a drawing (HappyFish).
NOT_PHOTOS = {"Blender_Suzanne1", "Blender_Suzanne2", "blox", "LinuxLogo", "WindowsLogo", "HappyFish"}
SEED = 20261208
TARGET_AREA = 196000  # pixels; with the no-upscale clamp the mean comes out ~400 x 350
ASPECT_MEAN = 1.13  # width / height
QUALITY = 90
NAME = re.compile(r"^(?P<cls>.+)_(?P<n>[0-9]{4})\.jpg$")


def pick_sources(src_dir):
    """The colour photos of src_dir, sorted by name: (stem, path)."""
    out, skipped = [], []
    for name in sorted(os.listdir(src_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (".jpg", ".jpeg"):
            continue
        path = os.path.join(src_dir, name)
        with Image.open(path) as im:
            if stem in NOT_PHOTOS:
                skipped.append((name, "not a photo"))
            elif im.mode != "RGB":
                skipped.append((name, "mode " + im.mode))
            elif min(im.size) < MIN_SIDE:
                skipped.append((name, "%dx%d" % im.size))
            else:
                out.append((stem, path))
    return out, skipped


def variant(rng, im):
    """One benchmark image from source im: a random crop, resized, maybe mirrored, as JPEG bytes."""
    sw, sh = im.size
    # Every draw is made whatever the branches below do, so one file's draws never shift the next.
    area = TARGET_AREA * math.exp(rng.gauss(0.0, 0.3))
    aspect = min(1.8, max(0.6, ASPECT_MEAN * math.exp(rng.gauss(0.0, 0.18))))
    frac = rng.uniform(0.55, 1.0)  # the crop's side, as a fraction of the largest crop of that aspect
    ux, uy = rng.random(), rng.random()
    mirror = rng.random() < 0.5

    bw = min(float(sw), sh * aspect)
    bh = bw / aspect
    cw, ch = bw * frac, bh * frac
    x, y = ux * (sw - cw), uy * (sh - ch)
    tw, th = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if tw > cw or th > ch:  # never upscale: take the crop's own size
        tw, th = max(1, int(cw)), max(1, int(ch))
    out = im.resize((tw, th), Image.LANCZOS, box=(x, y, x + cw, y + ch))
    if mirror:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=QUALITY, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue(), tw, th


def main():
    ap = argparse.ArgumentParser(description="P6's photo set (see the top of this file)")
    ap.add_argument("root", nargs="?", default="build/photos")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--sources", default=SOURCES)
    args = ap.parse_args()
    if args.count < 1:
        ap.error("--count must be >= 1")
    if not os.path.isdir(args.sources):
        sys.exit("no source photos in %s: apt-get install opencv-doc" % args.sources)

    sources, skipped = pick_sources(args.sources)
    if not sources:
        sys.exit("no colour photo of at least %d px on a side in %s" % (MIN_SIDE, args.sources))
    gray = [name for name, why in skipped if why.startswith("mode")]
    other = ["%s (%s)" % (name, why) for name, why in skipped if not why.startswith("mode")]
    print("sources: %d photos of %s; left out: %d grayscale, %s" % (len(sources), args.sources, len(gray),
                                                                    ", ".join(other) or "no other"))
    images = {}
    for stem, path in sources:
        with Image.open(path) as im:
            images[stem] = im.convert("RGB")

    rng = random.Random(SEED)
    wanted = {}
    written = same = 0
    sum_w = sum_h = sum_bytes = sum_px = 0
    for i in range(args.count):
        stem = sources[i % len(sources)][0]
        data, w, h = variant(rng, images[stem])
        rel = os.path.join(stem, "%s_%04d.jpg" % (stem, i))
        wanted[rel] = data
        path = os.path.join(args.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path, "rb") as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        if old == data:
            same += 1
        else:
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            written += 1
        sum_w += w
        sum_h += h
        sum_px += w * h
        sum_bytes += len(data)

    # Files of this set's naming that a run with other settings left behind would join the folder.
    removed = 0
    for cls in sorted(os.listdir(args.root)):
        d = os.path.join(args.root, cls)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            m = NAME.match(name)
            if m and m.group("cls") == cls and os.path.join(cls, name) not in wanted:
                os.remove(os.path.join(d, name))
                removed += 1

    digest = hashlib.sha256()
    for rel in sorted(wanted):
        digest.update(rel.encode() + b"\0" + len(wanted[rel]).to_bytes(8, "little") + wanted[rel])
    n = args.count
    print("set: %s: %d files in %d classes (written %d, unchanged %d, stale removed %d)" %
          (args.root, n, min(n, len(sources)), written, same, removed))
    print("mean: %.0f x %.0f pixels (width x height), %.0f bytes (%.1f KB), %.2f bits per pixel" %
          (sum_w / n, sum_h / n, sum_bytes / n, sum_bytes / n / 1000, 8.0 * sum_bytes / sum_px))
    print("sha256: %s" % digest.hexdigest())


if __name__ == "__main__":
    main()
