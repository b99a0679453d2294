//! Voxel-to-world geometry: building `world_from_voxel` from a NIfTI-1 header, and small
//! helpers on 4x4 affines.
//!
//! The choice follows the NIfTI-1 specification (and nibabel): the sform when `sform_code > 0`,
//! else the qform (quaternion) when `qform_code > 0`, else "method 1", a diagonal built from
//! `pixdim`. An sform or qform that is non-finite or singular is skipped with a warning.

use nifti::NiftiHeader;

use super::Affine;

/// Which header fields `world_from_voxel` was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometrySource {
    /// `srow_x/y/z` (sform_code > 0).
    Sform,
    /// Quaternion, offsets and pixdim (qform_code > 0).
    Qform,
    /// `pixdim[1..=3]` on the diagonal, no offset (neither code set).
    Pixdim,
}

/// The geometry of a header: the chosen affine, where it came from, and any notes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderGeometry {
    /// Maps voxel indices (x, y, z, 1) to world millimetres.
    pub world_from_voxel: Affine,
    /// The header fields it came from.
    pub source: GeometrySource,
    /// Why a transform with a non-zero code was skipped, if it was.
    pub warnings: Vec<String>,
}

/// The 4x4 identity.
pub const IDENTITY_AFFINE: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Picks and builds the voxel-to-world affine of a header (sform, else qform, else pixdim).
pub fn header_geometry(header: &NiftiHeader) -> HeaderGeometry {
    let mut warnings = Vec::new();
    if header.sform_code > 0 {
        let a = sform_affine(header);
        if is_usable(&a) {
            return HeaderGeometry {
                world_from_voxel: a,
                source: GeometrySource::Sform,
                warnings,
            };
        }
        warnings.push(format!(
            "sform_code is {} but the sform is singular or not finite; ignoring it",
            header.sform_code
        ));
    }
    if header.qform_code > 0 {
        let a = qform_affine(header);
        if is_usable(&a) {
            return HeaderGeometry {
                world_from_voxel: a,
                source: GeometrySource::Qform,
                warnings,
            };
        }
        warnings.push(format!(
            "qform_code is {} but the qform is not finite; ignoring it",
            header.qform_code
        ));
    }
    HeaderGeometry {
        world_from_voxel: pixdim_affine(header),
        source: GeometrySource::Pixdim,
        warnings,
    }
}

/// The sform rows as an affine (no checks).
pub fn sform_affine(header: &NiftiHeader) -> Affine {
    let row = |r: [f32; 4]| r.map(f64::from);
    [
        row(header.srow_x),
        row(header.srow_y),
        row(header.srow_z),
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// The qform affine, with the NIfTI-1 reference formula (as in `nifti1_io.c`).
///
/// The rotation comes from the unit quaternion (a, b, c, d) with a = sqrt(1 - b² - c² - d²)
/// (when b² + c² + d² reaches 1, a is 0 and (b, c, d) is renormalised); voxel sizes are
/// `pixdim[1..=3]` (non-positive or non-finite ones become 1), and the z column is negated
/// when qfac = `pixdim[0]` is negative (qfac 0 counts as 1).
pub fn qform_affine(header: &NiftiHeader) -> Affine {
    let mut b = f64::from(header.quatern_b);
    let mut c = f64::from(header.quatern_c);
    let mut d = f64::from(header.quatern_d);
    let sum = b * b + c * c + d * d;
    let a = if 1.0 - sum < 1.0e-7 {
        let norm = sum.sqrt();
        if norm > 0.0 {
            b /= norm;
            c /= norm;
            d /= norm;
        }
        0.0
    } else {
        (1.0 - sum).sqrt()
    };
    let rotation = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let mut zoom = [1, 2, 3].map(|i| positive_or_one(header.pixdim[i]));
    if header.pixdim[0] < 0.0 {
        zoom[2] = -zoom[2];
    }
    let offset = [header.quatern_x, header.quatern_y, header.quatern_z].map(f64::from);
    let mut out = IDENTITY_AFFINE;
    for r in 0..3 {
        for col in 0..3 {
            out[r][col] = rotation[r][col] * zoom[col];
        }
        out[r][3] = offset[r];
    }
    out
}

/// "Method 1" of NIfTI-1: `pixdim[1..=3]` on the diagonal (non-positive or non-finite values
/// become 1), no offset.
pub fn pixdim_affine(header: &NiftiHeader) -> Affine {
    let mut out = IDENTITY_AFFINE;
    for (i, row) in out.iter_mut().enumerate().take(3) {
        row[i] = positive_or_one(header.pixdim[i + 1]);
    }
    out
}

/// Lengths of the three columns of the 3x3 part: the voxel size along each voxel axis.
pub fn column_norms(a: &Affine) -> [f64; 3] {
    [0, 1, 2].map(|c| (a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]).sqrt())
}

/// Matrix product `a * b` (so `target_from_source = target_from_mid * mid_from_source`).
pub fn affine_mul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// Applies an affine to a point.
pub fn affine_apply(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
}

/// Inverse of an affine whose last row is (0, 0, 0, 1); `None` when singular or not finite.
pub fn affine_inverse(a: &Affine) -> Option<Affine> {
    let m = linear_part(a);
    let inv = inverse3(&m)?;
    let mut out = IDENTITY_AFFINE;
    for r in 0..3 {
        out[r][..3].copy_from_slice(&inv[r]);
        out[r][3] = -(inv[r][0] * a[0][3] + inv[r][1] * a[1][3] + inv[r][2] * a[2][3]);
    }
    out.iter().flatten().all(|v| v.is_finite()).then_some(out)
}

/// The 3x3 linear part of an affine.
pub(crate) fn linear_part(a: &Affine) -> [[f64; 3]; 3] {
    [0, 1, 2].map(|r| [a[r][0], a[r][1], a[r][2]])
}

/// Determinant of a 3x3 matrix.
pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse of a 3x3 matrix by cofactors; `None` when singular.
pub(crate) fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = det3(m);
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let cof =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    // inverse = adjugate / det; adjugate[r][c] = cofactor of m[c][r].
    Some([
        [
            cof(1, 2, 1, 2) / det,
            -cof(0, 2, 1, 2) / det,
            cof(0, 1, 1, 2) / det,
        ],
        [
            -cof(1, 2, 0, 2) / det,
            cof(0, 2, 0, 2) / det,
            -cof(0, 1, 0, 2) / det,
        ],
        [
            cof(1, 2, 0, 1) / det,
            -cof(0, 2, 0, 1) / det,
            cof(0, 1, 0, 1) / det,
        ],
    ])
}

