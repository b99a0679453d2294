//! The building blocks of DiNTS's cells and stems: bias-free convolutions, instance norm,
//! ReLU, trilinear resizing with `align_corners = true`, factorized reduce and increase, and
//! the five cell ops.
//!
//! Tensors are `[batch, channels, x, y, z]`, the order in which MONAI hands a NIfTI volume
//! to the network, so the pseudo-3D kernels act on the same axes as in MONAI.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::module::{Module, Param};
use burn::tensor::module::{conv3d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Device, Tensor, TensorData, activation::relu};

use super::kernels::{self, ConvShape, NORM_EPS};
use super::weights::{Init, Layout, ParamBuilder};
use crate::arch::Op;

/// Whether `x` lives on the plain CPU device (Flex without autodiff) in f32, where the
/// hand-written inference kernels of [`kernels`] replace Burn's ops.
fn on_plain_cpu<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    // Device equality ignores autodiff: check it separately, or training would lose the
    // gradients of every layer that these kernels compute.
    x.dtype() == DType::F32 && !device.is_autodiff() && device == Device::flex()
}

/// The storage of a plain-CPU f32 tensor, held so that its values are read in place: no
/// copy, even where other tensors share them (a node that several edges read, a
/// parameter).
struct CpuValues(FlexTensor);

impl CpuValues {
    /// `None` unless `x` is a contiguous f32 tensor on the plain CPU device.
    fn of<const D: usize>(x: &Tensor<D>) -> Option<Self> {
        if !on_plain_cpu(x) {
            return None;
        }
        let primitive = x.clone().try_into_primitive::<Flex>().ok()?;
        primitive.as_slice::<f32>()?;
        Some(Self(primitive))
    }

    /// `None` if the parameter is absent, `Some(None)` if it cannot be read in place.
    fn of_param(p: &Option<Param<Tensor<1>>>) -> Option<Option<Self>> {
        p.as_ref().map(|p| Self::of(&p.val()))
    }

    fn values(&self) -> &[f32] {
        // `of` checked that the slice exists.
        self.0.as_slice::<f32>().unwrap_or_default()
    }
}

/// A 3D convolution with optional bias.
#[derive(Module, Debug)]
pub struct Conv {
    weight: Param<Tensor<5>>,
    bias: Option<Param<Tensor<1>>>,
    stride: [usize; 3],
    padding: [usize; 3],
}

impl Conv {
    /// A convolution under key prefix `key` (`{key}.weight`, `{key}.bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &mut ParamBuilder,
        key: &str,
        c_in: usize,
        c_out: usize,
        kernel: [usize; 3],
        stride: usize,
        padding: [usize; 3],
        bias: bool,
    ) -> Self {
        let fan_in = c_in * kernel.iter().product::<usize>();
        let weight = b.param(
            &format!("{key}.weight"),
            [c_out, c_in, kernel[0], kernel[1], kernel[2]],
            Init::FanIn(fan_in),
            Layout::Plain,
        );
        let bias = bias.then(|| {
            b.param(
                &format!("{key}.bias"),
                [c_out],
                Init::FanIn(fan_in),
                Layout::Plain,
            )
        });
        Self {
            weight,
            bias,
            stride: [stride; 3],
            padding,
        }
    }

    /// A cubic `k`-kernel convolution with "same" padding for odd `k` and stride 1.
    pub fn cubic(b: &mut ParamBuilder, key: &str, c_in: usize, c_out: usize, k: usize) -> Self {
        Self::new(b, key, c_in, c_out, [k; 3], 1, [k / 2; 3], false)
    }

    /// # Shapes
    /// - input: `[batch, c_in, x, y, z]`
    /// - output: `[batch, c_out, x', y', z']`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_inner(x, false)
    }

    /// `conv(relu(x))`, with the ReLU fused into the convolution's input copy on the CPU.
    pub fn forward_relu(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_inner(x, true)
    }

    fn forward_inner(&self, x: Tensor<5>, relu_input: bool) -> Tensor<5> {
        let x = if on_plain_cpu(&x) {
            match self.forward_cpu(x, relu_input) {
                Ok(y) => return y,
                Err(x) => *x,
            }
        } else {
            x
        };
        let x = if relu_input { relu(x) } else { x };
        let options = ConvOptions::new(self.stride, self.padding, [1, 1, 1], 1);
        conv3d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }

    /// The CPU kernels for convolutions with "same" padding; hands `x` back for any other
    /// kind.
    fn forward_cpu(&self, x: Tensor<5>, relu_input: bool) -> Result<Tensor<5>, Box<Tensor<5>>> {
        let [c_out, c_in, k0, k1, k2] = self.weight.dims();
        let kernel = [k0, k1, k2];
        let same = kernel.iter().all(|k| k % 2 == 1) && self.padding == kernel.map(|k| k / 2);
        let [_, channels, sx, sy, sz] = x.dims();
        let [stride, ..] = self.stride;
        if self.stride != [stride; 3] || stride == 0 || !same || channels != c_in {
            return Err(Box::new(x));
        }
        let shape = ConvShape {
            c_in,
            c_out,
            size: [sx, sy, sz],
            kernel,
        };
        let kernel = kernels::choose(shape, stride);
        let bias = match CpuValues::of_param(&self.bias) {
            None => None,
            Some(Some(b)) => Some(b),
            Some(None) => return Err(Box::new(x)),
        };
        let (Some(input), Some(weight)) = (CpuValues::of(&x), CpuValues::of(&self.weight.val()))
        else {
            return Err(Box::new(x));
        };
        let (input, weight) = (input.values(), weight.values());
        let bias = bias.as_ref().map(CpuValues::values);
        let out_size = shape.size.map(|s| kernels::output_side(s, stride));
        let mut out = Vec::new();
        for item in input.chunks(c_in * shape.volume()) {
            let y = kernel.run(item, weight, bias, shape, stride, relu_input);
            // The first item's buffer becomes the output as it is (no copy at batch 1).
            if out.is_empty() {
                out = y;
            } else {
                out.extend(y);
            }
        }
        let [ox, oy, oz] = out_size;
        let batch = x.dims()[0];
        let data = TensorData::new(out, [batch, c_out, ox, oy, oz]);
        Ok(Tensor::from_data(data, &x.device()))
    }
}

