//! Resampling voxel grids along their axes (no rotation), in pure Rust.
//!
//! A [`GridMap`] says where each output voxel samples the input: along axis `a`, output voxel
//! `i` reads input position `p = scale[a] * i + offset[a]` (in input voxel units). Positions
//! outside `[0, n - 1]` are clamped to the edge. Linear interpolation is done as three
//! separable 1-D passes, one per axis, which equals trilinear interpolation; shrinking axes go
//! first to keep the intermediate arrays small. Nearest neighbour is a single gather. Work is
//! split over the CPU cores with `std::thread::scope` when the arrays are large. Axes whose
//! mapping is the identity are skipped, so an identity map returns the input bit for bit (NaN
//! included).
//!
//! Conventions are expressed through `scale` and `offset`:
//! * voxel centres of the first voxels aligned (this module's "spacing" convention, used by
//!   [`spacing_map`]): `offset = 0`, `scale = new_spacing / old_spacing`;
//! * corners aligned (`align_corners = true` in PyTorch): [`GridMap::align_corners`];
//! * grid extents aligned, half-voxel centres (PyTorch `align_corners = false`, MONAI's
//!   `Resize`): [`GridMap::half_voxel`].

use std::borrow::Cow;

use super::Affine;
use super::geometry::affine_mul;

/// Interpolation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interp {
    /// Trilinear, with edge clamping.
    #[default]
    Linear,
    /// Nearest neighbour (positions rounded half away from zero), for label maps.
    Nearest,
}

/// An axis-aligned mapping from an output grid to an input grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridMap {
    /// Input dimensions (x, y, z).
    pub in_dims: [usize; 3],
    /// Output dimensions (x, y, z).
    pub out_dims: [usize; 3],
    /// Input voxels per output voxel, per axis.
    pub scale: [f64; 3],
    /// Input position of output voxel 0, per axis.
    pub offset: [f64; 3],
}

impl GridMap {
    /// A mapping from explicit parts.
    pub fn new(
        in_dims: [usize; 3],
        out_dims: [usize; 3],
        scale: [f64; 3],
        offset: [f64; 3],
    ) -> Self {
        Self {
            in_dims,
            out_dims,
            scale,
            offset,
        }
    }

    /// The mapping that changes nothing.
    pub fn identity(dims: [usize; 3]) -> Self {
        Self::new(dims, dims, [1.0; 3], [0.0; 3])
    }

    /// First and last voxel centres of both grids coincide (PyTorch `align_corners = true`).
    /// An output axis of size 1 samples the input centre.
    pub fn align_corners(in_dims: [usize; 3], out_dims: [usize; 3]) -> Self {
        let mut scale = [1.0; 3];
        let mut offset = [0.0; 3];
        for a in 0..3 {
            let last_in = in_dims[a].saturating_sub(1) as f64;
            if out_dims[a] > 1 {
                scale[a] = last_in / (out_dims[a] - 1) as f64;
            } else {
                scale[a] = 0.0;
                offset[a] = last_in / 2.0;
            }
        }
        Self::new(in_dims, out_dims, scale, offset)
    }

    /// Outer edges of both grids coincide and voxel centres sit half a voxel inside
    /// (PyTorch `align_corners = false`, as used by MONAI's `Resize`).
    pub fn half_voxel(in_dims: [usize; 3], out_dims: [usize; 3]) -> Self {
        let mut scale = [1.0; 3];
        let mut offset = [0.0; 3];
        for a in 0..3 {
            scale[a] = in_dims[a] as f64 / out_dims[a].max(1) as f64;
            offset[a] = 0.5 * scale[a] - 0.5;
        }
        Self::new(in_dims, out_dims, scale, offset)
    }

