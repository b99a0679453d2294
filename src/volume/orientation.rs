//! Reorienting voxel arrays to the closest canonical RAS order and back, exactly.
//!
//! An [`Orientation`] only permutes and reverses voxel axes: no value is interpolated, so
//! going to RAS order and back gives the same array bit for bit. The axis choice mirrors
//! nibabel's `io_orientation`: the 3x3 part of `world_from_voxel` has its columns normalised
//! and is replaced by its nearest orthogonal matrix (polar decomposition, which removes shear),
//! then each voxel axis is matched with the world axis it points along. Instead of nibabel's
//! greedy column-by-column pick, the six possible axis matchings are all scored and the best
//! one taken, so the result is always a permutation even for 45-degree or sheared grids (for
//! ordinary grids both give the same answer); ties go to the unpermuted order.

use super::Affine;
use super::geometry::{det3, inverse3, linear_part};

/// How to go from stored voxel order to RAS voxel order: for each RAS output axis, which
/// stored axis feeds it and whether it is flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Orientation {
    /// `perm[r]` is the stored axis that becomes RAS axis `r` (0 = R, 1 = A, 2 = S).
    pub perm: [usize; 3],
    /// `flip[r]` is true when the stored axis `perm[r]` runs towards L, P or I, so that it has
    /// to be reversed to run towards R, A or S.
    pub flip: [bool; 3],
}

/// The six permutations of three axes, identity first (it wins ties).
const PERMUTATIONS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// Finds the voxel-axis permutation and flips that bring a grid closest to RAS.
///
/// Works for any affine: with singular or non-finite matrices the result is still a valid
/// permutation (degenerate axes keep their order).
pub fn closest_ras(world_from_voxel: &Affine) -> Orientation {
    let mut m = linear_part(world_from_voxel);
    // Normalise columns so that voxel size does not bias the choice.
    for c in 0..3 {
        let norm = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            for row in &mut m {
                row[c] /= norm;
            }
        }
    }
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return Orientation::IDENTITY;
    }
    let rotation = nearest_orthogonal(&m).unwrap_or(m);
    // world_of_voxel[i]: the world axis that voxel axis i is matched with.
    let mut best = PERMUTATIONS[0];
    let mut best_score = f64::NEG_INFINITY;
    for world_of_voxel in PERMUTATIONS {
        let score: f64 = (0..3).map(|i| rotation[world_of_voxel[i]][i].abs()).sum();
        if score > best_score {
            best_score = score;
            best = world_of_voxel;
        }
    }
    let mut perm = [0; 3];
    let mut flip = [false; 3];
    for (voxel_axis, &world_axis) in best.iter().enumerate() {
        perm[world_axis] = voxel_axis;
        flip[world_axis] = rotation[world_axis][voxel_axis] < 0.0;
    }
    Orientation { perm, flip }
}

/// The orthogonal polar factor of `m` (Newton iteration `Q <- (Q + Q^-T) / 2`); `None` when
/// `m` is singular or the iteration does not settle.
fn nearest_orthogonal(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    if det3(m).abs() < 1e-12 {
        return None;
    }
    let mut q = *m;
    for _ in 0..100 {
        let inv = inverse3(&q)?;
        let mut next = q;
        let mut change: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (q[r][c] + inv[c][r]);
                change = change.max((next[r][c] - q[r][c]).abs());
            }
        }
        q = next;
        if change < 1e-14 {
            return Some(q);
        }
    }
    q.iter().flatten().all(|v| v.is_finite()).then_some(q)
}

impl Orientation {
    /// Stored order is already RAS.
    pub const IDENTITY: Orientation = Orientation {
        perm: [0, 1, 2],
        flip: [false; 3],
    };

