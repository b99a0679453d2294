//! Hand-written inference kernels for the CPU device, for the layers that dominate a DiNTS
//! forward pass: the convolutions ([`choose`] picks one of three kinds per layer), the
//! instance norm and the trilinear resize.
//!
//! - [`conv3d_winograd`] (`winograd.rs`): Winograd F(2, 3) for stride-1 kernels of 3 and 1.
//! - [`conv3d_gather`] (`gather.rs`): im2col one tile at a time, for any stride.
//! - [`conv3d_same`] (here): the direct stride-1 convolution. It reads its input in place
//!   instead of building an im2col matrix. The input is copied once into a zero-padded buffer
//!   (the ReLU that precedes every DiNTS convolution is applied during that copy), and the
//!   output is computed at every position of the padded grid's rows. In that grid, kernel
//!   tap `(a, b, c)` of the output at flat position `q` reads the input at
//!   `q + a * plane + b * row + c`, so each tap is one matrix product of the tap's
//!   `[c_out, c_in]` weights with a strided view of the padded input. The positions that fall
//!   in the padding are computed and dropped; that costs `(H + 2p)(W + 2p) / (H W)` more
//!   arithmetic (8 % at 48^2, 36 % at 12^2) and saves the im2col copy, which is 27 times the
//!   input for a 3x3x3 kernel. Work is split over output tiles small enough that a tile's
//!   accumulator stays in the core's cache across the kernel taps; each tile runs
//!   single-threaded matrix products on one rayon worker.

mod gather;
mod winograd;

use gemm::Parallelism;
use rayon::prelude::*;

pub use gather::{conv3d_gather, output_side};
pub use winograd::{conv3d_winograd, supports as winograd_supports};

/// Instance norm epsilon (PyTorch's default, used by MONAI).
pub const NORM_EPS: f64 = 1e-5;

/// Below this many input channels a convolution gathers each tile's shifted rows into one
/// matrix (one product with `k = c_in * taps`) instead of one product per tap.
const GATHER_BELOW_CHANNELS: usize = 16;

/// Target size, in floats, of one tile's accumulator (`c_out x tile`): 512 KiB.
const TILE_FLOATS: usize = 128 * 1024;

/// Shapes of a convolution with "same" padding (`kernel / 2` on every side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Spatial size of the input (and of the output at stride 1).
    pub size: [usize; 3],
    /// Kernel size, odd in every dimension.
    pub kernel: [usize; 3],
}

impl ConvShape {
    /// Voxels per channel.
    pub fn volume(&self) -> usize {
        self.size.iter().product()
    }

    /// Checks the slices of one convolution call against the shape.
    ///
    /// # Panics
    /// If a kernel side is even or a slice has the wrong length.
    fn check(&self, input: &[f32], weight: &[f32], bias: Option<&[f32]>) {
        let taps: usize = self.kernel.iter().product();
        assert!(
            self.kernel.iter().all(|k| k % 2 == 1),
            "kernel {:?} is not odd",
            self.kernel
        );
        assert_eq!(input.len(), self.c_in * self.volume(), "input length");
        assert_eq!(weight.len(), self.c_out * self.c_in * taps, "weight length");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.c_out, "bias length");
        }
    }
}

/// A raw pointer that rayon tasks may share; each task writes a disjoint range.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);

