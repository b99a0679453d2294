//! The demo network runs on the CPU and on wgpu with the same logits, in MAN and fixed
//! modes, for several architectures (the DiNTS paper's code among them).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use hypersegnas::arch::{self, ArchCode};
use hypersegnas::model::{Network, NetworkConfig, WeightMode};

const SIDE: usize = 32;

/// Largest relative difference allowed between two ways of computing the demo network's
/// logits. At 32^3 its deepest level is 2^3 voxels, whose instance norms magnify rounding:
/// our CPU kernels and Burn's ops (Flex or wgpu) differ by up to 1.8e-4 here, while both
/// match MONAI to 2.3e-5 or better on the parity fixtures (`tests/monai_parity.rs`). A wrong
/// index or a missing ReLU moves the logits by far more.
const TOLERANCE: f32 = 5e-4;

fn logits(device: &Device, code: &ArchCode, mode: WeightMode) -> Vec<f32> {
    let config = NetworkConfig::demo(1, 2);
    let network = Network::fresh(&config, device, 42).unwrap();
    let input = common::noise(SIDE * SIDE * SIDE, 7);
    let x = Tensor::<5>::from_data(TensorData::new(input, [1, 1, SIDE, SIDE, SIDE]), device);
    let y = network.forward(x, code, mode).unwrap();
    assert_eq!(y.dims(), [1, 2, SIDE, SIDE, SIDE]);
    y.into_data().try_to_vec::<f32>().unwrap()
}

fn codes() -> Vec<(&'static str, ArchCode)> {
    let space = NetworkConfig::demo(1, 2).space;
    ["dints-paper", "all-conv", "unet", "random-3"]
        .into_iter()
        .map(|name| (name, arch::preset(name, &space).unwrap()))
        .collect()
}

#[test]
fn cpu_and_wgpu_agree_in_man_and_fixed_modes() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    for (name, code) in codes().into_iter().take(3) {
        for mode in [WeightMode::Man, WeightMode::Fixed] {
            let a = logits(&cpu, &code, mode);
            let b = logits(&gpu, &code, mode);
            let err = common::relative_error(&b, &a);
            eprintln!("{name} {mode:?}: relative difference {err:.2e}");
            assert!(err <= TOLERANCE, "{name} {mode:?}: {err}");
            assert!(a.iter().all(|v| v.is_finite()));
        }
    }
}

/// On the plain CPU device the convolutions, norms, resizes and factorized reduces run on
/// our own kernels (`model::kernels`); on the autodiff device the same network runs on Burn's
/// ops. Both must give the same logits.
#[test]
fn cpu_kernels_agree_with_burn_ops() {
    let cpu = Device::flex();
    let burn_ops = Device::flex().autodiff();
    for (name, code) in codes() {
        for mode in [WeightMode::Man, WeightMode::Fixed, WeightMode::Plain] {
            let a = logits(&cpu, &code, mode);
            let b = logits(&burn_ops, &code, mode);
            let err = common::relative_error(&b, &a);
            eprintln!("{name} {mode:?}: relative difference {err:.2e}");
            assert!(err <= TOLERANCE, "{name} {mode:?}: {err}");
        }
    }
}

#[test]
fn modes_give_different_logits_and_man_depends_on_the_patch() {
    let cpu = Device::flex();
    let config = NetworkConfig::demo(1, 2);
    let network = Network::fresh(&config, &cpu, 1).unwrap();
    let code = arch::preset("dints-paper", &config.space).unwrap();
    // 64^3: the encoder's fifth stride-2 convolution leaves a 2^3 map. At 32^3 it would leave
    // a single voxel, which its instance norm maps to zero whatever the patch.
    let side = 64;
    let make = |seed| {
        let v = common::noise(side * side * side, seed);
        Tensor::<5>::from_data(TensorData::new(v, [1, 1, side, side, side]), &cpu)
    };
    let w1: Vec<f32> = network
        .man_weights(make(1), &code)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let w2: Vec<f32> = network
        .man_weights(make(2), &code)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(w1.len(), config.man_output_len());
    assert!(w1.iter().all(|w| *w > 0.0 && *w < 1.0), "sigmoid range");
    assert!(
        common::relative_error(&w1, &w2) > 0.0,
        "MAN weights must depend on the patch"
    );

    let plain = logits(&cpu, &code, WeightMode::Plain);
    let man = logits(&cpu, &code, WeightMode::Man);
    assert!(common::relative_error(&plain, &man) > 1e-3);
}

