//! Our CPU convolution kernels against Burn's Flex `conv3d` on the convolutions of DiNTS
//! networks, in one process: best of three runs each, and in brackets the ratio to Flex.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench conv_kernels [-- FILTER]
//! ```
//!
//! FILTER keeps the cases whose label contains it (`"s2"`, `"512 ->"`). PyTorch's side of
//! the same shapes is `tools/conv_pytorch.py`.

use std::time::Instant;

use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use hypersegnas::model::kernels::{
    ConvShape, conv3d_gather, conv3d_same, conv3d_winograd, output_side, winograd_supports,
};

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
    // As the command-line tool does.
    hypersegnas::alloc::keep_freed_memory();
    // (input channels, output channels, side, kernel, stride): the convolutions of the
    // DiNTS paper's network at channel_mul 1 (32 to 512 channels) and 0.25 (8 to 128).
    let cases = [
        (64, 64, 48, [3, 3, 3], 1),
        (128, 128, 24, [3, 3, 3], 1),
        (32, 32, 96, [3, 3, 3], 1),
        (256, 256, 12, [3, 3, 3], 1),
        (512, 512, 6, [3, 3, 3], 1),
        (64, 64, 48, [3, 3, 1], 1),
        (64, 64, 48, [1, 3, 3], 1),
        (64, 64, 48, [1, 1, 3], 1),
        (128, 128, 24, [3, 3, 1], 1),
        (512, 512, 6, [3, 1, 3], 1),
        (1, 32, 96, [3, 3, 3], 1),
        (128, 64, 48, [1, 1, 1], 1),
        (32, 64, 96, [3, 3, 3], 2),
        (16, 16, 48, [3, 3, 3], 1),
        (8, 8, 96, [3, 3, 3], 1),
        (16, 16, 48, [1, 3, 3], 1),
        (16, 16, 48, [3, 1, 1], 1),
        (128, 128, 6, [3, 3, 3], 1),
        (32, 16, 48, [1, 1, 1], 1),
        (8, 16, 96, [3, 3, 3], 2),
    ];
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    println!("threads: {}", rayon::current_num_threads());
    for (c_in, c_out, side, kernel, stride) in cases {
        let label = format!("{c_in:>3} -> {c_out:>3} ch {side:>2}^3 k{kernel:?} s{stride}");
        if only.as_ref().is_some_and(|o| !label.contains(o.as_str())) {
            continue;
        }
        let shape = ConvShape {
            c_in,
            c_out,
            size: [side; 3],
            kernel,
        };
        let taps: usize = kernel.iter().product();
        let x = values(c_in * shape.volume(), 1);
        let w = values(c_out * c_in * taps, 2);
        let device = Device::flex();
        let xt: Tensor<5> = Tensor::from_data(
            TensorData::new(x.clone(), [1, c_in, side, side, side]),
            &device,
        );
        let wt: Tensor<5> = Tensor::from_data(
            TensorData::new(w.clone(), [c_out, c_in, kernel[0], kernel[1], kernel[2]]),
            &device,
        );
        let options = ConvOptions::new([stride; 3], kernel.map(|k| k / 2), [1; 3], 1);
        let flex = best_of_three(|| {
            conv3d(xt.clone(), wt.clone(), None, options.clone()).into_data();
        });
        let out_volume = output_side(side, stride).pow(3);
        let gflop = 2.0 * (c_out * c_in * taps * out_volume) as f64 / 1e9;
        print!("{label}: flex {flex:.4} s ({:.0} GFLOP/s)", gflop / flex);
        let report = |name: &str, time: f64| {
            print!("  {name} {time:.4} s ({:.2})", time / flex);
        };
        let gather = best_of_three(|| {
            conv3d_gather(&x, &w, None, shape, stride, true);
        });
        report("gather", gather);
        if stride == 1 {
            let direct = best_of_three(|| {
                conv3d_same(&x, &w, None, shape, true);
            });
            report("direct", direct);
            if winograd_supports(kernel) && c_in >= 8 {
                let wino = best_of_three(|| {
                    conv3d_winograd(&x, &w, None, shape, true);
                });
                report("winograd", wino);
            }
        }
        println!();
    }
}