    /// The mapping in the other direction (from the input grid back to the output grid):
    /// dimensions swapped, `scale' = 1 / scale`, `offset' = -offset / scale`. An axis with
    /// scale 0 maps everything to position 0.
    pub fn inverse(&self) -> Self {
        let mut scale = [0.0; 3];
        let mut offset = [0.0; 3];
        for a in 0..3 {
            if self.scale[a] != 0.0 && self.scale[a].is_finite() {
                scale[a] = 1.0 / self.scale[a];
                offset[a] = -self.offset[a] / self.scale[a];
            }
        }
        Self::new(self.out_dims, self.in_dims, scale, offset)
    }

    /// Whether this mapping leaves every axis unchanged.
    pub fn is_identity(&self) -> bool {
        self.in_dims == self.out_dims && self.scale == [1.0; 3] && self.offset == [0.0; 3]
    }

    /// `world_from_out_voxel` given the input grid's `world_from_in_voxel`.
    pub fn world_from_out(&self, world_from_in: &Affine) -> Affine {
        let mut in_from_out = [[0.0; 4]; 4];
        for (a, row) in in_from_out.iter_mut().enumerate().take(3) {
            row[a] = self.scale[a];
            row[3] = self.offset[a];
        }
        in_from_out[3][3] = 1.0;
        affine_mul(world_from_in, &in_from_out)
    }

    /// Resamples `data` (dims `in_dims`, x fastest) with this mapping.
    ///
    /// # Panics
    ///
    /// As [`resample`].
    pub fn apply(&self, data: &[f32], interp: Interp) -> Vec<f32> {
        resample(
            data,
            self.in_dims,
            self.out_dims,
            self.scale,
            self.offset,
            interp,
        )
    }

    /// Nearest-neighbour resampling of any voxel type (e.g. `u16` labels).
    ///
    /// # Panics
    ///
    /// As [`resample`].
    pub fn apply_nearest<T: Copy + Send + Sync>(&self, data: &[T]) -> Vec<T> {
        resample_nearest(data, self.in_dims, self.out_dims, self.scale, self.offset)
    }
}

/// Resampling to a target voxel size, with the way back to the original grid.
///
/// Forward: output voxel `i` samples input position `scale * i + offset` with
/// `scale = target / spacing` and `offset = 0` (the centre of voxel 0 stays where it is).
/// Inverse: input voxel `j` samples output position `inverse_scale * j + inverse_offset`,
/// which gives back exactly `in_dims`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpacingMap {
    /// Dimensions of the original grid.
    pub in_dims: [usize; 3],
    /// Dimensions of the resampled grid: `max(1, round(in_dims * spacing / target))`.
    pub out_dims: [usize; 3],
    /// Voxel size of the original grid (mm).
    pub in_spacing: [f64; 3],
    /// Voxel size of the resampled grid (mm): the target.
    pub out_spacing: [f64; 3],
    /// Forward scale (original voxels per resampled voxel).
    pub scale: [f64; 3],
    /// Forward offset (original-grid position of resampled voxel 0).
    pub offset: [f64; 3],
    /// Inverse scale (resampled voxels per original voxel).
    pub inverse_scale: [f64; 3],
    /// Inverse offset (resampled-grid position of original voxel 0).
    pub inverse_offset: [f64; 3],
}

impl SpacingMap {
    /// The forward mapping (original grid -> resampled grid).
    pub fn forward(&self) -> GridMap {
        GridMap::new(self.in_dims, self.out_dims, self.scale, self.offset)
    }

    /// The inverse mapping (resampled grid -> original grid, giving `in_dims` back).
    pub fn inverse(&self) -> GridMap {
        GridMap::new(
            self.out_dims,
            self.in_dims,
            self.inverse_scale,
            self.inverse_offset,
        )
    }
}