// SAFETY: the pointer is only written through at ranges that no other task touches, and
// the buffer outlives the parallel loop that uses it.
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, or `dst += lhs * rhs` with `accumulate`: the
/// matrices are row-major, each given as a pointer and its row stride (columns are
/// contiguous); the product runs across rayon's pool when `parallel`.
///
/// # Safety
/// Each matrix must lie inside its buffer at its row stride, and no other thread may touch
/// `dst`'s elements while the product runs.
unsafe fn matmul(
    [m, n, k]: [usize; 3],
    (dst, dst_stride): (*mut f32, usize),
    (lhs, lhs_stride): (*const f32, usize),
    (rhs, rhs_stride): (*const f32, usize),
    accumulate: bool,
    parallel: bool,
) {
    let parallelism = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the caller guarantees the bounds and exclusive access above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            lhs,
            1,
            lhs_stride as isize,
            rhs,
            1,
            rhs_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Spatial volumes up to this size (8^3) run on [`conv3d_gather`]: the padded-grid kernels
/// waste most of their work on the padding there, and one product over all positions
/// keeps both threads busy.
const SMALL_VOLUME: usize = 512;

/// Which kernel suits a convolution with "same" padding and `stride` best, from
/// `benches/conv_kernels.rs` (2 threads, AVX2; README, speed):
/// - [`conv3d_gather`] for strided convolutions, small volumes, 1x1x1 kernels and more than
///   256 input channels (the 512-channel level at 6^3: 0.61 of Flex's time);
/// - [`conv3d_winograd`] for 3x3x3 kernels from 8 input channels and for the pseudo-3D
///   kernels with two sides of 3 from 16 (0.45 to 0.6 of Flex's time);
/// - [`conv3d_same`] for the rest (1x3x3-kind kernels with one side of 3, few channels).
pub fn choose(shape: ConvShape, stride: usize) -> ConvKernel {
    let wide_sides = shape.kernel.iter().filter(|&&k| k == 3).count();
    let winograd_from = match wide_sides {
        3 => 8,
        2 => 16,
        _ => usize::MAX,
    };
    if stride != 1
        || shape.volume() <= SMALL_VOLUME
        || shape.c_in > 256
        || shape.kernel == [1, 1, 1]
    {
        ConvKernel::Gather
    } else if winograd::supports(shape.kernel) && shape.c_in >= winograd_from {
        ConvKernel::Winograd
    } else {
        ConvKernel::Direct
    }
}

/// The CPU convolution kernels of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// [`conv3d_same`].
    Direct,
    /// [`conv3d_winograd`].
    Winograd,
    /// [`conv3d_gather`].
    Gather,
}

impl ConvKernel {
    /// Runs the kernel (see [`conv3d_gather`] for the arguments); `stride` must be 1 for
    /// all but [`ConvKernel::Gather`].
    pub fn run(
        self,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: ConvShape,
        stride: usize,
        relu_input: bool,
    ) -> Vec<f32> {
        assert!(
            stride == 1 || self == Self::Gather,
            "{self:?} at stride {stride}"
        );
        match self {
            Self::Direct => conv3d_same(input, weight, bias, shape, relu_input),
            Self::Winograd => conv3d_winograd(input, weight, bias, shape, relu_input),
            Self::Gather => conv3d_gather(input, weight, bias, shape, stride, relu_input),
        }
    }
}