/// Instance norm over the spatial dimensions: biased variance, eps 1e-5, no running
/// statistics (instance statistics at inference too), optional affine scale and shift.
#[derive(Module, Debug)]
pub struct Norm {
    weight: Option<Param<Tensor<1>>>,
    bias: Option<Param<Tensor<1>>>,
}

impl Norm {
    /// An affine instance norm under `key` (`{key}.weight`, `{key}.bias`).
    pub fn affine(b: &mut ParamBuilder, key: &str, channels: usize) -> Self {
        Self {
            weight: Some(b.param(
                &format!("{key}.weight"),
                [channels],
                Init::Ones,
                Layout::Plain,
            )),
            bias: Some(b.param(
                &format!("{key}.bias"),
                [channels],
                Init::Zeros,
                Layout::Plain,
            )),
        }
    }

    /// An instance norm without parameters (PyTorch's `InstanceNorm3d` default).
    pub fn plain() -> Self {
        Self {
            weight: None,
            bias: None,
        }
    }

    /// # Shapes
    /// - input and output: `[batch, channels, x, y, z]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = if on_plain_cpu(&x) {
            match self.forward_cpu(x) {
                Ok(y) => return y,
                Err(x) => *x,
            }
        } else {
            x
        };
        let [batch, channels, sx, sy, sz] = x.dims();
        let flat = x.reshape([batch, channels, sx * sy * sz]);
        let (var, mean) = flat.clone().var_mean_bias(2);
        let normed = (flat - mean) / (var + NORM_EPS).sqrt();
        let mut y = normed.reshape([batch, channels, sx, sy, sz]);
        if let Some(w) = &self.weight {
            y = y * w.val().reshape([1, channels, 1, 1, 1]);
        }
        if let Some(b) = &self.bias {
            y = y + b.val().reshape([1, channels, 1, 1, 1]);
        }
        y
    }

    /// The in-place CPU kernel (in place when `x` is not shared, on a copy otherwise);
    /// hands `x` back if a parameter is not f32.
    fn forward_cpu(&self, x: Tensor<5>) -> Result<Tensor<5>, Box<Tensor<5>>> {
        let [gamma, beta] = [&self.weight, &self.bias].map(CpuValues::of_param);
        if matches!(gamma, Some(None)) || matches!(beta, Some(None)) {
            return Err(Box::new(x));
        }
        let gamma = gamma.flatten();
        let beta = beta.flatten();
        let (gamma, beta) = (
            gamma.as_ref().map(CpuValues::values),
            beta.as_ref().map(CpuValues::values),
        );
        let dims = x.dims();
        let [_, channels, _, _, _] = dims;
        let device = x.device();
        let mut data = x.into_data();
        let Ok(values) = data.as_mut_slice::<f32>() else {
            return Err(Box::new(Tensor::from_data(data, &device)));
        };
        let volume: usize = dims[2..].iter().product();
        if channels * volume > 0 {
            for item in values.chunks_mut(channels * volume) {
                kernels::instance_norm(item, channels, gamma, beta);
            }
        }
        Ok(Tensor::from_data(data, &device))
    }
}