/// Plans resampling a grid of `dims` with voxel size `spacing` to voxel size `target`.
///
/// Target or spacing values that are not finite and positive are replaced (a bad target by
/// the spacing, i.e. no change on that axis; a bad spacing by 1).
pub fn spacing_map(dims: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> SpacingMap {
    let good = |v: f64| v.is_finite() && v > 0.0;
    let in_spacing = spacing.map(|s| if good(s) { s } else { 1.0 });
    let mut out_spacing = [0.0; 3];
    let mut out_dims = [1; 3];
    let mut scale = [1.0; 3];
    let mut inverse_scale = [1.0; 3];
    for a in 0..3 {
        out_spacing[a] = if good(target[a]) {
            target[a]
        } else {
            in_spacing[a]
        };
        let extent = dims[a] as f64 * in_spacing[a] / out_spacing[a];
        out_dims[a] = (extent.round() as usize).max(1);
        scale[a] = out_spacing[a] / in_spacing[a];
        inverse_scale[a] = in_spacing[a] / out_spacing[a];
    }
    SpacingMap {
        in_dims: dims,
        out_dims,
        in_spacing,
        out_spacing,
        scale,
        offset: [0.0; 3],
        inverse_scale,
        inverse_offset: [0.0; 3],
    }
}

/// Resample a volume (x fastest) to `out_dims`. Output voxel `i` along axis `a` samples input
/// position `p = scale[a] * i + offset[a]` (in input voxel units). Linear: trilinear with edge
/// clamping (positions outside `[0, n - 1]` clamp). Nearest: round half away from zero,
/// clamped.
/// A NaN position counts as 0.
///
/// # Panics
///
/// If `data.len()` is not the product of `dims`, or an input axis is empty while the output
/// is not (caller bugs).
pub fn resample(
    data: &[f32],
    dims: [usize; 3],
    out_dims: [usize; 3],
    scale: [f64; 3],
    offset: [f64; 3],
    interp: Interp,
) -> Vec<f32> {
    match interp {
        Interp::Nearest => resample_nearest(data, dims, out_dims, scale, offset),
        Interp::Linear => resample_linear(data, dims, out_dims, scale, offset),
    }
}

/// Nearest-neighbour resampling of any voxel type; same mapping rules as [`resample`].
///
/// # Panics
///
/// As [`resample`].
pub fn resample_nearest<T: Copy + Send + Sync>(
    data: &[T],
    dims: [usize; 3],
    out_dims: [usize; 3],
    scale: [f64; 3],
    offset: [f64; 3],
) -> Vec<T> {
    check_sizes(data.len(), dims, out_dims);
    let total = out_dims[0] * out_dims[1] * out_dims[2];
    let Some(&first) = data.first() else {
        return Vec::new();
    };
    if total == 0 {
        return Vec::new();
    }
    let index = |a: usize| -> Vec<usize> {
        (0..out_dims[a])
            .map(|i| position(scale[a], offset[a], i, dims[a]).round() as usize)
            .collect()
    };
    let (ix, iy, iz) = (index(0), index(1), index(2));
    let (nx, ny) = (dims[0], dims[1]);
    let (ox, oy) = (out_dims[0], out_dims[1]);
    let mut out = vec![first; total];
    for_each_unit(&mut out, ox, |first_row, rows| {
        for (r, row) in rows.chunks_exact_mut(ox).enumerate() {
            let u = first_row + r;
            let src = (iz[u / oy] * ny + iy[u % oy]) * nx;
            let src_row = &data[src..src + nx];
            for (v, &i) in row.iter_mut().zip(&ix) {
                *v = src_row[i];
            }
        }
    });
    out
}

/// One linear-interpolation tap: `out = in[i0] + (in[i1] - in[i0]) * w`.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

impl Tap {
    #[inline]
    fn mix(&self, a: f32, b: f32) -> f32 {
        if self.w == 0.0 {
            a
        } else {
            a + (b - a) * self.w
        }
    }
}

/// Taps for one axis; `None` when the axis mapping is the identity.
fn taps(n_in: usize, n_out: usize, scale: f64, offset: f64) -> Option<Vec<Tap>> {
    if n_in == n_out && scale == 1.0 && offset == 0.0 {
        return None;
    }
    Some(
        (0..n_out)
            .map(|i| {
                let p = position(scale, offset, i, n_in);
                let base = p.floor();
                let i0 = base as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                let w = if i1 == i0 { 0.0 } else { (p - base) as f32 };
                Tap { i0, i1, w }
            })
            .collect(),
    )
}

fn resample_linear(
    data: &[f32],
    dims: [usize; 3],
    out_dims: [usize; 3],
    scale: [f64; 3],
    offset: [f64; 3],
) -> Vec<f32> {
    check_sizes(data.len(), dims, out_dims);
    if out_dims.contains(&0) {
        return Vec::new();
    }
    let mut current: Cow<'_, [f32]> = Cow::Borrowed(data);
    let mut shape = dims;
    // Shrinking axes first, growing ones last: this keeps the intermediate arrays as small as
    // possible (the passes commute up to float rounding).
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| {
        let ratio = |i: usize| out_dims[i] as f64 / dims[i] as f64;
        ratio(a).total_cmp(&ratio(b))
    });
    for axis in order {
        let Some(t) = taps(dims[axis], out_dims[axis], scale[axis], offset[axis]) else {
            continue;
        };
        let out = match axis {
            0 => blend_along_rows(&current, shape[0], &t),
            // Within each z plane, whole rows (length x) are blended.
            1 => blend_blocks(&current, shape[2], shape[1], shape[0], &t),
            // Whole planes (x * y) are blended.
            _ => blend_blocks(&current, 1, shape[2], shape[0] * shape[1], &t),
        };
        current = Cow::Owned(out);
        shape[axis] = out_dims[axis];
    }
    current.into_owned()
}