/// A transform is usable when finite with a non-singular 3x3 part.
fn is_usable(a: &Affine) -> bool {
    a.iter().flatten().all(|v| v.is_finite()) && det3(&linear_part(a)) != 0.0
}

/// `v` as f64 when finite and positive, else 1.
fn positive_or_one(v: f32) -> f64 {
    if v.is_finite() && v > 0.0 {
        f64::from(v)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Affine, b: &Affine, tol: f64) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn qform_of_zero_quaternion_is_diagonal() {
        let mut h = NiftiHeader {
            pixdim: [-1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0],
            quatern_x: 5.0,
            quatern_y: 6.0,
            quatern_z: 7.0,
            ..NiftiHeader::default()
        };
        let expected = [
            [2.0, 0.0, 0.0, 5.0],
            [0.0, 3.0, 0.0, 6.0],
            [0.0, 0.0, -4.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(close(&qform_affine(&h), &expected, 1e-12));
        h.pixdim[0] = 0.0; // qfac 0 counts as 1
        assert_eq!(qform_affine(&h)[2][2], 4.0);
    }

    #[test]
    fn qform_of_half_turn_about_z_flips_x_and_y() {
        // b = c = 0, d = 1: a rotation by 180 degrees about z (a = 0).
        let h = NiftiHeader {
            pixdim: [1.0; 8],
            quatern_d: 1.0,
            ..NiftiHeader::default()
        };
        let a = qform_affine(&h);
        let expected = [
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(close(&a, &expected, 1e-12));
    }

    #[test]
    fn sform_wins_unless_singular() {
        let mut h = NiftiHeader {
            sform_code: 2,
            qform_code: 1,
            srow_x: [0.0, -2.0, 0.0, 10.0],
            srow_y: [3.0, 0.0, 0.0, 20.0],
            srow_z: [0.0, 0.0, 4.0, 30.0],
            ..NiftiHeader::default()
        };
        let g = header_geometry(&h);
        assert_eq!(g.source, GeometrySource::Sform);
        assert_eq!(column_norms(&g.world_from_voxel), [3.0, 2.0, 4.0]);
        h.srow_z = [0.0; 4];
        let g = header_geometry(&h);
        assert_eq!(g.source, GeometrySource::Qform);
        assert_eq!(g.warnings.len(), 1);
        h.qform_code = 0;
        h.pixdim = [1.0, 0.0, f32::NAN, 2.5, 1.0, 1.0, 1.0, 1.0];
        let g = header_geometry(&h);
        assert_eq!(g.source, GeometrySource::Pixdim);
        assert_eq!(column_norms(&g.world_from_voxel), [1.0, 1.0, 2.5]);
    }

    #[test]
    fn inverse_undoes_affine() {
        let a = [
            [0.0, -2.0, 0.1, 10.0],
            [3.0, 0.0, 0.0, 20.0],
            [0.0, 0.3, 4.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let inv = affine_inverse(&a).expect("invertible");
        assert!(close(&affine_mul(&a, &inv), &IDENTITY_AFFINE, 1e-12));
        let p = affine_apply(&a, [1.0, 2.0, 3.0]);
        let q = affine_apply(&inv, p);
        assert!((q[0] - 1.0).abs() < 1e-12 && (q[1] - 2.0).abs() < 1e-12);
        assert!(affine_inverse(&[[0.0; 4]; 4]).is_none());
    }
}
