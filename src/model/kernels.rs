//! Hand-written inference kernels for the CPU device, for the two layers that dominate a
//! DiNTS forward pass: the stride-1 "same" convolution and the instance norm.
//!
//! The convolution reads its input in place instead of building an im2col matrix. The
//! input is copied once into a zero-padded buffer (the ReLU that precedes every DiNTS
//! convolution is applied during that copy), and the output is computed at every position
//! of the padded grid's rows. In that grid, kernel tap `(a, b, c)` of the output at flat
//! position `q` reads the input at `q + a * plane + b * row + c`, so each tap is one matrix
//! product of the tap's `[c_out, c_in]` weights with a strided view of the padded input.
//! The positions that fall in the padding are computed and dropped; that costs
//! `(H + 2p)(W + 2p) / (H W)` more arithmetic (8 % at 48^2, 36 % at 12^2) and saves the
//! im2col copy, which is 27 times the input for a 3x3x3 kernel.
//!
//! Work is split over output tiles small enough that a tile's accumulator stays in the
//! core's cache across the kernel taps; each tile runs single-threaded matrix products on
//! one rayon worker.

use gemm::Parallelism;
use rayon::prelude::*;

/// Instance norm epsilon (PyTorch's default, used by MONAI).
pub const NORM_EPS: f64 = 1e-5;

/// Below this many input channels a convolution gathers each tile's shifted rows into one
/// matrix (one product with `k = c_in * taps`) instead of one product per tap.
const GATHER_BELOW_CHANNELS: usize = 16;

/// Target size, in floats, of one tile's accumulator (`c_out x tile`): 512 KiB.
const TILE_FLOATS: usize = 128 * 1024;

/// Shapes of a stride-1 convolution with "same" padding (`kernel / 2` on every side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Spatial size of input and output.
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

/// Which kernel suits a convolution best, from `benches/conv_kernels.rs` (2 threads, AVX2):
/// Winograd for 3x3x3 kernels from 8 to 256 input channels (2 to 2.6 times faster than
/// Flex's im2col there), [`conv3d_same`] for the other stride-1 "same" convolutions up to
/// 256 input channels, and `None` (Flex's im2col, faster on the deepest levels' 512
/// channels at 6^3) otherwise.
pub fn choose(shape: ConvShape) -> Option<ConvKernel> {
    if shape.c_in > 256 {
        None
    } else if shape.kernel == [3, 3, 3] && shape.c_in >= 8 {
        Some(ConvKernel::Winograd)
    } else {
        Some(ConvKernel::Direct)
    }
}

/// The CPU convolution kernels of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// [`conv3d_same`].
    Direct,
    /// [`conv3d_winograd`].
    Winograd,
}

