#!/usr/bin/env python3
"""Times our forward pass against MONAI/PyTorch on the same DiNTS network, weights and input.

In one sitting, for the DiNTS paper's architecture at channel_mul 1 (the pancreas bundle's
network, about 152 M parameters) and a smaller one (channel_mul 0.25):

- MONAI: DiNTS(TopologyInstance(...)) on CPU, float32, torch.set_num_threads(2), one warm-up
  forward pass on a [1, 1, 96, 96, 96] input;
- then --runs rounds, each one timed MONAI forward pass followed by one run of ours,
  `hypersegnas forward --repeat 2 --device cpu` with RAYON_NUM_THREADS=2 on the same state
  dict (.pt) and arch file, its first pass dropped as warm-up. Alternating the two keeps a
  machine whose speed drifts (a shared virtual machine) from favouring either side; the
  ratio reported is the median of the rounds' ratios;

then the sliding-window time of both on a crop of a real CT (--pipeline monai-pancreas with
the smaller network: RAS, 1 mm, ROI 96, overlap 0.625, constant blending; 4 windows), in
alternating rounds too. It also reports how far apart the two networks' logits are.

Usage (from the repository root, after `cargo build`; the dev profile builds dependencies
at opt-level 3):
    cp target/debug/hypersegnas /tmp/hypersegnas-bench
    .venv-monai/bin/python tools/bench_vs_pytorch.py --bin /tmp/hypersegnas-bench
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_monai_fixtures import PAPER_A, PAPER_C, instance, node_a_of, save_arch  # noqa: E402

CT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "totalsegmentator",
    "tests", "reference_files", "example_ct_sm.nii.gz",
)


def ours_forward(binary, ckpt, arch, x_path, out_path):
    """One warm-up and one timed forward pass of ours, in a fresh process."""
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    cmd = [binary, "--log", "warn", "forward", "--device", "cpu", "--checkpoint", ckpt,
           "--arch", arch, "--input", x_path, "--output", out_path, "--force", "--repeat", "2"]
    text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    times = [float(t) for t in re.search(r"forward times \(s\): ([\d. ]+)", text).group(1).split()]
    return times[1]


def monai_forward(net, x):
    with torch.no_grad():
        t = time.perf_counter()
        y = net(x)
        return time.perf_counter() - t, y[0].numpy()


def bench_network(binary, tmp, label, channel_mul, runs):
    node_a = node_a_of(PAPER_A, 4)
    torch.manual_seed(0)
    net = instance(PAPER_A, PAPER_C, node_a, 4, 12, channel_mul, True, 1, 3).eval()
    params = sum(p.numel() for p in net.parameters())
    slug = label.split()[0]
    ckpt = os.path.join(tmp, f"{slug}.pt")
    arch = os.path.join(tmp, f"{slug}_arch.pth")
    torch.save(net.state_dict(), ckpt)
    save_arch(arch, node_a, PAPER_A, PAPER_C)
    x = np.random.default_rng(0).standard_normal((1, 96, 96, 96)).astype(np.float32)
    x_path = os.path.join(tmp, "x.npy")
    np.save(x_path, x)
    out = os.path.join(tmp, f"{slug}_ours.npy")

    xt = torch.from_numpy(x)[None]
    monai_forward(net, xt)  # warm-up
    theirs, ours = [], []
    for _ in range(runs):
        t, y = monai_forward(net, xt)
        theirs.append(t)
        ours.append(ours_forward(binary, ckpt, arch, x_path, out))
    err = np.abs(np.load(out) - y).max() / np.abs(y).max()
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    ratio = statistics.median(o / t for o, t in zip(ours, theirs))
    print(f"{label}: {params / 1e6:.1f} M parameters, input 96^3, {runs} rounds (median)")
    print(f"  ours     {t_ours:.3f} s  (runs: {' '.join(f'{t:.3f}' for t in ours)})")
    print(f"  PyTorch  {t_theirs:.3f} s  (runs: {' '.join(f'{t:.3f}' for t in theirs)})")
    print(f"  ratio ours/PyTorch {ratio:.2f} (median of the rounds); "
          f"logits rel. difference {err:.2e}")
    return net, ckpt, arch


def bench_sliding_window(binary, tmp, runs, net, ckpt, arch):
    if not os.path.exists(CT):
        print(f"sliding window: skipped, {CT} is absent")
        return
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, Orientationd,
                                  ScaleIntensityRanged, Spacingd)

    # A 40 x 40 x 30 voxel crop (3 mm voxels): a 118 x 118 x 88 grid at 1 mm, 4 windows.
    import nibabel as nib
    img = nib.load(CT)
    x0, y0 = 30, 30
    affine = img.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([x0, y0, 0]) + affine[:3, 3]
    crop = np.asanyarray(img.dataobj)[x0:x0 + 40, y0:y0 + 40, :]
    ct = os.path.join(tmp, "crop.nii.gz")
    nib.save(nib.Nifti1Image(crop, affine), ct)

    out = os.path.join(tmp, "labels.nii.gz")
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    cmd = [binary, "segment", ct, "--checkpoint", ckpt, "--arch", arch, "--pipeline",
           "monai-pancreas", "--device", "cpu", "--force", "-o", out]

    pre = Compose([
        LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=[1.0, 1.0, 1.0], mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-87, a_max=199, b_min=0.0, b_max=1.0, clip=True),
    ])
    inferer = SlidingWindowInferer(roi_size=[96] * 3, sw_batch_size=1, overlap=0.625, mode="constant")
    theirs, ours = [], []
    for _ in range(runs):
        t = time.perf_counter()
        d = pre({"image": ct})
        with torch.no_grad():
            inferer(d["image"][None], net)
        theirs.append(time.perf_counter() - t)
        text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stderr
        ours.append(float(re.search(r"inference done in ([\d.]+) s", text).group(1)))
    shape = tuple(d["image"].shape[1:])
    ratio = statistics.median(o / t for o, t in zip(ours, theirs))
    print(f"sliding window on a 40 x 40 x 30 crop of {os.path.basename(CT)} (1 mm grid {shape}), "
          f"ROI 96, overlap 0.625, 4 windows, {runs} rounds (median):")
    print(f"  ours {statistics.median(ours):.2f} s (pre-processing and inference; runs: "
          f"{' '.join(f'{t:.2f}' for t in ours)})")
    print(f"  MONAI {statistics.median(theirs):.2f} s (transforms and SlidingWindowInferer; runs: "
          f"{' '.join(f'{t:.2f}' for t in theirs)})")
    print(f"  ratio ours/MONAI {ratio:.2f} (median of the rounds)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/debug/hypersegnas")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, binary {args.bin}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_paper:
            bench_network(args.bin, tmp, "paper (channel_mul 1)", 1.0, args.runs)
        small = bench_network(args.bin, tmp, "small (channel_mul 0.25)", 0.25, args.runs)
        bench_sliding_window(args.bin, tmp, args.runs, *small)


if __name__ == "__main__":
    main()
