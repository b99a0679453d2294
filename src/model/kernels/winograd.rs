//! Winograd minimal filtering F(2, 3) for stride-1 "same" convolutions whose kernel is 3
//! or 1 along each axis: the 3x3x3 kernel and DiNTS's pseudo-3D ones (3x3x1 and its
//! permutations, and the 1x1x3 kind).
//!
//! Along an axis where the kernel is 3, a tile holds 2 outputs and 4 transformed points
//! (`A^T [(G g) . (B^T d)]`); along an axis where it is 1, a tile holds 1 output and the
//! transform is the identity. A tile then needs `P` products per channel pair, the product
//! of the points per axis (64 for 3x3x3, 16 for 3x3x1, 4 for 1x1x3) instead of the direct
//! sum's 216, 36 and 6 multiplications for the same outputs. The products are `P` matrix
//! products per block of tiles, `[c_out, c_in] x [c_in, tiles]`. The transforms'
//! coefficients are 0, +-1 and +-1/2, so rounding stays at the level of the direct sum
//! (checked against it in the tests).
//!
//! The padded input stores each row along the last axis split into its even and its odd
//! samples, so the transform along that axis reads contiguous runs.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{ConvShape, SharedPtr, matmul, pad_input};

/// Floats that one block's transformed input and products may take together (the block
/// then stays in this core's share of the last-level cache): 4 MiB.
const BLOCK_FLOATS: usize = 1024 * 1024;

/// The rows of `B^T` as `(p, q, sign)`: output `d[p] + sign * d[q]`.
const BT_ROWS: [(usize, usize, f32); 4] = [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];

/// Whether [`conv3d_winograd`] handles `kernel`: every side 1 or 3, at least one 3.
pub fn supports(kernel: [usize; 3]) -> bool {
    kernel.iter().all(|&k| k == 1 || k == 3) && kernel.contains(&3)
}

/// Tiling of the three axes.
#[derive(Clone, Copy, Debug)]
struct Axes {
    /// Whether the kernel is 3 (rather than 1) along each axis.
    wide: [bool; 3],
    /// Outputs per tile: 2 or 1.
    step: [usize; 3],
    /// Transformed points per tile: 4 or 1.
    alpha: [usize; 3],
    /// Tiles along each axis.
    tiles: [usize; 3],
    /// Side of the padded grid: one zero before and enough after for the last tile's 4
    /// samples along a wide axis; the plain side otherwise.
    grid: [usize; 3],
}

impl Axes {
    fn new(kernel: [usize; 3], size: [usize; 3]) -> Self {
        let wide = kernel.map(|k| k == 3);
        let step = wide.map(|w| if w { 2 } else { 1 });
        let alpha = wide.map(|w| if w { 4 } else { 1 });
        let tiles = [0, 1, 2].map(|a| size[a].div_ceil(step[a]));
        let grid = [0, 1, 2].map(|a| if wide[a] { 2 * tiles[a] + 2 } else { size[a] });
        Self {
            wide,
            step,
            alpha,
            tiles,
            grid,
        }
    }

    /// Transformed points per tile.
    fn points(&self) -> usize {
        self.alpha.iter().product()
    }
}