/// Trilinear resize with `align_corners = true` (source position `i * (in - 1) / (out - 1)`),
/// done as two bilinear passes: first over (y, z) with x folded into channels, then over x
/// with (y, z) folded into one axis that keeps its size (an exact copy along that axis).
///
/// # Shapes
/// - input: `[batch, channels, x, y, z]`
/// - output: `[batch, channels, size[0], size[1], size[2]]`
pub fn resize_trilinear(x: Tensor<5>, size: [usize; 3]) -> Tensor<5> {
    let [_, _, sx, sy, sz] = x.dims();
    if [sx, sy, sz] == size {
        return x;
    }
    match resize_trilinear_cpu(x, size, false) {
        Ok(y) => y,
        Err(x) => resize_trilinear_burn(*x, size),
    }
}

/// [`resize_trilinear`] by the CPU kernel, with ReLU applied to the result when asked;
/// hands `x` back on other devices.
fn resize_trilinear_cpu(
    x: Tensor<5>,
    size: [usize; 3],
    relu_output: bool,
) -> Result<Tensor<5>, Box<Tensor<5>>> {
    let [batch, channels, sx, sy, sz] = x.dims();
    if !on_plain_cpu(&x) || sx * sy * sz == 0 {
        return Err(Box::new(x));
    }
    let Some(input) = CpuValues::of(&x) else {
        return Err(Box::new(x));
    };
    let from = [sx, sy, sz];
    let out = kernels::resize_trilinear(input.values(), batch * channels, from, size, relu_output);
    let shape = [batch, channels, size[0], size[1], size[2]];
    Ok(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// [`resize_trilinear`] with Burn's ops (any device).
fn resize_trilinear_burn(x: Tensor<5>, size: [usize; 3]) -> Tensor<5> {
    let [batch, channels, sx, sy, sz] = x.dims();
    let options = |out: [usize; 2]| {
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_output_size(out)
            .with_align_corners(true)
    };
    let mut y = x;
    if [sy, sz] != [size[1], size[2]] {
        let folded = y.reshape([batch, channels * sx, sy, sz]);
        let resized = interpolate(folded, options([size[1], size[2]]));
        y = resized.reshape([batch, channels, sx, size[1], size[2]]);
    }
    if sx != size[0] {
        let plane = size[1] * size[2];
        let folded = y.reshape([batch, channels, sx, plane]);
        let resized = interpolate(folded, options([size[0], plane]));
        y = resized.reshape([batch, channels, size[0], size[1], size[2]]);
    }
    y
}

/// x2 trilinear upsampling with `align_corners = true`.
pub fn upsample2(x: Tensor<5>) -> Tensor<5> {
    let [_, _, sx, sy, sz] = x.dims();
    resize_trilinear(x, [2 * sx, 2 * sy, 2 * sz])
}

/// Factorized reduce (a down edge's preprocess): ReLU once; a 1x1 stride-2 convolution of
/// the even voxels to `c / 2` channels and one of the odd voxels (input shifted by one in
/// every spatial dim) to the rest; concatenated; instance norm.
#[derive(Module, Debug)]
pub struct FactorizedReduce {
    conv_1: Conv,
    conv_2: Conv,
    norm: Norm,
}

impl FactorizedReduce {
    /// Keys `{key}.conv_1`, `{key}.conv_2`, `{key}.norm`.
    pub fn new(b: &mut ParamBuilder, key: &str, c_in: usize, c_out: usize) -> Self {
        let half = c_out / 2;
        Self {
            conv_1: Conv::new(
                b,
                &format!("{key}.conv_1"),
                c_in,
                half,
                [1; 3],
                2,
                [0; 3],
                false,
            ),
            conv_2: Conv::new(
                b,
                &format!("{key}.conv_2"),
                c_in,
                c_out - half,
                [1; 3],
                2,
                [0; 3],
                false,
            ),
            norm: Norm::affine(b, &format!("{key}.norm"), c_out),
        }
    }

    /// # Shapes
    /// - input: `[batch, c_in, x, y, z]` with even x, y, z
    /// - output: `[batch, c_out, x / 2, y / 2, z / 2]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = if on_plain_cpu(&x) {
            match self.forward_cpu(x) {
                Ok(y) => return self.norm.forward(y),
                Err(x) => *x,
            }
        } else {
            x
        };
        let x = relu(x);
        let [batch, channels, sx, sy, sz] = x.dims();
        let shifted = x
            .clone()
            .slice([0..batch, 0..channels, 1..sx, 1..sy, 1..sz]);
        let even = self.conv_1.forward(x);
        let odd = self.conv_2.forward(shifted);
        self.norm.forward(Tensor::cat(vec![even, odd], 1))
    }
}