impl ConvKernel {
    /// Runs the kernel (see [`conv3d_same`] for the arguments).
    pub fn run(
        self,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: ConvShape,
        relu_input: bool,
    ) -> Vec<f32> {
        match self {
            Self::Direct => conv3d_same(input, weight, bias, shape, relu_input),
            Self::Winograd => conv3d_winograd(input, weight, bias, shape, relu_input),
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

    let padded = pad_input(input, shape, pad, row, plane, channel_len, relu_input);

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
    let mut grid = vec![0f32; c_out * n_out];
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
                gemm::gemm(
                    c_out,
                    n,
                    c_in * taps,
                    dst.get().add(q0),
                    1,
                    n_out as isize,
                    false,
                    weight.as_ptr(),
                    1,
                    (c_in * taps) as isize,
                    columns.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
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
                gemm::gemm(
                    c_out,
                    n,
                    c_in,
                    dst.get().add(q0),
                    1,
                    n_out as isize,
                    tap > 0,
                    packed.as_ptr().add(tap * c_out * c_in),
                    1,
                    c_in as isize,
                    padded.as_ptr().add(offset + q0),
                    1,
                    channel_len as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
    };
    (0..tiles)
        .into_par_iter()
        .for_each_init(Vec::new, |columns, t| run_tile(t, columns));
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

/// Floats that one Winograd block's transformed input and products may take together (the
/// block then stays in this core's share of the last-level cache): 4 MiB.
const WINOGRAD_BLOCK_FLOATS: usize = 1024 * 1024;

/// `conv(relu(input))` for a 3x3x3 kernel with padding 1, by Winograd's minimal filtering
/// F(2x2x2, 3x3x3): each 2x2x2 output tile is `A^T [(G g G^T) . (B^T d B)] A` taken along
/// all three axes, which needs 64 multiplications per tile and channel pair instead of 216.
/// The transforms' coefficients are 0, +-1 and +-1/2, so rounding stays at the level of the
/// direct sum (checked against it in the tests). The products are 64 matrix products per
/// block of tiles, `[c_out, c_in] x [c_in, tiles]`.
///
/// Same shapes as [`conv3d_same`]; `shape.kernel` must be `[3, 3, 3]`.
pub fn conv3d_winograd(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: ConvShape,
    relu_input: bool,
) -> Vec<f32> {
    let ConvShape {
        c_in, c_out, size, ..
    } = shape;
    assert_eq!(shape.kernel, [3, 3, 3], "Winograd kernel");
    shape.check(input, weight, bias);
    let tiles = size.map(|s| s.div_ceil(2));
    // Padded grid: one zero voxel before, and enough after for the last tile's 4 voxels.
    let grid = tiles.map(|t| 2 * t + 2);
    let row = grid[2];
    let plane = grid[1] * grid[2];
    let padded = pad_input(
        input,
        shape,
        [1, 1, 1],
        row,
        plane,
        grid[0] * plane,
        relu_input,
    );
    let u = winograd_weights(weight, c_out, c_in);

    // Blocks: a run of tile rows (ty) within one tile plane (tz).
    let per_tile = 64 * (c_in + c_out);
    let rows_per_block = (WINOGRAD_BLOCK_FLOATS / per_tile / tiles[2]).clamp(1, tiles[1]);
    let blocks_per_plane = tiles[1].div_ceil(rows_per_block);
    let volume = shape.volume();
    let mut out = vec![0f32; c_out * volume];
    let dst = SharedPtr(out.as_mut_ptr());
    (0..tiles[0] * blocks_per_plane)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, block| {
            let tz = block / blocks_per_plane;
            let ty0 = (block % blocks_per_plane) * rows_per_block;
            let ty1 = (ty0 + rows_per_block).min(tiles[1]);
            let n = (ty1 - ty0) * tiles[2];
            scratch.resize(
                64 * (c_in + c_out) * n + 4 * 4 * 4 * (2 * rows_per_block + 2) * tiles[2],
                0.0,
            );
            let (v, rest) = scratch.split_at_mut(64 * c_in * n);
            let (m, work) = rest.split_at_mut(64 * c_out * n);
            for ci in 0..c_in {
                let channel = &padded[ci * grid[0] * plane..][..grid[0] * plane];
                input_transform(
                    channel,
                    [tz, ty0, ty1],
                    tiles[2],
                    row,
                    plane,
                    work,
                    v,
                    ci,
                    c_in,
                    n,
                );
            }
            for xi in 0..64 {
                // SAFETY: m[xi] is `c_out x n` (row stride n), u[xi] is `c_out x c_in`
                // contiguous, v[xi] is `c_in x n` (row stride n); all inside their buffers.
                unsafe {
                    gemm::gemm(
                        c_out,
                        n,
                        c_in,
                        m.as_mut_ptr().add(xi * c_out * n),
                        1,
                        n as isize,
                        false,
                        u.as_ptr().add(xi * c_out * c_in),
                        1,
                        c_in as isize,
                        v.as_ptr().add(xi * c_in * n),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
            for co in 0..c_out {
                let b = bias.map_or(0.0, |b| b[co]);
                // SAFETY: this block writes only the voxels of its own tiles (planes 2tz,
                // 2tz + 1 and rows 2ty0 .. 2ty1 of every channel); blocks do not overlap.
                let channel =
                    unsafe { std::slice::from_raw_parts_mut(dst.get().add(co * volume), volume) };
                output_transform(
                    m,
                    co,
                    c_out,
                    n,
                    [tz, ty0, ty1],
                    tiles[2],
                    size,
                    b,
                    work,
                    channel,
                );
            }
        });
    out
}

/// `G g G^T` along three axes for every channel pair, laid out `[64][c_out][c_in]`.
// The loops index several small arrays with the same counters; iterators would obscure that.
#[allow(clippy::needless_range_loop)]
fn winograd_weights(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    let g = |w: [f32; 3]| -> [f32; 4] {
        [
            w[0],
            0.5 * (w[0] + w[1] + w[2]),
            0.5 * (w[0] - w[1] + w[2]),
            w[2],
        ]
    };
    let mut u = vec![0f32; 64 * c_out * c_in];
    let dst = SharedPtr(u.as_mut_ptr());
    (0..c_out).into_par_iter().for_each(|co| {
        for ci in 0..c_in {
            let k = &weight[(co * c_in + ci) * 27..][..27];
            // Along x: [3][3][4]; then y: [3][4][4]; then z: [4][4][4].
            let mut tx = [[[0f32; 4]; 3]; 3];
            for a in 0..3 {
                for b in 0..3 {
                    let i = (a * 3 + b) * 3;
                    tx[a][b] = g([k[i], k[i + 1], k[i + 2]]);
                }
            }
            let mut ty = [[[0f32; 4]; 4]; 3];
            for a in 0..3 {
                for c in 0..4 {
                    let col = g([tx[a][0][c], tx[a][1][c], tx[a][2][c]]);
                    for b in 0..4 {
                        ty[a][b][c] = col[b];
                    }
                }
            }
            for b in 0..4 {
                for c in 0..4 {
                    let col = g([ty[0][b][c], ty[1][b][c], ty[2][b][c]]);
                    for (a, &value) in col.iter().enumerate() {
                        let i = (((a * 4 + b) * 4 + c) * c_out + co) * c_in + ci;
                        // SAFETY: `i < u.len()`, and only the task of output channel `co`
                        // writes the entries of `co`.
                        unsafe { *dst.get().add(i) = value };
                    }
                }
            }
        }
    });
    u
}

/// `B^T d` for the four values of one input run: `[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`.
#[inline(always)]
fn bt(d0: f32, d1: f32, d2: f32, d3: f32) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// Transforms channel `ci` of the tiles `tz, ty0..ty1, 0..tiles_x` into `v[xi][ci][tile]`.
/// `work` holds at least `64 * (2 * rows + 2) * tiles_x` floats.
#[allow(clippy::too_many_arguments)]
fn input_transform(
    channel: &[f32],
    [tz, ty0, ty1]: [usize; 3],
    tiles_x: usize,
    row: usize,
    plane: usize,
    work: &mut [f32],
    v: &mut [f32],
    ci: usize,
    c_in: usize,
    n: usize,
) {
    let rows = 2 * (ty1 - ty0) + 2;
    // x pass: xs[a][r][c][tx] for the 4 planes a and the block's rows r.
    let (xs, ys) = work.split_at_mut(4 * rows * 4 * tiles_x);
    for a in 0..4 {
        for r in 0..rows {
            let src = &channel[(2 * tz + a) * plane + (2 * ty0 + r) * row..][..row];
            let base = (a * rows + r) * 4 * tiles_x;
            let (x0, rest) = xs[base..base + 4 * tiles_x].split_at_mut(tiles_x);
            let (x1, rest) = rest.split_at_mut(tiles_x);
            let (x2, x3) = rest.split_at_mut(tiles_x);
            for t in 0..tiles_x {
                let d = &src[2 * t..2 * t + 4];
                let o = bt(d[0], d[1], d[2], d[3]);
                x0[t] = o[0];
                x1[t] = o[1];
                x2[t] = o[2];
                x3[t] = o[3];
            }
        }
    }
    // y pass: ys[a][b][c][ty][tx], one output row at a time (two input rows each).
    let nty = ty1 - ty0;
    for a in 0..4 {
        for c in 0..4 {
            for ty in 0..nty {
                let at = |r: usize| ((a * rows + 2 * ty + r) * 4 + c) * tiles_x;
                for (b, (p, q, sign)) in BT_ROWS.into_iter().enumerate() {
                    let out = ((((a * 4 + b) * 4 + c) * nty) + ty) * tiles_x;
                    combine(
                        &xs[at(p)..][..tiles_x],
                        &xs[at(q)..][..tiles_x],
                        sign,
                        &mut ys[out..][..tiles_x],
                    );
                }
            }
        }
    }
    // z pass, into v[(a, b, c)][ci][ty * tiles_x + tx].
    let len = nty * tiles_x;
    for b in 0..4 {
        for c in 0..4 {
            let at = |a: usize| ((a * 4 + b) * 4 + c) * len;
            for (a, (p, q, sign)) in BT_ROWS.into_iter().enumerate() {
                let out = (((a * 4 + b) * 4 + c) * c_in + ci) * n;
                combine(
                    &ys[at(p)..][..len],
                    &ys[at(q)..][..len],
                    sign,
                    &mut v[out..][..len],
                );
            }
        }
    }
}

/// The rows of `B^T` as `(p, q, sign)`: output `d[p] + sign * d[q]`.
const BT_ROWS: [(usize, usize, f32); 4] = [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];

/// `out = a + sign * b`, element-wise.
#[inline(always)]
fn combine(a: &[f32], b: &[f32], sign: f32, out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a + sign * b;
    }
}

/// `out = a + b + c` (`plus`) or `a - b - c`, element-wise: a row of `A^T`.
#[inline(always)]
fn combine3(a: &[f32], b: &[f32], c: &[f32], plus: bool, out: &mut [f32]) {
    if plus {
        for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = a + b + c;
        }
    } else {
        for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = a - b - c;
        }
    }
}

/// `A^T m` for the four products of one run: `[m0 + m1 + m2, m1 - m2 - m3]`.
#[inline(always)]
fn at(m0: f32, m1: f32, m2: f32, m3: f32) -> [f32; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// Writes output channel `co` of the block's tiles from the products `m[xi][co][tile]`,
/// plus `bias`, into `channel` (`[size]`), dropping voxels past an odd side.
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    co: usize,
    c_out: usize,
    n: usize,
    [tz, ty0, ty1]: [usize; 3],
    tiles_x: usize,
    size: [usize; 3],
    bias: f32,
    work: &mut [f32],
    channel: &mut [f32],
) {
    // z pass: zs[i][b][c][tile] for output planes i in 0..2 (A^T rows: m0 + m1 + m2 and
    // m1 - m2 - m3).
    let (zs, ys) = work.split_at_mut(2 * 16 * n);
    for b in 0..4 {
        for c in 0..4 {
            let row = |a: usize| &m[(((a * 4 + b) * 4 + c) * c_out + co) * n..][..n];
            combine3(
                row(0),
                row(1),
                row(2),
                true,
                &mut zs[(b * 4 + c) * n..][..n],
            );
            combine3(
                row(1),
                row(2),
                row(3),
                false,
                &mut zs[(16 + b * 4 + c) * n..][..n],
            );
        }
    }
    // y pass: ys[i][j][c][tile].
    for i in 0..2 {
        for c in 0..4 {
            let row = |b: usize| &zs[(i * 16 + b * 4 + c) * n..][..n];
            combine3(
                row(0),
                row(1),
                row(2),
                true,
                &mut ys[((i * 2) * 4 + c) * n..][..n],
            );
            combine3(
                row(1),
                row(2),
                row(3),
                false,
                &mut ys[((i * 2 + 1) * 4 + c) * n..][..n],
            );
        }
    }
    // x pass, written into the output rows.
    let nty = ty1 - ty0;
    for i in 0..2 {
        let z = 2 * tz + i;
        if z >= size[0] {
            continue;
        }
        for j in 0..2 {
            let at_y = |c: usize| ((i * 2 + j) * 4 + c) * n;
            for ty in 0..nty {
                let y = 2 * (ty0 + ty) + j;
                if y >= size[1] {
                    continue;
                }
                let dst = &mut channel[(z * size[1] + y) * size[2]..][..size[2]];
                let base = ty * tiles_x;
                for tx in 0..tiles_x {
                    let t = base + tx;
                    let o = at(
                        ys[at_y(0) + t],
                        ys[at_y(1) + t],
                        ys[at_y(2) + t],
                        ys[at_y(3) + t],
                    );
                    dst[2 * tx] = o[0] + bias;
                    if 2 * tx + 1 < size[2] {
                        dst[2 * tx + 1] = o[1] + bias;
                    }
                }
            }
        }
    }
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
/// one axis at a time (x, then y, then z).
///
/// # Panics
/// If `input.len()` is not `channels` volumes of `from`, or a side of `from` is 0.
pub fn resize_trilinear(
    input: &[f32],
    channels: usize,
    from: [usize; 3],
    to: [usize; 3],
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
/// applying ReLU on the way when asked.
fn pad_input(
    input: &[f32],
    shape: ConvShape,
    pad: [usize; 3],
    row: usize,
    plane: usize,
    channel_len: usize,
    relu: bool,
) -> Vec<f32> {
    let size = shape.size;
    let volume = shape.volume();
    let mut padded = vec![0f32; shape.c_in * channel_len];
    padded
        .par_chunks_mut(channel_len)
        .zip(input.par_chunks(volume))
        .for_each(|(dst, src)| {
            for d in 0..size[0] {
                for h in 0..size[1] {
                    let s = &src[(d * size[1] + h) * size[2]..][..size[2]];
                    let start = (d + pad[0]) * plane + (h + pad[1]) * row + pad[2];
                    let t = &mut dst[start..start + size[2]];
                    if relu {
                        // `max` would turn NaN into 0; keep NaN visible as PyTorch does.
                        for (t, &s) in t.iter_mut().zip(s) {
                            *t = if s < 0.0 { 0.0 } else { s };
                        }
                    } else {
                        t.copy_from_slice(s);
                    }
                }
            }
        });
    padded
}

/// Sum of `values` in f64, accumulated in f32 lanes over short blocks (vectorises, and
/// loses nothing that matters at the block size).
fn sum_f64(values: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    const LANES: usize = 16;
    let mut total = 0f64;
    for block in values.chunks(1024) {
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
        let mean = sum_f64(v, |x| x) / volume as f64;
        let m = mean as f32;
        let var = sum_f64(v, |x| (x - m) * (x - m)) / volume as f64;
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
    fn reference(
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

    fn values(n: usize, seed: u32) -> Vec<f32> {
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
        for (i, (kernel, size, c_in, c_out, relu, with_bias)) in cases.into_iter().enumerate() {
            let shape = ConvShape {
                c_in,
                c_out,
                size,
                kernel,
            };
            let taps: usize = kernel.iter().product();
            let input = values(c_in * shape.volume(), 2 * i as u32);
            let weight = values(c_out * c_in * taps, 2 * i as u32 + 1);
            let bias = with_bias.then(|| values(c_out, 99));
            let ours = conv3d_same(&input, &weight, bias.as_deref(), shape, relu);
            let want = reference(&input, &weight, bias.as_deref(), shape, relu);
            assert_eq!(ours.len(), want.len());
            for (j, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "case {i} ({kernel:?}) at {j}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn winograd_matches_a_direct_loop_on_even_and_odd_sides() {
        for (i, (size, c_in, c_out, relu, with_bias)) in [
            ([4, 6, 8], 3, 5, true, false),
            ([5, 3, 7], 4, 2, false, true),
            ([1, 2, 1], 2, 3, true, true),
            ([6, 10, 12], 16, 8, true, false),
        ]
        .into_iter()
        .enumerate()
        {
            let shape = ConvShape {
                c_in,
                c_out,
                size,
                kernel: [3, 3, 3],
            };
            let input = values(c_in * shape.volume(), 10 + i as u32);
            let weight = values(c_out * c_in * 27, 20 + i as u32);
            let bias = with_bias.then(|| values(c_out, 7));
            let ours = conv3d_winograd(&input, &weight, bias.as_deref(), shape, relu);
            let want = reference(&input, &weight, bias.as_deref(), shape, relu);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (j, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * scale.max(1.0),
                    "case {i} at {j}: {a} vs {b}"
                );
            }
        }
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
        let out = resize_trilinear(&input, 2, from, to);
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
