//! Our CPU convolution kernels against Burn's Flex `conv3d` on the 3x3x3 and pseudo-3D
//! shapes of DiNTS cells, in one process: best of three runs each, and the ratio to Flex.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench conv_kernels
//! ```
//!
//! PyTorch's side of the same shapes is in `tools/bench_vs_pytorch.py` (whole networks).

use std::time::Instant;

use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use hypersegnas::model::kernels::{ConvShape, conv3d_same, conv3d_winograd};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn best_of_three(mut run: impl FnMut()) -> f64 {
    run();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let cases = [
        (64, 48, [3, 3, 3]),
        (128, 24, [3, 3, 3]),
        (32, 96, [3, 3, 3]),
        (256, 12, [3, 3, 3]),
        (512, 6, [3, 3, 3]),
        (64, 48, [3, 3, 1]),
        (64, 48, [1, 1, 3]),
    ];
    println!("threads: {}", rayon::current_num_threads());
    for (c, side, kernel) in cases {
        let shape = ConvShape {
            c_in: c,
            c_out: c,
            size: [side; 3],
            kernel,
        };
        let taps: usize = kernel.iter().product();
        let x = values(c * shape.volume(), 1);
        let w = values(c * c * taps, 2);
        let device = Device::flex();
        let xt: Tensor<5> = Tensor::from_data(
            TensorData::new(x.clone(), [1, c, side, side, side]),
            &device,
        );
        let wt: Tensor<5> = Tensor::from_data(
            TensorData::new(w.clone(), [c, c, kernel[0], kernel[1], kernel[2]]),
            &device,
        );
        let options = ConvOptions::new([1; 3], kernel.map(|k| k / 2), [1; 3], 1);
        let flex = best_of_three(|| {
            conv3d(xt.clone(), wt.clone(), None, options.clone()).into_data();
        });
        let direct = best_of_three(|| {
            conv3d_same(&x, &w, None, shape, true);
        });
        let gflop = 2.0 * (c * c * taps * shape.volume()) as f64 / 1e9;
        print!(
            "{c:>3} ch {side:>2}^3 k{kernel:?}: flex {flex:.3} s  direct {direct:.3} s ({:.2} of flex, {:.0} GFLOP/s)",
            direct / flex,
            gflop / direct
        );
        if kernel == [3, 3, 3] {
            let wino = best_of_three(|| {
                conv3d_winograd(&x, &w, None, shape, true);
            });
            print!("  winograd {wino:.3} s ({:.2} of flex)", wino / flex);
        }
        println!();
    }
}