/// Interpolates along x: each input row of `nx` values becomes a row of `taps.len()` values.
fn blend_along_rows(input: &[f32], nx: usize, taps: &[Tap]) -> Vec<f32> {
    let ox = taps.len();
    let rows = input.len() / nx;
    let mut out = vec![0.0f32; rows * ox];
    for_each_unit(&mut out, ox, |first_row, chunk| {
        for (r, row) in chunk.chunks_exact_mut(ox).enumerate() {
            let s = (first_row + r) * nx;
            let src_row = &input[s..s + nx];
            for (v, tap) in row.iter_mut().zip(taps) {
                *v = tap.mix(src_row[tap.i0], src_row[tap.i1]);
            }
        }
    });
    out
}

/// Blends contiguous blocks: the input is `outer` groups of `n_in` blocks of `block` values;
/// the output is `outer` groups of `taps.len()` blocks.
fn blend_blocks(input: &[f32], outer: usize, n_in: usize, block: usize, taps: &[Tap]) -> Vec<f32> {
    let n_out = taps.len();
    let mut out = vec![0.0f32; outer * n_out * block];
    for_each_unit(&mut out, block, |first_block, chunk| {
        for (b, dst) in chunk.chunks_exact_mut(block).enumerate() {
            let u = first_block + b;
            let (group, tap) = (u / n_out, taps[u % n_out]);
            let a0 = (group * n_in + tap.i0) * block;
            let src0 = &input[a0..a0 + block];
            if tap.w == 0.0 {
                dst.copy_from_slice(src0);
            } else {
                let a1 = (group * n_in + tap.i1) * block;
                let src1 = &input[a1..a1 + block];
                let w = tap.w;
                for ((v, &x0), &x1) in dst.iter_mut().zip(src0).zip(src1) {
                    *v = x0 + (x1 - x0) * w;
                }
            }
        }
    });
    out
}

/// Input position of output voxel `i`, clamped to `[0, n_in - 1]` (NaN becomes 0).
#[inline]
fn position(scale: f64, offset: f64, i: usize, n_in: usize) -> f64 {
    let p = scale * i as f64 + offset;
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, n_in.saturating_sub(1) as f64)
    }
}

