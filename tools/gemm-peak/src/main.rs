//! GFLOP/s of `gemm::gemm` on the shapes an im2col 3x3x3 convolution produces
//! (M = output channels, K = 27 x input channels, N = output voxels), on one and two threads.

use std::time::Instant;

fn gflops(m: usize, k: usize, n: usize, threads: usize) -> f64 {
    let lhs = vec![0.5f32; m * k];
    let rhs = vec![0.25f32; k * n];
    let mut dst = vec![0f32; m * n];
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut best = f64::MAX;
    for _ in 0..4 {
        let started = Instant::now();
        // SAFETY: column-major m x k, k x n and m x n buffers of exactly those sizes.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                m as isize,
                1,
                false,
                lhs.as_ptr(),
                m as isize,
                1,
                rhs.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() {
    println!("x86-v4 kernels compiled in: {}", cfg!(feature = "x86-v4"));
    // 64 -> 64 channels on 48^3, 32 -> 32 on 48^3, 256 -> 256 on 12^3, 512 -> 512 on 6^3.
    for (m, k, n) in [
        (64, 1728, 110592),
        (32, 864, 110592),
        (256, 6912, 1728),
        (512, 13824, 216),
    ] {
        println!(
            "M {m:>3} K {k:>5} N {n:>6}: 1 thread {:6.1} GFLOP/s, 2 threads {:6.1} GFLOP/s",
            gflops(m, k, n, 1),
            gflops(m, k, n, 2)
        );
    }
}