#[test]
fn batch_of_two_equals_two_single_passes() {
    let cpu = Device::flex();
    let config = NetworkConfig::demo(1, 2);
    let network = Network::fresh(&config, &cpu, 5).unwrap();
    let code = arch::preset("random-9", &config.space).unwrap();
    let len = SIDE * SIDE * SIDE;
    let (a, b) = (common::noise(len, 11), common::noise(len, 12));
    let single = |v: Vec<f32>| -> Vec<f32> {
        let x = Tensor::<5>::from_data(TensorData::new(v, [1, 1, SIDE, SIDE, SIDE]), &cpu);
        network
            .forward(x, &code, WeightMode::Man)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let mut both = a.clone();
    both.extend(&b);
    let x = Tensor::<5>::from_data(TensorData::new(both, [2, 1, SIDE, SIDE, SIDE]), &cpu);
    let batched: Vec<f32> = network
        .forward(x, &code, WeightMode::Man)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let mut expected = single(a);
    expected.extend(single(b));
    assert!(common::relative_error(&batched, &expected) < 1e-5);
}

#[test]
fn invalid_inputs_are_errors_not_panics() {
    let cpu = Device::flex();
    let config = NetworkConfig::demo(1, 2);
    let network = Network::fresh(&config, &cpu, 0).unwrap();
    let code = arch::preset("all-conv", &config.space).unwrap();

    let x = Tensor::<5>::zeros([1, 1, 40, 32, 32], &cpu);
    let err = network
        .forward(x, &code, WeightMode::Man)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[40, 32, 32]") && err.contains("multiples of 16"),
        "{err}"
    );

    // Four levels below a 16^3 input leave one voxel, which MONAI refuses too.
    let x = Tensor::<5>::zeros([1, 1, 16, 16, 16], &cpu);
    let err = network
        .forward(x, &code, WeightMode::Plain)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 1, 1] voxels at level 3"), "{err}");

    let x = Tensor::<5>::zeros([1, 2, 32, 32, 32], &cpu);
    let err = network
        .forward(x, &code, WeightMode::Man)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 channels"), "{err}");

    let mut broken = code.clone();
    for edge in 0..10 {
        broken.set(11, edge, None);
    }
    let x = Tensor::<5>::zeros([1, 1, 32, 32, 32], &cpu);
    let err = network
        .forward(x, &broken, WeightMode::Man)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head has no input"), "{err}");
}

/// Supplement, Algorithm 1: `w_active = w * w_a` scales the weights of an active edge. A skip
/// between nodes of the same level has no weights, so its channel weights must not change
/// the output (scaling it by the MAN's sigmoid output, about 0.5, shrank a chain of k skips
/// by 0.5^k); edges with weights still respond to theirs.
#[test]
fn channel_weights_do_not_scale_same_level_skips() {
    let cpu = Device::flex();
    let config = NetworkConfig::demo(1, 2);
    let network = Network::fresh(&config, &cpu, 5).unwrap();
    let space = &config.space;
    let side = 32;
    let input = common::noise(side * side * side, 3);
    let x = || {
        Tensor::<5>::from_data(
            TensorData::new(input.clone(), [1, 1, side, side, side]),
            &cpu,
        )
    };
    let total = config.man_output_len();
    let offsets = config.channel_weight_offsets();
    let run = |code: &ArchCode, edge_index: usize, value: f32| {
        let mut w = vec![0.5f32; total];
        w[offsets[edge_index]..offsets[edge_index + 1]].fill(value);
        let w = Tensor::<2>::from_data(TensorData::new(w, [1, total]), &cpu);
        network
            .forward_with_weights(x(), code, Some(&w))
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    // Edge 0 joins level 0 to itself. A U-Net-free code: every edge of every layer conv,
    // except layer 5's edge 0, which is a skip.
    let mut code = arch::preset("all-conv", space).unwrap();
    let layer = 5;
    let index = layer * space.num_edges();
    code.set(layer, 0, Some(arch::Op::Skip));
    code.validate(space).unwrap();
    let a = run(&code, index, 0.5);
    let b = run(&code, index, 0.1);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert_eq!(
        diff, 0.0,
        "a same-level skip must ignore its channel weights"
    );

    // The same edge as a convolution does respond to its weights.
    code.set(layer, 0, Some(arch::Op::Conv3x3x3));
    let a = run(&code, index, 0.5);
    let b = run(&code, index, 0.1);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(
        diff > 1e-4,
        "a convolution edge ignored its channel weights ({diff})"
    );
}

#[test]
fn inputs_smaller_than_a_kernel_tile_run_on_level_zero_codes() {
    // Without downsampling and with every cell on level 0, sides of 1 and 2 voxels fit the
    // network (MONAI runs them too); the CPU kernels must not assume a minimum size.
    let cpu = Device::flex();
    let mut config = NetworkConfig::demo(1, 2);
    config.space = arch::SearchSpace::hypersegnas(2, 2);
    config.use_downsample = false;
    config.man_hidden.clear();
    let network = Network::fresh(&config, &cpu, 0).unwrap();
    let mut code = ArchCode::empty(2, 2);
    code.set(0, 0, Some(arch::Op::Conv3x3x3));
    code.set(1, 0, Some(arch::Op::Conv3x3x3));
    for size in [[2, 2, 2], [2, 2, 3], [1, 2, 4]] {
        let n: usize = size.iter().product();
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
        let x = Tensor::<5>::from_data(
            TensorData::new(values, [1, 1, size[0], size[1], size[2]]),
            &cpu,
        );
        let y = network.forward(x, &code, WeightMode::Plain).unwrap();
        assert_eq!(y.dims(), [1, 2, size[0], size[1], size[2]]);
        let y = y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{size:?}: {y:?}");
    }
}
