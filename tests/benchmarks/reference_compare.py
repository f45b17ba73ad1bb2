"""Side-by-side speed of robustvit's corruptions and imagecorruptions 1.1.2 on the same images.

Run through ``tests/benchmarks/reference_env.sh`` (which builds the reference environment), or
directly with ``--ref-python`` naming a Python that can import imagecorruptions::

    python tests/benchmarks/reference_compare.py --ref-python /tmp/icref/bin/python --size 224 --batch 64

The reference runs in its own process (numpy < 2), image by image as it is used; ours runs on a
batch. Both are timed in turns on the same images (scikit-image's sample photos, centre-cropped and
resized) so that load on the machine hits both alike; each number is the best of ``--repeats``.
Prints a table: reference ms/img, ours ms/img, ratio (reference / ours, higher is better), and
the throughput ratio summed over the 15 benchmark corruptions, then the corruptions slower than the
reference (the goal: none); ``--check`` makes that a failure (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_WORKER = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from imagecorruptions import corrupt
images = np.load(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    name, severity, count = line.split()
    count = min(int(count), len(images))
    np.random.seed(0)
    start = time.perf_counter()
    for x in images[:count]:
        corrupt(x, corruption_name=name, severity=int(severity))
    print(json.dumps({"ms": (time.perf_counter() - start) / count * 1000}), flush=True)
"""

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "cat", "retina")


def sample_images(size: int, count: int) -> np.ndarray:
    """``count`` uint8 RGB images (count, size, size, 3) from scikit-image's sample photos."""
    from PIL import Image
    from skimage import data

    out = []
    for i in range(count):
        a = getattr(data, PHOTOS[i % len(PHOTOS)])()
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        h, w = a.shape[:2]
        m = min(h, w)
        a = a[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
        im = Image.fromarray(a).resize((size, size), Image.BICUBIC)
        if i >= len(PHOTOS):  # vary the repeats a little
            im = im.transpose(Image.FLIP_LEFT_RIGHT if (i // len(PHOTOS)) % 2 else Image.FLIP_TOP_BOTTOM)
        out.append(np.asarray(im))
    return np.stack(out)


class Reference:
    """A persistent imagecorruptions process timing ``corrupt`` per image."""

    def __init__(self, python: str, images_path: Path) -> None:
        self.proc = subprocess.Popen([python, "-c", _WORKER, str(images_path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"reference process failed to start with {python}")

    def time(self, name: str, severity: int, count: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{name} {severity} {count}\n")
        self.proc.stdin.flush()
        return float(json.loads(self.proc.stdout.readline())["ms"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def time_ours(images, name: str, severity: int) -> float:
    import torch

    from robustvit.corruptions import corrupt

    g = torch.Generator(device=images.device).manual_seed(0)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    corrupt(images, name, severity, generator=g)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / images.shape[0] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-python", required=True, help="a Python that imports imagecorruptions 1.1.2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64, help="our batch size (and images in the set)")
    ap.add_argument("--ref-images", type=int, default=16, help="images per reference timing")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", default="1", help="torch threads for ours: a number or 'default' "
                    "(1 compares one core with the reference's one core)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--corruptions", nargs="*", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--no-huge-pages", action="store_true", help="leave THP_MEM_ALLOC_ENABLE unset "
                    "(the robustvit command sets it; see robustvit.cli.THP_ENV)")
    ap.add_argument("--check", action="store_true", help="exit with status 1 when a corruption is slower than "
                    "the reference (the goal: none is)")
    args = ap.parse_args(argv)
    if not args.no_huge_pages:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch's first allocation, as the CLI does

    import torch

    from robustvit.corruptions import ALL, BENCHMARK

    if args.threads != "default":
        torch.set_num_threads(int(args.threads))
    names = args.corruptions or list(ALL)
    images = sample_images(args.size, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        np.save(path, images)
        ref = Reference(args.ref_python, path)
        # our native layout: a contiguous (N, 3, H, W) float batch, as the data loader gives it
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous().to(args.device)
        rows = []
        try:
            for name in names:
                n_ref = 2 if name == "glass_blur" else args.ref_images
                time_ours(x[:2], name, args.severity)  # warm caches (kernels, textures, tables)
                r, o = [], []
                for _ in range(args.repeats):
                    r.append(ref.time(name, args.severity, n_ref))
                    o.append(time_ours(x, name, args.severity))
                rows.append({"corruption": name, "reference_ms": min(r), "ours_ms": min(o),
                             "ratio": min(r) / min(o)})
                print(f"{name:18s} ref {min(r):9.2f} ms/img  ours {min(o):8.2f} ms/img  x{min(r) / min(o):7.1f}",
                      file=sys.stderr, flush=True)
        finally:
            ref.close()
    bench = [r for r in rows if r["corruption"] in BENCHMARK]
    print(f"\nsize {args.size}, severity {args.severity}, ours: batch {args.batch} on {args.device}, "
          f"torch threads {torch.get_num_threads()}, THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')}; reference: imagecorruptions 1.1.2, one image at a time\n")
    print("| corruption | reference ms/img | ours ms/img | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['corruption']} | {r['reference_ms']:.2f} | {r['ours_ms']:.2f} | {r['ratio']:.1f}x |")
    if bench:
        ref_sum = sum(r["reference_ms"] for r in bench)
        ours_sum = sum(r["ours_ms"] for r in bench)
        print(f"| **sum of the {len(bench)} benchmark corruptions** | {ref_sum:.1f} | {ours_sum:.1f} | "
              f"**{ref_sum / ours_sum:.1f}x** |")
    slower = [r["corruption"] for r in rows if r["ratio"] < 1]
    print(f"\nslower than the reference: {', '.join(slower) if slower else 'none'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if slower and args.check:
        print(f"goal missed: {len(slower)} corruption(s) slower than the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