/// `conv(relu(input))` (or `conv(input)` without `relu_input`) for one batch item.
///
/// # Shapes
/// - input: `[c_in, size]`, row-major
/// - weight: `[c_out, c_in, kernel]` (PyTorch's layout)
/// - bias: `[c_out]`
/// - output: `[c_out, size]`
///
/// # Panics
/// If a slice length disagrees with `shape` or a kernel side is even.
pub fn conv3d_same(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: ConvShape,
    relu_input: bool,
) -> Vec<f32> {
    let ConvShape {
        c_in,
        c_out,
        size,
        kernel,
    } = shape;
    shape.check(input, weight, bias);
    let volume = shape.volume();
    let taps: usize = kernel.iter().product();

    let pad = kernel.map(|k| k / 2);
    let row = size[2] + 2 * pad[2];
    let plane = (size[1] + 2 * pad[1]) * row;
    // Output positions: every padded-grid position of the planes 0..D (d is not padded in
    // the output, the rows and columns are).
    let n_out = size[0] * plane;
    // The farthest tap reads this far past an output position.
    let reach = (kernel[0] - 1) * plane + (kernel[1] - 1) * row + (kernel[2] - 1);
    let channel_len = (n_out + reach).next_multiple_of(16);

    let padded = pad_input(
        input,
        shape,
        pad,
        row,
        plane,
        channel_len,
        relu_input,
        false,
    );

    let mut offsets = Vec::with_capacity(taps);
    for a in 0..kernel[0] {
        for b in 0..kernel[1] {
            for c in 0..kernel[2] {
                offsets.push(a * plane + b * row + c);
            }
        }
    }
    // Few input channels make each tap's product too thin (k = c_in) to run at speed: then
    // each tile gathers its `taps * c_in` shifted rows and multiplies once by the weights as
    // PyTorch stores them (`[c_out, c_in * taps]`, row `ci * taps + tap`).
    let gather = c_in * taps > 1 && c_in < GATHER_BELOW_CHANNELS;
    // Otherwise weights tap-major, `[tap][c_out][c_in]`, so each tap's matrix is contiguous.
    let mut packed = Vec::new();
    if !gather {
        packed = vec![0f32; weight.len()];
        for co in 0..c_out {
            for ci in 0..c_in {
                let src = &weight[(co * c_in + ci) * taps..][..taps];
                for (tap, &w) in src.iter().enumerate() {
                    packed[(tap * c_out + co) * c_in + ci] = w;
                }
            }
        }
    }

    let threads = rayon::current_num_threads().max(1);
    let tile = (TILE_FLOATS / c_out)
        .min(n_out.div_ceil(4 * threads))
        .max(64)
        .next_multiple_of(16);
    let tiles = n_out.div_ceil(tile);
    // Not zeroed: the first product of every tile overwrites its columns (checked below).
    let mut grid: Vec<f32> = Vec::with_capacity(c_out * n_out);
    let dst = SharedPtr(grid.as_mut_ptr());
    let run_tile = |t: usize, columns: &mut Vec<f32>| {
        let q0 = t * tile;
        let n = tile.min(n_out - q0);
        if gather {
            columns.resize(c_in * taps * n, 0.0);
            for ci in 0..c_in {
                for (tap, &offset) in offsets.iter().enumerate() {
                    let start = ci * channel_len + offset + q0;
                    columns[(ci * taps + tap) * n..][..n]
                        .copy_from_slice(&padded[start..start + n]);
                }
            }
            // SAFETY: as below; the gathered matrix is `c_in * taps x n`, row stride n.
            unsafe {
                matmul(
                    [c_out, n, c_in * taps],
                    (dst.get().add(q0), n_out),
                    (weight.as_ptr(), (c_in * taps)),
                    (columns.as_ptr(), n),
                    false,
                    false,
                );
            }
            return;
        }
        for (tap, &offset) in offsets.iter().enumerate() {
            // SAFETY: dst covers `c_out` rows of `n_out` floats and this task writes
            // columns q0..q0 + n of them only. The weight matrix is `c_out x c_in`
            // contiguous; the input view reads rows `ci * channel_len + offset + q0 ..+ n`,
            // and offset + q0 + n <= reach + n_out <= channel_len.
            unsafe {
                matmul(
                    [c_out, n, c_in],
                    (dst.get().add(q0), n_out),
                    (packed.as_ptr().add(tap * c_out * c_in), c_in),
                    (padded.as_ptr().add(offset + q0), channel_len),
                    tap > 0,
                    false,
                );
            }
        }
    };
    (0..tiles)
        .into_par_iter()
        .for_each_init(Vec::new, |columns, t| run_tile(t, columns));
    // SAFETY: the tiles cover columns 0..n_out of all c_out rows, and each tile's first
    // product (the gathered one, or tap 0's) runs without reading the destination, so every
    // float was written; `c_out * n_out` is the capacity reserved above.
    unsafe { grid.set_len(c_out * n_out) };
    drop(padded);

    // Keep the positions inside the volume (and add the bias).
    if pad[1] == 0 && pad[2] == 0 {
        // The grid has no padded rows or columns: it is the output already.
        if let Some(bias) = bias {
            grid.par_chunks_mut(volume)
                .zip(bias.par_iter())
                .for_each(|(channel, &b)| channel.iter_mut().for_each(|v| *v += b));
        }
        return grid;
    }
    let mut out = vec![0f32; c_out * volume];
    out.par_chunks_mut(volume)
        .zip(grid.par_chunks(n_out))
        .enumerate()
        .for_each(|(co, (out, grid))| {
            let b = bias.map_or(0.0, |b| b[co]);
            for d in 0..size[0] {
                for h in 0..size[1] {
                    let src = &grid[d * plane + h * row..][..size[2]];
                    let dst = &mut out[(d * size[1] + h) * size[2]..][..size[2]];
                    for (o, &s) in dst.iter_mut().zip(src) {
                        *o = s + b;
                    }
                }
            }
        });
    out
}