    /// Whether this orientation changes nothing.
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }

    /// Dimensions in RAS order of a grid with stored dimensions `stored_dims`.
    pub fn ras_dims(&self, stored_dims: [usize; 3]) -> [usize; 3] {
        self.perm.map(|axis| stored_dims[axis])
    }

    /// The orientation that undoes this one (maps RAS order back to stored order).
    pub fn inverse(&self) -> Orientation {
        let mut perm = [0; 3];
        let mut flip = [false; 3];
        for r in 0..3 {
            perm[self.perm[r]] = r;
            flip[self.perm[r]] = self.flip[r];
        }
        Orientation { perm, flip }
    }

    /// The voxel transform `stored_from_ras`: maps RAS voxel indices to stored voxel indices,
    /// for a grid with stored dimensions `stored_dims`. Then
    /// `world_from_ras = world_from_stored * stored_from_ras`.
    pub fn stored_from_ras(&self, stored_dims: [usize; 3]) -> Affine {
        let mut m = [[0.0; 4]; 4];
        m[3][3] = 1.0;
        for r in 0..3 {
            let s = self.perm[r];
            if self.flip[r] {
                m[s][r] = -1.0;
                m[s][3] = stored_dims[s].saturating_sub(1) as f64;
            } else {
                m[s][r] = 1.0;
            }
        }
        m
    }

    /// The stored orientation as axis codes: for each stored axis, the direction it runs
    /// towards (R/L, A/P, S/I), e.g. "LPS", "AIL", "RAS".
    pub fn code(&self) -> String {
        const TOWARDS: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['S', 'I']];
        let mut code = ['?'; 3];
        for r in 0..3 {
            code[self.perm[r]] = TOWARDS[r][usize::from(self.flip[r])];
        }
        code.iter().collect()
    }

    /// Reorders a per-voxel array (x fastest) from stored order to RAS order; returns it with
    /// its RAS dimensions.
    ///
    /// # Panics
    ///
    /// If `stored.len()` is not the product of `stored_dims` (a caller bug).
    pub fn to_ras<T: Copy>(&self, stored: &[T], stored_dims: [usize; 3]) -> (Vec<T>, [usize; 3]) {
        let ras_dims = self.ras_dims(stored_dims);
        (reorder(self, stored, stored_dims), ras_dims)
    }

    /// Maps a per-voxel array (e.g. a label map or one channel) from RAS order back to the
    /// stored order of a volume with stored dimensions `stored_dims`. Exact inverse of
    /// [`Orientation::to_ras`].
    ///
    /// # Panics
    ///
    /// If `ras.len()` is not the product of `stored_dims` (a caller bug).
    pub fn from_ras<T: Copy>(&self, ras: &[T], stored_dims: [usize; 3]) -> Vec<T> {
        reorder(&self.inverse(), ras, self.ras_dims(stored_dims))
    }
}