/// `conv(relu(input))` (or `conv(input)`) for a kernel that [`supports`] accepts.
///
/// Same shapes as [`super::conv3d_same`].
///
/// # Panics
/// If the kernel is not supported or a slice length disagrees with `shape`.
pub fn conv3d_winograd(
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
    assert!(supports(kernel), "Winograd kernel {kernel:?}");
    shape.check(input, weight, bias);
    let ax = Axes::new(kernel, size);
    let row = ax.grid[2];
    let plane = ax.grid[1] * row;
    let pad = ax.wide.map(usize::from);
    let padded = pad_input(
        input,
        shape,
        pad,
        row,
        plane,
        ax.grid[0] * plane,
        relu_input,
        ax.wide[2],
    );
    let u = transform_weights(weight, c_out, c_in, kernel);

    // Blocks: a run of tile rows (axis 1) within one tile plane (axis 0).
    let points = ax.points();
    let tiles_x = ax.tiles[2];
    let per_tile = points * (c_in + c_out);
    let rows_per_block = (BLOCK_FLOATS / per_tile / tiles_x.max(1)).clamp(1, ax.tiles[1]);
    let blocks_per_plane = ax.tiles[1].div_ceil(rows_per_block);
    let in_rows = ax.step[1] * rows_per_block + ax.alpha[1] - ax.step[1];
    let work_len = (ax.alpha[0] * ax.alpha[2] * in_rows * tiles_x)
        .max(ax.step[0] * ax.alpha[1] * ax.alpha[2] * rows_per_block * tiles_x)
        + points * rows_per_block * tiles_x;

    let volume = shape.volume();
    // Not zeroed: the output transforms write every voxel (checked after the loop).
    let mut out: Vec<f32> = Vec::with_capacity(c_out * volume);
    let dst = SharedPtr(out.as_mut_ptr());
    (0..ax.tiles[0] * blocks_per_plane)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, block| {
            let t0 = block / blocks_per_plane;
            let ty0 = (block % blocks_per_plane) * rows_per_block;
            let ty1 = (ty0 + rows_per_block).min(ax.tiles[1]);
            let tiles = [t0, ty0, ty1];
            let n = (ty1 - ty0) * tiles_x;
            scratch.resize(points * (c_in + c_out) * n + work_len, 0.0);
            let (v, rest) = scratch.split_at_mut(points * c_in * n);
            let (m, work) = rest.split_at_mut(points * c_out * n);
            for ci in 0..c_in {
                let channel = &padded[ci * ax.grid[0] * plane..][..ax.grid[0] * plane];
                let at = InputAt {
                    channel: ci,
                    channels: c_in,
                    n,
                };
                input_transform(channel, &ax, tiles, work, v, at);
            }
            for xi in 0..points {
                // SAFETY: m[xi] is `c_out x n` (row stride n), u[xi] is `c_out x c_in`
                // contiguous, v[xi] is `c_in x n` (row stride n); all inside their buffers.
                unsafe {
                    matmul(
                        [c_out, n, c_in],
                        (m.as_mut_ptr().add(xi * c_out * n), n),
                        (u.as_ptr().add(xi * c_out * c_in), c_in),
                        (v.as_ptr().add(xi * c_in * n), n),
                        false,
                        false,
                    );
                }
            }
            for co in 0..c_out {
                let b = bias.map_or(0.0, |b| b[co]);
                // SAFETY: channel co starts co * volume floats into the output's capacity.
                let channel = SharedPtr(unsafe { dst.get().add(co * volume) });
                let at = InputAt {
                    channel: co,
                    channels: c_out,
                    n,
                };
                output_transform(m, at, &ax, tiles, size, b, work, channel);
            }
        });
    // SAFETY: the blocks cover every tile plane along axis 0 and every tile row along
    // axis 1, and the output transform of a block writes each voxel of its planes and rows
    // (all columns) in every channel; `c_out * volume` is the capacity reserved above.
    unsafe { out.set_len(c_out * volume) };
    out
}

/// Where one channel's transformed values go in (or come from) a block's `[P][channels][n]`
/// buffer.
#[derive(Clone, Copy)]
struct InputAt {
    channel: usize,
    channels: usize,
    n: usize,
}

impl InputAt {
    /// Start of point `xi`'s run for this channel.
    fn offset(self, xi: usize) -> usize {
        (xi * self.channels + self.channel) * self.n
    }
}

