#!/usr/bin/env python3
"""PyTorch's side of `benches/conv_kernels.rs`: torch.nn.Conv3d (no bias, "same" padding) on
the same shapes, 2 threads, one warm-up then best of 3.

Usage: .venv-monai/bin/python tools/conv_pytorch.py
"""

import time

import torch

SHAPES = [
    (64, 48, (3, 3, 3)),
    (128, 24, (3, 3, 3)),
    (32, 96, (3, 3, 3)),
    (256, 12, (3, 3, 3)),
    (512, 6, (3, 3, 3)),
    (64, 48, (3, 3, 1)),
    (64, 48, (1, 1, 3)),
]


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for channels, side, kernel in SHAPES:
        conv = torch.nn.Conv3d(channels, channels, kernel,
                               padding=tuple(k // 2 for k in kernel), bias=False)
        x = torch.randn(1, channels, side, side, side)
        with torch.no_grad():
            conv(x)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - t)
        print(f"{channels:>3} ch {side:>2}^3 k{kernel}: {best:.3f} s")


if __name__ == "__main__":
    main()