fn check_sizes(len: usize, dims: [usize; 3], out_dims: [usize; 3]) {
    let total = dims[0] * dims[1] * dims[2];
    assert_eq!(
        len, total,
        "resample: data has {len} values but dims {dims:?} need {total}"
    );
    let out_total = out_dims[0] * out_dims[1] * out_dims[2];
    assert!(
        total > 0 || out_total == 0,
        "resample: cannot fill {out_dims:?} from an empty input {dims:?}"
    );
}

/// Below this many output values per thread, splitting is not worth it.
const MIN_VALUES_PER_THREAD: usize = 1 << 16;

/// Runs `f(first_unit, chunk)` over `out`, cut into whole units of `unit` values, on several
/// threads when `out` is large. `chunk` holds consecutive units starting at `first_unit`.
fn for_each_unit<T: Send>(out: &mut [T], unit: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.is_empty() || unit == 0 {
        return;
    }
    let units = out.len() / unit;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores
        .min(units)
        .min(out.len() / MIN_VALUES_PER_THREAD)
        .max(1);
    if threads == 1 {
        f(0, out);
        return;
    }
    let per_thread = units.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(per_thread * unit).enumerate() {
            s.spawn(move || f(t * per_thread, chunk));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: [usize; 3]) -> Vec<f32> {
        let mut v = Vec::new();
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    v.push((x + 10 * y + 100 * z) as f32);
                }
            }
        }
        v
    }

    #[test]
    fn identity_returns_input_bit_for_bit() {
        let dims = [5, 4, 3];
        let mut data = ramp(dims);
        data[7] = f32::NAN;
        for interp in [Interp::Linear, Interp::Nearest] {
            let out = GridMap::identity(dims).apply(&data, interp);
            let same = out
                .iter()
                .zip(&data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{interp:?}");
        }
    }

    #[test]
    fn linear_is_exact_on_a_ramp() {
        let dims = [6, 5, 4];
        let data = ramp(dims);
        let scale = [0.4, 0.7, 0.5];
        let offset = [0.3, 0.1, 0.25];
        let out_dims = [12, 6, 6];
        let out = resample(&data, dims, out_dims, scale, offset, Interp::Linear);
        for z in 0..out_dims[2] {
            for y in 0..out_dims[1] {
                for x in 0..out_dims[0] {
                    let p = [0, 1, 2].map(|a| {
                        let i = [x, y, z][a] as f64;
                        (scale[a] * i + offset[a]).clamp(0.0, (dims[a] - 1) as f64)
                    });
                    let expected = p[0] + 10.0 * p[1] + 100.0 * p[2];
                    let got = out[x + out_dims[0] * (y + out_dims[1] * z)];
                    assert!(
                        (f64::from(got) - expected).abs() < 1e-4,
                        "{got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn nearest_keeps_label_values_and_rounds_half_away_from_zero() {
        let labels: Vec<u16> = vec![0, 7, 300, 7];
        let out = resample_nearest(&labels, [4, 1, 1], [8, 1, 1], [0.5, 1.0, 1.0], [0.0; 3]);
        assert_eq!(out, vec![0, 7, 7, 300, 300, 7, 7, 7]);
        let as_f32: Vec<f32> = labels.iter().map(|&v| f32::from(v)).collect();
        let out = resample(
            &as_f32,
            [4, 1, 1],
            [3, 1, 1],
            [1.5, 1.0, 1.0],
            [0.0; 3],
            Interp::Nearest,
        );
        assert_eq!(out, vec![0.0, 300.0, 7.0]);
    }

    #[test]
    fn spacing_map_round_trip_restores_dims() {
        let m = spacing_map([512, 512, 300], [0.7, 0.7, 2.5], [1.5, 1.5, 1.5]);
        assert_eq!(m.out_dims, [239, 239, 500]);
        assert_eq!(m.inverse().out_dims, [512, 512, 300]);
        assert_eq!(m.inverse().in_dims, m.out_dims);
        let tiny = spacing_map([3, 1, 2], [1.0, 1.0, 1.0], [100.0, f64::NAN, -1.0]);
        assert_eq!(tiny.out_dims, [1, 1, 2]);
        // Going there and back on a smooth signal stays close; a constant stays exact.
        let dims = [20, 18, 10];
        let m = spacing_map(dims, [1.0, 1.0, 2.0], [0.5, 1.5, 1.0]);
        let constant = vec![3.25f32; 20 * 18 * 10];
        let there = m.forward().apply(&constant, Interp::Linear);
        let back = m.inverse().apply(&there, Interp::Linear);
        assert_eq!(back.len(), constant.len());
        assert!(back.iter().all(|&v| v == 3.25));
    }

    #[test]
    fn grid_map_inverse_and_world_affine() {
        let g = GridMap::new([10, 10, 10], [5, 20, 10], [2.0, 0.5, 1.0], [0.5, 0.0, 0.0]);
        let inv = g.inverse();
        assert_eq!(inv.scale, [0.5, 2.0, 1.0]);
        assert_eq!(inv.offset, [-0.25, 0.0, 0.0]);
        let world = [
            [2.0, 0.0, 0.0, 10.0],
            [0.0, 3.0, 0.0, 20.0],
            [0.0, 0.0, 4.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let w = g.world_from_out(&world);
        assert_eq!(w[0], [4.0, 0.0, 0.0, 11.0]);
        assert_eq!(w[1], [0.0, 1.5, 0.0, 20.0]);
        let h = GridMap::half_voxel([4, 4, 4], [2, 8, 4]);
        assert_eq!(h.scale[0], 2.0);
        assert_eq!(h.offset[0], 0.5);
        assert_eq!(h.offset[1], -0.25);
        assert!(GridMap::identity([3, 3, 3]).is_identity());
    }

    #[test]
    fn threaded_and_serial_results_agree() {
        // Big enough to be split across threads.
        let dims = [97, 83, 41];
        let data: Vec<f32> = (0..dims[0] * dims[1] * dims[2])
            .map(|i| ((i * 7919) % 1000) as f32)
            .collect();
        let out_dims = [64, 120, 30];
        let scale = [1.5, 0.69, 1.37];
        let out = resample(&data, dims, out_dims, scale, [0.0; 3], Interp::Linear);
        let mut serial = Vec::with_capacity(out.len());
        for z in 0..out_dims[2] {
            for y in 0..out_dims[1] {
                for x in 0..out_dims[0] {
                    serial.push(trilinear_reference(&data, dims, [x, y, z], scale));
                }
            }
        }
        for (a, b) in out.iter().zip(&serial) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    /// Straightforward trilinear interpolation, for comparison.
    fn trilinear_reference(data: &[f32], dims: [usize; 3], at: [usize; 3], scale: [f64; 3]) -> f32 {
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        let mut w = [0.0f64; 3];
        for a in 0..3 {
            let p = (scale[a] * at[a] as f64).clamp(0.0, (dims[a] - 1) as f64);
            lo[a] = p.floor() as usize;
            hi[a] = (lo[a] + 1).min(dims[a] - 1);
            w[a] = p - p.floor();
        }
        let at = |x: usize, y: usize, z: usize| f64::from(data[x + dims[0] * (y + dims[1] * z)]);
        let mut sum = 0.0;
        for (cz, wz) in [(lo[2], 1.0 - w[2]), (hi[2], w[2])] {
            for (cy, wy) in [(lo[1], 1.0 - w[1]), (hi[1], w[1])] {
                for (cx, wx) in [(lo[0], 1.0 - w[0]), (hi[0], w[0])] {
                    sum += wx * wy * wz * at(cx, cy, cz);
                }
            }
        }
        sum as f32
    }
}