impl FactorizedReduce {
    /// The two strided 1x1 convolutions on the CPU, concatenated (before the norm): each
    /// gathers its voxels (even, or odd) with the ReLU applied, then one matrix product per
    /// tile. Hands `x` back for odd sides or non-f32 weights.
    fn forward_cpu(&self, x: Tensor<5>) -> Result<Tensor<5>, Box<Tensor<5>>> {
        let [batch, c_in, sx, sy, sz] = x.dims();
        let size = [sx, sy, sz];
        let half = size.map(|s| s / 2);
        let [c1, c1_in, ..] = self.conv_1.weight.dims();
        let [c2, c2_in, ..] = self.conv_2.weight.dims();
        if size.iter().any(|s| s % 2 == 1 || *s == 0) || c1_in != c_in || c2_in != c_in {
            return Err(Box::new(x));
        }
        let (Some(input), Some(w1), Some(w2)) = (
            CpuValues::of(&x),
            CpuValues::of(&self.conv_1.weight.val()),
            CpuValues::of(&self.conv_2.weight.val()),
        ) else {
            return Err(Box::new(x));
        };
        let volume = sx * sy * sz;
        let half_volume: usize = half.iter().product();
        let mut out = Vec::with_capacity(batch * (c1 + c2) * half_volume);
        let pointwise = |c_out, size| ConvShape {
            c_in,
            c_out,
            size,
            kernel: [1; 3],
        };
        for item in input.values().chunks(c_in * volume) {
            // Even voxels: a stride-2 1x1x1 convolution of the input as it is.
            let even = pointwise(c1, size);
            out.extend(kernels::conv3d_gather(
                item,
                w1.values(),
                None,
                even,
                2,
                true,
            ));
            // Odd voxels: gathered first, then a stride-1 one.
            let odd = kernels::gather_strided(item, c_in, size, 1);
            let shape = pointwise(c2, half);
            out.extend(kernels::conv3d_gather(
                &odd,
                w2.values(),
                None,
                shape,
                1,
                true,
            ));
        }
        let shape = [batch, c1 + c2, half[0], half[1], half[2]];
        Ok(Tensor::from_data(TensorData::new(out, shape), &x.device()))
    }
}

/// Factorized increase (an up edge's preprocess): x2 trilinear upsampling first, then ReLU,
/// 1x1 convolution, instance norm.
#[derive(Module, Debug)]
pub struct FactorizedIncrease {
    conv: Conv,
    norm: Norm,
}

impl FactorizedIncrease {
    /// Keys `{key}.conv`, `{key}.norm`.
    pub fn new(b: &mut ParamBuilder, key: &str, c_in: usize, c_out: usize) -> Self {
        Self {
            conv: Conv::new(
                b,
                &format!("{key}.conv"),
                c_in,
                c_out,
                [1; 3],
                1,
                [0; 3],
                false,
            ),
            norm: Norm::affine(b, &format!("{key}.norm"), c_out),
        }
    }

    /// # Shapes
    /// - input: `[batch, c_in, x, y, z]`
    /// - output: `[batch, c_out, 2x, 2y, 2z]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let [_, _, sx, sy, sz] = x.dims();
        let y = match resize_trilinear_cpu(x, [2 * sx, 2 * sy, 2 * sz], true) {
            // The ReLU went into the resize: the convolution reads its input in place.
            Ok(up) => self.conv.forward(up),
            Err(x) => self.conv.forward_relu(upsample2(*x)),
        };
        self.norm.forward(y)
    }
}

