#!/usr/bin/env python3
"""PyTorch's side of `benches/conv_kernels.rs`: torch.nn.Conv3d (no bias, "same" padding) on
the same shapes, 2 threads, one warm-up then best of 3.

Usage: .venv-monai/bin/python tools/conv_pytorch.py
"""

import time

import torch

# (input channels, output channels, side, kernel, stride), as in benches/conv_kernels.rs
SHAPES = [
    (64, 64, 48, (3, 3, 3), 1),
    (128, 128, 24, (3, 3, 3), 1),
    (32, 32, 96, (3, 3, 3), 1),
    (256, 256, 12, (3, 3, 3), 1),
    (512, 512, 6, (3, 3, 3), 1),
    (64, 64, 48, (3, 3, 1), 1),
    (64, 64, 48, (1, 3, 3), 1),
    (64, 64, 48, (1, 1, 3), 1),
    (128, 128, 24, (3, 3, 1), 1),
    (512, 512, 6, (3, 1, 3), 1),
    (1, 32, 96, (3, 3, 3), 1),
    (128, 64, 48, (1, 1, 1), 1),
    (32, 64, 96, (3, 3, 3), 2),
    (16, 16, 48, (3, 3, 3), 1),
    (8, 8, 96, (3, 3, 3), 1),
    (16, 16, 48, (1, 3, 3), 1),
    (16, 16, 48, (3, 1, 1), 1),
    (128, 128, 6, (3, 3, 3), 1),
    (32, 16, 48, (1, 1, 1), 1),
    (8, 16, 96, (3, 3, 3), 2),
]


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for c_in, c_out, side, kernel, stride in SHAPES:
        conv = torch.nn.Conv3d(c_in, c_out, kernel, stride=stride,
                               padding=tuple(k // 2 for k in kernel), bias=False)
        x = torch.randn(1, c_in, side, side, side)
        with torch.no_grad():
            conv(x)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - t)
        print(f"{c_in:>3} -> {c_out:>3} ch {side:>2}^3 k{kernel} s{stride}: {best:.4f} s")


if __name__ == "__main__":
    main()