/// `G g` along every axis where the kernel is 3 for every channel pair, laid out
/// `[P][c_out][c_in]`.
fn transform_weights(weight: &[f32], c_out: usize, c_in: usize, kernel: [usize; 3]) -> Vec<f32> {
    // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    let g = |w: [f32; 3]| -> [f32; 4] {
        [
            w[0],
            0.5 * (w[0] + w[1] + w[2]),
            0.5 * (w[0] - w[1] + w[2]),
            w[2],
        ]
    };
    let [k0, k1, k2] = kernel;
    let [d0, d1, d2] = kernel.map(|k| if k == 3 { 4 } else { 1 });
    let taps = k0 * k1 * k2;
    let points = d0 * d1 * d2;
    let mut u = vec![0f32; points * c_out * c_in];
    let dst = SharedPtr(u.as_mut_ptr());
    (0..c_out).into_par_iter().for_each(|co| {
        for ci in 0..c_in {
            let k = &weight[(co * c_in + ci) * taps..][..taps];
            // t[a][b][c], transformed in place one axis at a time (last axis first).
            let mut t = [[[0f32; 4]; 4]; 4];
            for a in 0..k0 {
                for b in 0..k1 {
                    for c in 0..k2 {
                        t[a][b][c] = k[(a * k1 + b) * k2 + c];
                    }
                }
            }
            if k2 == 3 {
                for plane in t.iter_mut().take(k0) {
                    for line in plane.iter_mut().take(k1) {
                        *line = g([line[0], line[1], line[2]]);
                    }
                }
            }
            if k1 == 3 {
                for plane in t.iter_mut().take(k0) {
                    for c in 0..d2 {
                        let col = g([plane[0][c], plane[1][c], plane[2][c]]);
                        for (line, value) in plane.iter_mut().zip(col) {
                            line[c] = value;
                        }
                    }
                }
            }
            if k0 == 3 {
                for b in 0..d1 {
                    for c in 0..d2 {
                        let col = g([t[0][b][c], t[1][b][c], t[2][b][c]]);
                        for (plane, value) in t.iter_mut().zip(col) {
                            plane[b][c] = value;
                        }
                    }
                }
            }
            for (a, plane) in t.iter().enumerate().take(d0) {
                for (b, line) in plane.iter().enumerate().take(d1) {
                    for (c, &value) in line.iter().enumerate().take(d2) {
                        let xi = (a * d1 + b) * d2 + c;
                        // SAFETY: the index is inside `u`, and only the task of output
                        // channel `co` writes the entries of `co`.
                        unsafe { *dst.get().add((xi * c_out + co) * c_in + ci) = value };
                    }
                }
            }
        }
    });
    u
}

