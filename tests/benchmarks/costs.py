"""Per-image costs behind the README's wall-time estimate ("Scaling out"): forward and forward + backward of
ViT-B/16 and ResNet-50 (random weights) and generating each ImageNet-C corruption at 224 px.

    python tests/benchmarks/costs.py [--device cuda] [--threads 1] [--batch 8]

Prints JSON (seconds per image). On a GPU pass ``--device cuda`` and a larger ``--batch``.
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch

from robustvit.corruptions import BENCHMARK, corrupt
from robustvit.rng import ImageStreams


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.rand(args.batch, 3, 224, 224, device=device)
    out: dict = {"device": str(device), "threads": args.threads, "batch": args.batch}
    for arch in ("vit_base_patch16_224", "resnet50"):
        model = timm.create_model(arch, pretrained=False).to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            model(x[:2])  # warm-up
            forward = _timed(lambda m=model: m(x), device) / len(x)
        xx = x.clone().requires_grad_(True)
        both = _timed(lambda m=model, v=xx: m(v).logsumexp(1).sum().backward(), device) / len(x)
        out[arch] = {"forward_s": forward, "forward_backward_s": both}
    per = {}
    for name in BENCHMARK:
        corrupt(x[:1], name, 3, generator=ImageStreams.for_images(0, [0], device))  # warm-up (tables, textures)
        per[name] = _timed(lambda n=name: corrupt(x, n, 3, generator=ImageStreams.for_images(0, range(len(x)), device)),
                           device) / len(x)
    out["corruption_s_per_image"] = per
    out["corruption_mean_s"] = sum(per.values()) / len(per)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
