//! Best of three timings of a padded 3x3x3 convolution (no bias) on Flex and on NdArray.

#![allow(deprecated)] // Device::ndarray is deprecated in Burn 0.22; comparing it is the point.

use std::time::Instant;

use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

fn seconds(device: &Device, channels: usize, side: usize) -> f64 {
    let x: Tensor<5> = Tensor::random(
        [1, channels, side, side, side],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let w: Tensor<5> = Tensor::random(
        [channels, channels, 3, 3, 3],
        Distribution::Normal(0.0, 0.05),
        device,
    );
    let options = ConvOptions {
        stride: [1; 3],
        padding: [(1, 1); 3],
        dilation: [1; 3],
        groups: 1,
    };
    let run = || conv3d(x.clone(), w.clone(), None, options.clone()).into_data();
    run(); // warm-up
    (0..3)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    for (channels, side) in [(64, 48), (128, 24), (32, 48)] {
        let gflop = 2.0 * 27.0 * (channels * channels) as f64 * (side * side * side) as f64 / 1e9;
        let flex = seconds(&Device::flex(), channels, side);
        let ndarray = seconds(&Device::ndarray(), channels, side);
        println!(
            "{channels} -> {channels} channels on {side}^3 ({gflop:.1} GFLOP): \
             Flex {flex:.3} s ({:.0} GFLOP/s), NdArray {ndarray:.3} s ({:.0} GFLOP/s)",
            gflop / flex,
            gflop / ndarray
        );
    }
}