/// Source index pairs and weights of a linear resize with `align_corners = true` from `from`
/// to `to` samples, computed as PyTorch does (`i * (from - 1) / (to - 1)` in f32).
fn linear_taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
    let scale = if to > 1 {
        (from as f32 - 1.0) / (to as f32 - 1.0)
    } else {
        0.0
    };
    (0..to)
        .map(|i| {
            let src = scale * i as f32;
            let i0 = (src as usize).min(from - 1);
            let i1 = (i0 + 1).min(from - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// Trilinear resize with `align_corners = true` of `channels` volumes `[from]` to `[to]`,
/// one axis at a time (x, then y, then z), then ReLU with `relu_output`.
///
/// # Panics
/// If `input.len()` is not `channels` volumes of `from`, or a side of `from` is 0.
pub fn resize_trilinear(
    input: &[f32],
    channels: usize,
    from: [usize; 3],
    to: [usize; 3],
    relu_output: bool,
) -> Vec<f32> {
    let v_in: usize = from.iter().product();
    let v_out: usize = to.iter().product();
    assert_eq!(input.len(), channels * v_in, "resize input length");
    assert!(from.iter().all(|&s| s > 0), "resize of an empty volume");
    let [tz, ty, tx] = [0, 1, 2].map(|a| linear_taps(from[a], to[a]));
    let mut out = vec![0f32; channels * v_out];
    out.par_chunks_mut(v_out.max(1))
        .zip(input.par_chunks(v_in))
        .for_each(|(out, src)| {
            // x: [from z][from y][to x]
            let mut xs = vec![0f32; from[0] * from[1] * to[2]];
            for (r, dst) in xs.chunks_mut(to[2]).enumerate() {
                let line = &src[r * from[2]..][..from[2]];
                for (o, &(i0, i1, f)) in dst.iter_mut().zip(&tx) {
                    *o = line[i0] + f * (line[i1] - line[i0]);
                }
            }
            // y: [from z][to y][to x]
            let mut ys = vec![0f32; from[0] * to[1] * to[2]];
            for z in 0..from[0] {
                for (y, &(i0, i1, f)) in ty.iter().enumerate() {
                    let a = &xs[(z * from[1] + i0) * to[2]..][..to[2]];
                    let b = &xs[(z * from[1] + i1) * to[2]..][..to[2]];
                    let dst = &mut ys[(z * to[1] + y) * to[2]..][..to[2]];
                    for ((o, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                        *o = a + f * (b - a);
                    }
                }
            }
            // z: [to z][to y][to x]
            let plane = to[1] * to[2];
            for (z, &(i0, i1, f)) in tz.iter().enumerate() {
                let a = &ys[i0 * plane..][..plane];
                let b = &ys[i1 * plane..][..plane];
                let dst = &mut out[z * plane..][..plane];
                for ((o, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                    *o = a + f * (b - a);
                }
                if relu_output {
                    // Not `max`: NaN stays NaN, as in PyTorch.
                    for o in dst.iter_mut() {
                        *o = if *o < 0.0 { 0.0 } else { *o };
                    }
                }
            }
        });
    out
}

/// The voxels `(2i + offset, 2j + offset, 2k + offset)` of `channels` volumes of even
/// `size` (`offset` 0 or 1): `[channels, size / 2]`.
pub fn gather_strided(input: &[f32], channels: usize, size: [usize; 3], offset: usize) -> Vec<f32> {
    let half = size.map(|s| s / 2);
    let v_in: usize = size.iter().product();
    let v_out: usize = half.iter().product();
    assert_eq!(input.len(), channels * v_in, "gather input length");
    let mut out = vec![0f32; channels * v_out];
    out.par_chunks_mut(v_out.max(1))
        .zip(input.par_chunks(v_in.max(1)))
        .for_each(|(dst, src)| {
            for z in 0..half[0] {
                for y in 0..half[1] {
                    let line =
                        &src[((2 * z + offset) * size[1] + 2 * y + offset) * size[2]..][..size[2]];
                    let row = &mut dst[(z * half[1] + y) * half[2]..][..half[2]];
                    for (x, o) in row.iter_mut().enumerate() {
                        *o = line[2 * x + offset];
                    }
                }
            }
        });
    out
}

/// Copies `[c_in, size]` into per-channel zero-padded grids of `channel_len` floats,
/// applying ReLU on the way when asked. With `split_rows` (which needs a padding of 1 along
/// the rows), each padded row of `row` (even) floats holds its even positions first and its
/// odd positions after them.
#[allow(clippy::too_many_arguments)]
fn pad_input(
    input: &[f32],
    shape: ConvShape,
    pad: [usize; 3],
    row: usize,
    plane: usize,
    channel_len: usize,
    relu: bool,
    split_rows: bool,
) -> Vec<f32> {
    let size = shape.size;
    let volume = shape.volume();
    assert!(!split_rows || pad[2] == 1, "split rows need a padding of 1");
    let mut padded = vec![0f32; shape.c_in * channel_len];
    padded
        .par_chunks_mut(channel_len)
        .zip(input.par_chunks(volume))
        .for_each(|(dst, src)| {
            // `max` would turn NaN into 0; keep NaN visible as PyTorch does.
            let relu = |s: f32| if relu && s < 0.0 { 0.0 } else { s };
            for d in 0..size[0] {
                for h in 0..size[1] {
                    let s = &src[(d * size[1] + h) * size[2]..][..size[2]];
                    let line = (d + pad[0]) * plane + (h + pad[1]) * row;
                    if split_rows {
                        // Source x sits at padded position x + 1: even x at odd positions
                        // (odd[x / 2]), odd x at even ones (even[x / 2 + 1]).
                        let (even, odd) = dst[line..line + row].split_at_mut(row / 2);
                        let mut pairs = s.chunks_exact(2);
                        for ((pair, o), e) in (&mut pairs).zip(odd.iter_mut()).zip(&mut even[1..]) {
                            *o = relu(pair[0]);
                            *e = relu(pair[1]);
                        }
                        if let [last] = pairs.remainder() {
                            odd[size[2] / 2] = relu(*last);
                        }
                    } else {
                        let t = &mut dst[line + pad[2]..][..size[2]];
                        for (t, &s) in t.iter_mut().zip(s) {
                            *t = relu(s);
                        }
                    }
                }
            }
        });
    padded
}

const LANES: usize = 16;
const BLOCK: usize = 1024;

/// The largest magnitude [`sum_f64`] takes for the mean and the squared deviations
/// without overflowing its f32 lanes: a lane adds `BLOCK / LANES` = 64 squares of at most
/// `(2 * 2^60)^2`, 2^128 in all, just under `f32::MAX`.
const LANE_SAFE: f32 = (1u64 << 60) as f32;

/// Sum of `values` in f64, accumulated in f32 lanes over short blocks (vectorises, and
/// loses nothing that matters at the block size).
fn sum_f64(values: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    let mut total = 0f64;
    for block in values.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += f(v);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        total += acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail);
    }
    total
}

/// Largest `|v|` of `values` (NaN ignored), in lanes like [`sum_f64`].
fn peak(values: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = a.max(v.abs());
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&acc)
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// In-place instance norm of `channels` equal slices of `x` (biased variance, eps 1e-5),
/// then `* gamma[c] + beta[c]` when given.
///
/// # Panics
/// If `x.len()` is not a multiple of `channels` or a parameter slice has the wrong length.
pub fn instance_norm(x: &mut [f32], channels: usize, gamma: Option<&[f32]>, beta: Option<&[f32]>) {
    assert!(
        channels > 0 && x.len().is_multiple_of(channels),
        "norm shape"
    );
    for p in [gamma, beta].into_iter().flatten() {
        assert_eq!(p.len(), channels, "norm parameter length");
    }
    let volume = x.len() / channels;
    if volume == 0 {
        return;
    }
    x.par_chunks_mut(volume).enumerate().for_each(|(c, v)| {
        let (mean, var) = if peak(v) <= LANE_SAFE {
            let mean = sum_f64(v, |x| x) / volume as f64;
            let m = mean as f32;
            (mean, sum_f64(v, |x| (x - m) * (x - m)) / volume as f64)
        } else {
            // Squares this large overflow f32 lanes; plain f64 sums stay finite.
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / volume as f64;
            let var = v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>();
            (mean, var / volume as f64)
        };
        let m = mean as f32;
        let a = (gamma.map_or(1.0, |g| f64::from(g[c])) / (var + NORM_EPS).sqrt()) as f32;
        let b = beta.map_or(0.0, |b| b[c]);
        for x in v.iter_mut() {
            *x = (*x - m) * a + b;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution with zero padding, in f64.
    pub(super) fn reference(
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        s: ConvShape,
        relu: bool,
    ) -> Vec<f32> {
        let [d, h, w] = s.size;
        let [k0, k1, k2] = s.kernel;
        let at = |c: usize, z: isize, y: isize, x: isize| -> f64 {
            if z < 0 || y < 0 || x < 0 || z >= d as isize || y >= h as isize || x >= w as isize {
                return 0.0;
            }
            let v = input[((c * d + z as usize) * h + y as usize) * w + x as usize];
            f64::from(if relu { v.max(0.0) } else { v })
        };
        let mut out = vec![0f32; s.c_out * d * h * w];
        for co in 0..s.c_out {
            for z in 0..d {
                for y in 0..h {
                    for x in 0..w {
                        let mut acc = bias.map_or(0.0, |b| f64::from(b[co]));
                        for ci in 0..s.c_in {
                            for a in 0..k0 {
                                for b in 0..k1 {
                                    for c in 0..k2 {
                                        let wv = weight
                                            [(((co * s.c_in + ci) * k0 + a) * k1 + b) * k2 + c];
                                        acc += f64::from(wv)
                                            * at(
                                                ci,
                                                (z + a) as isize - (k0 / 2) as isize,
                                                (y + b) as isize - (k1 / 2) as isize,
                                                (x + c) as isize - (k2 / 2) as isize,
                                            );
                                    }
                                }
                            }
                        }
                        out[((co * d + z) * h + y) * w + x] = acc as f32;
                    }
                }
            }
        }
        out
    }

    /// Input, weights and (with `with_bias`) bias for `shape`, from seeds `seed`, `seed + 1`
    /// and `seed + 2`.
    pub(super) fn operands(
        shape: ConvShape,
        seed: u32,
        with_bias: bool,
    ) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
        let taps: usize = shape.kernel.iter().product();
        let input = values(shape.c_in * shape.volume(), seed);
        let weight = values(shape.c_out * shape.c_in * taps, seed + 1);
        let bias = with_bias.then(|| values(shape.c_out, seed + 2));
        (input, weight, bias)
    }

    /// A test convolution: kernel, size, input and output channels, ReLU on the input, bias.
    pub(super) type Case = ([usize; 3], [usize; 3], usize, usize, bool, bool);

    /// Runs `conv` on every case and compares it with [`reference`] (operand seeds from
    /// `seed` on).
    pub(super) fn check_against_reference(
        cases: &[Case],
        seed: u32,
        conv: impl Fn(&[f32], &[f32], Option<&[f32]>, ConvShape, bool) -> Vec<f32>,
    ) {
        for (i, &(kernel, size, c_in, c_out, relu, with_bias)) in cases.iter().enumerate() {
            let shape = ConvShape {
                c_in,
                c_out,
                size,
                kernel,
            };
            let (input, weight, bias) = operands(shape, seed + 3 * i as u32, with_bias);
            let ours = conv(&input, &weight, bias.as_deref(), shape, relu);
            let want = reference(&input, &weight, bias.as_deref(), shape, relu);
            let case = format!("case {i} ({kernel:?}, {size:?})");
            assert_close(&ours, &want, 1e-5, &case);
        }
    }

    /// Asserts `ours` and `want` have the same length and differ by at most `tolerance`
    /// times `max(1, max |want|)` anywhere.
    pub(super) fn assert_close(ours: &[f32], want: &[f32], tolerance: f32, case: &str) {
        assert_eq!(ours.len(), want.len(), "{case}: length");
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (j, (a, b)) in ours.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * scale,
                "{case} at {j}: {a} vs {b}"
            );
        }
    }

    pub(super) fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator; values in [-1, 1).
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn convolution_matches_a_direct_loop_for_every_kernel_shape() {
        let cases = [
            ([3, 3, 3], [5, 4, 6], 3, 4, true, false),
            ([3, 3, 1], [4, 5, 3], 2, 5, false, false),
            ([1, 1, 3], [3, 4, 7], 4, 2, true, false),
            ([3, 1, 3], [6, 3, 4], 3, 3, false, false),
            ([1, 3, 3], [4, 4, 4], 2, 3, true, false),
            ([3, 1, 1], [5, 2, 3], 3, 2, false, false),
            ([1, 1, 1], [3, 5, 4], 5, 3, true, true),
            ([3, 3, 3], [2, 1, 9], 1, 2, false, true),
            // From GATHER_BELOW_CHANNELS input channels on: one product per tap.
            ([3, 3, 3], [3, 4, 5], 17, 3, true, false),
            ([1, 3, 3], [4, 3, 4], 20, 2, false, true),
            ([1, 1, 1], [2, 3, 4], 16, 5, true, true),
        ];
        check_against_reference(&cases, 0, conv3d_same);
    }

    #[test]
    fn trilinear_resize_matches_pytorch_formula() {
        // A ramp is reproduced exactly; corners map to corners.
        let f = |z: f32, y: f32, x: f32| 1.0 + 2.0 * z - 3.0 * y + 0.5 * x;
        let from = [3, 4, 2];
        let to = [5, 7, 6];
        let mut input = Vec::new();
        for c in 0..2 {
            for z in 0..from[0] {
                for y in 0..from[1] {
                    for x in 0..from[2] {
                        input.push(f(z as f32, y as f32, x as f32) * (c + 1) as f32);
                    }
                }
            }
        }
        let out = resize_trilinear(&input, 2, from, to, false);
        let mut i = 0;
        for c in 0..2 {
            for z in 0..to[0] {
                for y in 0..to[1] {
                    for x in 0..to[2] {
                        let want =
                            f(z as f32 * 0.5, y as f32 * 0.5, x as f32 * 0.2) * (c + 1) as f32;
                        assert!((out[i] - want).abs() < 1e-5, "{} vs {want}", out[i]);
                        i += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn instance_norm_of_values_near_the_f32_limit_stays_finite() {
        // One value of 3e38 among small ones: its square overflows f32.
        let mut x: Vec<f32> = (0..200).map(|i| (i % 5) as f32).collect();
        x[17] = 3e38;
        instance_norm(&mut x, 2, None, None);
        assert!(x.iter().all(|v| v.is_finite()), "{:?}", &x[..20]);
        // Of 100 values, one far above the rest normalises to sqrt(99).
        assert!((x[17] - 99f32.sqrt()).abs() < 1e-3, "{}", x[17]);
        assert!(x[100..].iter().all(|v| v.abs() < 2.0));
        assert_eq!(peak(&[1.0, -7.0, f32::NAN, 3.0]), 7.0);
    }

    #[test]
    fn instance_norm_with_affine_parameters() {
        let mut x: Vec<f32> = (0..24).map(|i| (i * i % 7) as f32 + 100.0).collect();
        let original = x.clone();
        let gamma = [2.0f32, 0.5, 1.0];
        let beta = [1.0f32, -1.0, 0.0];
        instance_norm(&mut x, 3, Some(&gamma), Some(&beta));
        for c in 0..3 {
            let v = &original[c * 8..][..8];
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / 8.0;
            let var = v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / 8.0;
            for (k, &o) in v.iter().enumerate() {
                let want = (f64::from(o) - mean) / (var + NORM_EPS).sqrt() * f64::from(gamma[c])
                    + f64::from(beta[c]);
                let got = f64::from(x[c * 8 + k]);
                assert!((got - want).abs() < 1e-5, "channel {c}: {got} vs {want}");
            }
        }
    }
}