/// The weighted part of a cell op: ReLU, one or two convolutions, instance norm. Skip
/// connections have no block.
#[derive(Module, Debug)]
pub struct OpBlock {
    conv: Conv,
    conv_1: Option<Conv>,
    norm: Norm,
}

/// Kernel and padding of the two convolutions of a pseudo-3D op.
fn p3d_kernels(op: Op) -> Option<([usize; 3], [usize; 3])> {
    match op {
        Op::Conv3x3x1 => Some(([3, 3, 1], [1, 1, 3])),
        Op::Conv3x1x3 => Some(([3, 1, 3], [1, 3, 1])),
        Op::Conv1x3x3 => Some(([1, 3, 3], [3, 1, 1])),
        _ => None,
    }
}

fn same_padding(kernel: [usize; 3]) -> [usize; 3] {
    kernel.map(|k| k / 2)
}

/// Parameters of one op block acting on `c` channels.
pub fn op_params(op: Op, c: usize) -> usize {
    match op {
        Op::Skip => 0,
        Op::Conv3x3x3 => c * c * 27 + 2 * c,
        // (3,3,1) then (1,1,3) or the permutations: 9 + 3 weights per channel pair.
        _ => c * c * 12 + 2 * c,
    }
}

impl OpBlock {
    /// The block of `op` (not skip) on `c` channels under `key`: `{key}.conv`,
    /// `{key}.conv_1` (pseudo-3D ops), `{key}.norm`.
    pub fn new(b: &mut ParamBuilder, key: &str, op: Op, c: usize) -> Option<Self> {
        let norm_key = format!("{key}.norm");
        match op {
            Op::Skip => None,
            Op::Conv3x3x3 => Some(Self {
                conv: Conv::cubic(b, &format!("{key}.conv"), c, c, 3),
                conv_1: None,
                norm: Norm::affine(b, &norm_key, c),
            }),
            _ => {
                let (k0, k1) = p3d_kernels(op)?;
                let conv = Conv::new(
                    b,
                    &format!("{key}.conv"),
                    c,
                    c,
                    k0,
                    1,
                    same_padding(k0),
                    false,
                );
                let conv_1 = Conv::new(
                    b,
                    &format!("{key}.conv_1"),
                    c,
                    c,
                    k1,
                    1,
                    same_padding(k1),
                    false,
                );
                Some(Self {
                    conv,
                    conv_1: Some(conv_1),
                    norm: Norm::affine(b, &norm_key, c),
                })
            }
        }
    }

    /// # Shapes
    /// - input and output: `[batch, c, x, y, z]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let mut y = self.conv.forward_relu(x);
        if let Some(conv_1) = &self.conv_1 {
            y = conv_1.forward(y);
        }
        self.norm.forward(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn tensor(values: Vec<f32>, shape: [usize; 5]) -> Tensor<5> {
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }

    #[test]
    fn trilinear_align_corners_matches_the_formula() {
        // A 3 x 2 x 2 ramp resized to 5 x 3 x 4: with align_corners the source position of
        // output i is i * (in - 1) / (out - 1), and a linear ramp is reproduced exactly.
        let f = |x: f32, y: f32, z: f32| 1.0 + 2.0 * x + 3.0 * y + 5.0 * z;
        let mut values = Vec::new();
        for x in 0..3 {
            for y in 0..2 {
                for z in 0..2 {
                    values.push(f(x as f32, y as f32, z as f32));
                }
            }
        }
        let out = resize_trilinear(tensor(values, [1, 1, 3, 2, 2]), [5, 3, 4]);
        let out: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
        let mut i = 0;
        for x in 0..5 {
            for y in 0..3 {
                for z in 0..4 {
                    let expected = f(x as f32 * 0.5, y as f32 * 0.5, z as f32 / 3.0);
                    assert!((out[i] - expected).abs() < 1e-5, "{} vs {expected}", out[i]);
                    i += 1;
                }
            }
        }
    }

    #[test]
    fn instance_norm_normalises_each_channel() {
        let values: Vec<f32> = (0..16).map(|i| (i * i) as f32).collect();
        let out = Norm::plain().forward(tensor(values, [1, 2, 2, 2, 2]));
        let out: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
        for ch in out.chunks(8) {
            let mean: f32 = ch.iter().sum::<f32>() / 8.0;
            let var: f32 = ch.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 8.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }
}