/// Gathers `input` (dims `in_dims`, x fastest) into the order described by `o`: output axis `r`
/// walks input axis `o.perm[r]`, backwards when `o.flip[r]`.
fn reorder<T: Copy>(o: &Orientation, input: &[T], in_dims: [usize; 3]) -> Vec<T> {
    let total = in_dims[0] * in_dims[1] * in_dims[2];
    assert_eq!(
        input.len(),
        total,
        "voxel array has {} values but dims {:?} need {}",
        input.len(),
        in_dims,
        total
    );
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let in_strides = [1, in_dims[0], in_dims[0] * in_dims[1]];
    let out_dims = o.ras_dims(in_dims);
    // Start index and signed step (in input elements) along each output axis.
    let mut start = 0usize;
    let mut step = [0isize; 3];
    for r in 0..3 {
        let stride = in_strides[o.perm[r]];
        if o.flip[r] {
            start += (out_dims[r] - 1) * stride;
            step[r] = -(stride as isize);
        } else {
            step[r] = stride as isize;
        }
    }
    let nx = out_dims[0];
    for k in 0..out_dims[2] {
        let plane = start.wrapping_add_signed(k as isize * step[2]);
        for j in 0..out_dims[1] {
            let row = plane.wrapping_add_signed(j as isize * step[1]);
            match step[0] {
                1 => out.extend_from_slice(&input[row..row + nx]),
                -1 => out.extend(input[row + 1 - nx..=row].iter().rev()),
                s => out.extend((0..nx).map(|i| input[row.wrapping_add_signed(i as isize * s)])),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::geometry::{IDENTITY_AFFINE, affine_apply, affine_mul};
    use super::*;

    fn affine(cols: [[f64; 3]; 3]) -> Affine {
        let mut a = IDENTITY_AFFINE;
        for c in 0..3 {
            for r in 0..3 {
                a[r][c] = cols[c][r];
            }
        }
        a
    }

    #[test]
    fn ras_is_identity_and_lps_flips_two_axes() {
        let ras = affine([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]);
        assert!(closest_ras(&ras).is_identity());
        assert_eq!(closest_ras(&ras).code(), "RAS");
        let lps = affine([[-2.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 4.0]]);
        let o = closest_ras(&lps);
        assert_eq!(o.perm, [0, 1, 2]);
        assert_eq!(o.flip, [true, true, false]);
        assert_eq!(o.code(), "LPS");
    }

    #[test]
    fn permuted_axes_give_code_ail() {
        // Voxel x runs anterior, y inferior, z left.
        let ail = affine([[0.0, 2.0, 0.0], [0.0, 0.0, -2.0], [-2.0, 0.0, 0.0]]);
        let o = closest_ras(&ail);
        assert_eq!(o.code(), "AIL");
        assert_eq!(o.perm, [2, 0, 1]);
        assert_eq!(o.flip, [true, false, true]);
    }

    #[test]
    fn oblique_and_sheared_grids_still_give_permutations() {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let cases = [
            affine([[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]]),
            affine([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]),
            affine([[0.0; 3]; 3]),
            affine([[1.0, 1.0, 1.0]; 3]),
        ];
        for a in cases {
            let o = closest_ras(&a);
            let mut seen = o.perm;
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2], "{a:?}");
        }
    }

    #[test]
    fn round_trip_is_exact_for_every_orientation() {
        let dims = [3, 4, 5];
        let data: Vec<u32> = (0..60).collect();
        for perm in PERMUTATIONS {
            for bits in 0..8u8 {
                let o = Orientation {
                    perm,
                    flip: [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0],
                };
                let (ras, ras_dims) = o.to_ras(&data, dims);
                assert_eq!(ras_dims, o.ras_dims(dims));
                assert_eq!(o.from_ras(&ras, dims), data);
            }
        }
    }

    #[test]
    fn reoriented_voxels_keep_their_world_position() {
        let world = affine([[0.0, 2.0, 0.1], [0.0, 0.0, -3.0], [-1.5, 0.0, 0.0]]);
        let mut world = world;
        world[0][3] = 7.0;
        world[1][3] = -4.0;
        world[2][3] = 11.0;
        let dims = [3, 4, 5];
        let o = closest_ras(&world);
        let ras_world = affine_mul(&world, &o.stored_from_ras(dims));
        let ras_dims = o.ras_dims(dims);
        let stored_from_ras = o.stored_from_ras(dims);
        let positions: Vec<[usize; 3]> = (0..ras_dims[2])
            .flat_map(|k| {
                (0..ras_dims[1]).flat_map(move |j| (0..ras_dims[0]).map(move |i| [i, j, k]))
            })
            .collect();
        let stored_index: Vec<usize> = (0..60).collect();
        let (ras_index, _) = o.to_ras(&stored_index, dims);
        for (n, p) in positions.iter().enumerate() {
            let pf = p.map(|v| v as f64);
            let s = affine_apply(&stored_from_ras, pf);
            let flat = s[0] as usize + dims[0] * (s[1] as usize + dims[1] * s[2] as usize);
            assert_eq!(flat, ras_index[n]);
            let a = affine_apply(&ras_world, pf);
            let b = affine_apply(&world, s);
            for d in 0..3 {
                assert!((a[d] - b[d]).abs() < 1e-9);
            }
        }
    }
}