/// Transforms one channel of the block's tiles (`tiles` = `[t0, ty0, ty1]`: plane `t0`,
/// rows `ty0..ty1`, all columns) into `v[xi][channel][tile]`. One pass per axis where the
/// kernel is 3: the first reads the padded channel, the last writes into `v`, and axes
/// without a transform cost no pass.
fn input_transform(
    channel: &[f32],
    ax: &Axes,
    [t0, ty0, ty1]: [usize; 3],
    work: &mut [f32],
    v: &mut [f32],
    at: InputAt,
) {
    let [a0, a1, a2] = ax.alpha;
    let [s0, s1, _] = ax.step;
    let [wide0, wide1, wide2] = ax.wide;
    let tx = ax.tiles[2];
    let row = ax.grid[2];
    let plane = ax.grid[1] * row;
    let nty = ty1 - ty0;
    let len = nty * tx;
    // Input rows of the block along axis 1 (with their overlap).
    let rows = s1 * nty + a1 - s1;
    let (xs, ys) = work.split_at_mut(a0 * a2 * rows * tx);
    let channel_row = |a: usize, r: usize| (s0 * t0 + a) * plane + (s1 * ty0 + r) * row;

    // Axis 2: xs[a][c][r][tx], or straight into v when no other axis has a transform
    // (then a0 = 1 and the rows are the tile rows).
    if wide2 {
        let last = !wide1 && !wide0;
        for a in 0..a0 {
            for r in 0..rows {
                // The row is split: even samples e, then odd samples o, `tx + 1` each.
                let (e, o) = channel[channel_row(a, r)..][..row].split_at(row / 2);
                let (e0, e1, o0, o1) = (&e[..tx], &e[1..=tx], &o[..tx], &o[1..=tx]);
                let runs = [
                    (e0, e1, -1.0),
                    (o0, e1, 1.0),
                    (e1, o0, -1.0),
                    (o0, o1, -1.0),
                ];
                for (c, (p, q, sign)) in runs.into_iter().enumerate() {
                    let out = if last {
                        &mut v[at.offset(c) + r * tx..][..tx]
                    } else {
                        &mut xs[((a * a2 + c) * rows + r) * tx..][..tx]
                    };
                    combine(p, q, sign, out);
                }
            }
        }
    }
    // The run of `count` rows from row r of (a, c) after the axis-2 pass (contiguous: rows
    // of an axis without a transform are exactly `tx` long in the padded grid).
    let x_rows = |a: usize, c: usize, r: usize, count: usize| -> &[f32] {
        if wide2 {
            &xs[((a * a2 + c) * rows + r) * tx..][..count * tx]
        } else {
            &channel[channel_row(a, r)..][..count * tx]
        }
    };

    if wide1 && wide0 {
        // Axes 1 and 0 together, one tile row at a time: the four axis-1 results of a row
        // (one per plane a) stay in a few cache lines of `ys` until axis 0 combines them
        // into v, instead of a block-sized intermediate making a round trip through memory.
        let tmp = &mut ys[..4 * tx];
        for b in 0..4 {
            let (pb, qb, sign_b) = BT_ROWS[b];
            for c in 0..a2 {
                for ty in 0..nty {
                    for a in 0..4 {
                        let src = |r: usize| x_rows(a, c, 2 * ty + r, 1);
                        combine(src(pb), src(qb), sign_b, &mut tmp[a * tx..][..tx]);
                    }
                    for (a, (p, q, sign)) in BT_ROWS.into_iter().enumerate() {
                        let out = &mut v[at.offset((a * 4 + b) * a2 + c) + ty * tx..][..tx];
                        combine(&tmp[p * tx..][..tx], &tmp[q * tx..][..tx], sign, out);
                    }
                }
            }
        }
    } else if wide1 {
        // Axis 1 only, straight into v (axis 0 has no transform, a0 = 1).
        for c in 0..a2 {
            for ty in 0..nty {
                let src = |r: usize| x_rows(0, c, 2 * ty + r, 1);
                for (b, (p, q, sign)) in BT_ROWS.into_iter().enumerate() {
                    let out = &mut v[at.offset(b * a2 + c) + ty * tx..][..tx];
                    combine(src(p), src(q), sign, out);
                }
            }
        }
    } else if wide0 {
        // Axis 0 only (axis 1 has no transform: its rows are the tile rows), into v.
        for c in 0..a2 {
            for (a, (p, q, sign)) in BT_ROWS.into_iter().enumerate() {
                let out = &mut v[at.offset(a * a2 + c)..][..len];
                combine(x_rows(p, c, 0, nty), x_rows(q, c, 0, nty), sign, out);
            }
        }
    } else if !wide2 {
        unreachable!("a kernel of ones has no Winograd form");
    }
}

/// `out = a + sign * b`, element-wise.
#[inline(always)]
fn combine(a: &[f32], b: &[f32], sign: f32, out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a + sign * b;
    }
}

/// The two rows of `A^T` applied to four runs: `m0 + m1 + m2` into `first` and
/// `m1 - m2 - m3` into `second`.
#[inline(always)]
fn at_rows(m: [&[f32]; 4], first: &mut [f32], second: &mut [f32]) {
    for (i, (f, s)) in first.iter_mut().zip(second.iter_mut()).enumerate() {
        let (m0, m1, m2, m3) = (m[0][i], m[1][i], m[2][i], m[3][i]);
        *f = m0 + m1 + m2;
        *s = m1 - m2 - m3;
    }
}

/// Writes one output channel of the block's tiles from the products `m[xi][channel][tile]`,
/// plus `bias`, into the channel that starts at `out` (`[size]` floats, possibly
/// uninitialised), dropping outputs past an odd side. Only the block's own rows are touched:
/// other blocks write the rest of the channel at the same time.
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    at: InputAt,
    ax: &Axes,
    [t0, ty0, ty1]: [usize; 3],
    size: [usize; 3],
    bias: f32,
    work: &mut [f32],
    out: SharedPtr,
) {
    let [_, a1, a2] = ax.alpha;
    let [s0, s1, _] = ax.step;
    let n = at.n;
    let tx = ax.tiles[2];
    let product = |xi: usize| &m[at.offset(xi)..][..n];
    // Along axis 0: zs[i][b][c][tile]; without a transform there it is m itself.
    let (zs_buf, ys_buf) = work.split_at_mut(s0 * a1 * a2 * n);
    if ax.wide[0] {
        for b in 0..a1 {
            for c in 0..a2 {
                let xi = |a: usize| (a * a1 + b) * a2 + c;
                let (first, second) = zs_buf.split_at_mut(a1 * a2 * n);
                at_rows(
                    [0, 1, 2, 3].map(|a| product(xi(a))),
                    &mut first[(b * a2 + c) * n..][..n],
                    &mut second[(b * a2 + c) * n..][..n],
                );
            }
        }
    }
    let zs = |i: usize, b: usize, c: usize| -> &[f32] {
        if ax.wide[0] {
            &zs_buf[((i * a1 + b) * a2 + c) * n..][..n]
        } else {
            product(b * a2 + c)
        }
    };
    // Along axis 1: ys[i][j][c][tile].
    if ax.wide[1] {
        for i in 0..s0 {
            for c in 0..a2 {
                let (first, second) = ys_buf[i * 2 * a2 * n..].split_at_mut(a2 * n);
                at_rows(
                    [0, 1, 2, 3].map(|b| zs(i, b, c)),
                    &mut first[c * n..][..n],
                    &mut second[c * n..][..n],
                );
            }
        }
    }
    let ys = |i: usize, j: usize, c: usize| -> &[f32] {
        if ax.wide[1] {
            &ys_buf[((i * 2 + j) * a2 + c) * n..][..n]
        } else {
            zs(i, 0, c)
        }
    };
    // Along axis 2, into the output rows.
    for i in 0..s0 {
        let z = s0 * t0 + i;
        if z >= size[0] {
            continue;
        }
        for j in 0..s1 {
            for ty in 0..ty1 - ty0 {
                let y = s1 * (ty0 + ty) + j;
                if y >= size[1] {
                    continue;
                }
                // SAFETY: row (z, y) lies inside the channel and belongs to this block's
                // tiles, which no other block writes; the floats may be uninitialised, hence
                // MaybeUninit.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        out.get()
                            .add((z * size[1] + y) * size[2])
                            .cast::<MaybeUninit<f32>>(),
                        size[2],
                    )
                };
                let run = |c: usize| &ys(i, j, c)[ty * tx..][..tx];
                if ax.wide[2] {
                    let (m0, m1, m2, m3) = (run(0), run(1), run(2), run(3));
                    let mut pairs = dst.chunks_exact_mut(2);
                    for (t, pair) in (&mut pairs).enumerate() {
                        pair[0].write(m0[t] + m1[t] + m2[t] + bias);
                        pair[1].write(m1[t] - m2[t] - m3[t] + bias);
                    }
                    if let [last] = pairs.into_remainder() {
                        let t = size[2] / 2;
                        last.write(m0[t] + m1[t] + m2[t] + bias);
                    }
                } else {
                    for (d, &s) in dst.iter_mut().zip(run(0)) {
                        d.write(s + bias);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_against_reference;
    use super::*;

    #[test]
    fn winograd_matches_a_direct_loop_for_every_kernel_and_side() {
        let cases = [
            ([3, 3, 3], [4, 6, 8], 3, 5, true, false),
            ([3, 3, 3], [5, 3, 7], 4, 2, false, true),
            ([3, 3, 3], [1, 2, 1], 2, 3, true, true),
            ([3, 3, 3], [6, 10, 12], 16, 8, true, false),
            ([3, 3, 1], [5, 4, 3], 3, 4, true, true),
            ([3, 1, 3], [4, 5, 7], 5, 3, false, false),
            ([1, 3, 3], [3, 7, 6], 4, 4, true, false),
            ([1, 1, 3], [3, 4, 9], 3, 2, true, true),
            ([1, 3, 1], [2, 5, 3], 2, 3, false, false),
            ([3, 1, 1], [7, 2, 2], 6, 5, true, false),
            ([1, 3, 3], [1, 1, 1], 2, 2, true, true),
        ];
        check_against_reference(&cases, 10, conv3d_winograd);
    }
}
