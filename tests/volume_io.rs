//! Integration tests of the volume module against the real files in `../shared/data`
//! (see its SOURCES.md). Every test that needs a file skips, with a message, when it is absent.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use hypersegnas::volume::{
    Affine, GridMap, Interp, Volume, VolumeError, affine_apply, read_header, read_volume, resample,
    spacing_map, write_float_channels, write_label_map,
};

/// The shared test-data folder, or `None` (with a message) when it is absent.
fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: test data folder {} not found", dir.display());
        None
    }
}

/// A file of the shared test data, or `None` (with a message) when it is absent.
fn data_file(relative: &str) -> Option<PathBuf> {
    let path = data_dir()?.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: test file {} not found", path.display());
        None
    }
}

/// Like `data_file` for several files at once: `None` if any is missing.
fn data_files<const N: usize>(relative: [&str; N]) -> Option<[PathBuf; N]> {
    let mut out = Vec::with_capacity(N);
    for r in relative {
        out.push(data_file(r)?);
    }
    out.try_into().ok()
}

fn read(path: &Path) -> Volume {
    match read_volume(path) {
        Ok(v) => v,
        Err(e) => panic!("reading {} failed: {e}", path.display()),
    }
}

/// All bytes of a file, gunzipped when it starts with the gzip magic.
fn raw_bytes(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).expect("test file is readable");
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .expect("test file is valid gzip");
        out
    } else {
        bytes
    }
}

fn le_i16(b: &[u8], at: usize) -> i16 {
    i16::from_le_bytes([b[at], b[at + 1]])
}

fn le_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn finite_range(data: &[f32]) -> (f32, f32) {
    data.iter()
        .filter(|v| !v.is_nan())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .expect("temp dir is listable")
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Reading: datatypes, byte order, scaling, dimensionality
// ---------------------------------------------------------------------------------------------

#[test]
fn every_scalar_type_reads_as_the_same_ramp() {
    let types = [
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32",
        "float64",
    ];
    for t in types {
        let Some(path) = data_file(&format!("nifti-rs/resources/27/{t}.nii")) else {
            return;
        };
        let v = read(&path);
        assert_eq!(v.dims, [3, 3, 3], "{t}");
        assert_eq!(v.data.len(), 27, "{t}");
        assert!(v.warnings.is_empty(), "{t}: {:?}", v.warnings);
        // These files hold numpy's C-order ramp (`arange(27).reshape(3, 3, 3)` saved by
        // nibabel), so the value at voxel (x, y, z) is 9x + 3y + z, NOT x + 3y + 9z: on disk,
        // with x fastest, the values run 0, 9, 18, 3, 12, 21, ...
        for z in 0..3 {
            for y in 0..3 {
                for x in 0..3 {
                    let expected = (9 * x + 3 * y + z) as f32;
                    assert_eq!(v.data[x + 3 * (y + 3 * z)], expected, "{t} at {x},{y},{z}");
                }
            }
        }
        let mut sorted = v.data.clone();
        sorted.sort_by(f32::total_cmp);
        assert!(
            sorted.iter().enumerate().all(|(i, &x)| x == i as f32),
            "{t}"
        );
    }
    // The uint8 file's bytes, independently: stored order equals our array order.
    let Some(path) = data_file("nifti-rs/resources/27/uint8.nii") else {
        return;
    };
    let raw = raw_bytes(&path);
    let stored: Vec<f32> = raw[352..352 + 27].iter().map(|&b| f32::from(b)).collect();
    assert_eq!(read(&path).data, stored);
    assert_eq!(stored[..4], [0.0, 9.0, 18.0, 3.0]);
}

#[test]
fn big_endian_int16_anatomical() {
    let Some(path) = data_file("nibabel/nibabel/tests/data/anatomical.nii") else {
        return;
    };
    let v = read(&path);
    assert_eq!(v.header.endianness, nifti::Endianness::Big);
    assert_eq!(v.dims, [33, 41, 25]);
    assert_eq!(finite_range(&v.data), (-610.0, 30393.0));
    assert_eq!(v.spacing, [2.0, 2.0, 2.0]);
    assert_eq!(v.orientation().code(), "LAS");
}

#[test]
fn big_endian_float32_files_and_nans() {
    let Some([moved, resampled]) = data_files([
        "nibabel/nibabel/tests/data/reoriented_anat_moved.nii",
        "nibabel/nibabel/tests/data/resampled_anat_moved.nii",
    ]) else {
        return;
    };
    let v = read(&moved);
    assert_eq!(v.dims, [21, 26, 22]);
    assert!(v.data.iter().all(|x| x.is_finite()));
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let (lo, hi) = finite_range(&v.data);
    assert_eq!(lo, 0.0);
    assert!((hi - 21199.9).abs() < 0.1, "{hi}");

    let v = read(&resampled);
    assert_eq!(v.dims, [17, 21, 3]);
    assert_eq!(v.data.iter().filter(|x| x.is_nan()).count(), 153);
    let note = v
        .warnings
        .iter()
        .find(|w| w.contains("NaN or infinite"))
        .expect("a warning about the NaN voxels");
    assert!(
        note.contains("153 of 1071 voxels") && note.contains("resampled_anat_moved.nii"),
        "{note}"
    );
    let (lo, hi) = finite_range(&v.data);
    assert!(
        (lo - 409.3).abs() < 0.01 && (hi - 13361.0).abs() < 0.5,
        "{lo}..{hi}"
    );
}

#[test]
fn slope_zero_means_unscaled() {
    let Some(path) = data_file("nifti-rs/resources/avg152T1_LR_nifti.nii.gz") else {
        return;
    };
    let v = read(&path);
    assert_eq!(v.header.scl_slope, 0.0);
    assert_eq!(v.header.endianness, nifti::Endianness::Big);
    assert_eq!(v.dims, [91, 109, 91]);
    assert_eq!(finite_range(&v.data), (0.0, 255.0));
    assert!(v.data.iter().all(|x| x.fract() == 0.0));
}

#[test]
fn scaled_uint8_files() {
    let Some([shear, anatomy]) = data_files([
        "niivue/packages/niivue/demos/images/shear.nii.gz",
        "nibabel/doc/source/downloads/someones_anatomy.nii.gz",
    ]) else {
        return;
    };
    let v = read(&shear);
    assert_eq!(v.dims, [306, 422, 54]);
    let (lo, hi) = finite_range(&v.data);
    assert!(
        (lo + 1024.0).abs() < 1.0 && (hi - 789.0).abs() < 1.0,
        "{lo}..{hi}"
    );
    // Every value is an 8-bit code times the slope plus the intercept.
    let (slope, inter) = (v.header.scl_slope, v.header.scl_inter);
    assert!(v.data.iter().all(|&x| {
        let code = ((x - inter) / slope).round();
        (0.0..=255.0).contains(&code) && (code * slope + inter - x).abs() < 1e-3
    }));

    let v = read(&anatomy);
    assert_eq!(v.dims, [57, 67, 56]);
    let (lo, hi) = finite_range(&v.data);
    assert!(
        (lo - 6.678).abs() < 1e-3 && (hi - 96.555).abs() < 1e-3,
        "{lo}..{hi}"
    );
}

#[test]
fn four_d_scaled_input_gives_first_volume_and_a_warning() {
    let Some(path) = data_file("nibabel/nibabel/tests/data/functional.nii") else {
        return;
    };
    let v = read(&path);
    assert_eq!(v.dims, [17, 21, 3]);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(v.warnings[0].contains("20 volumes"), "{:?}", v.warnings);
    // Compare with an independent decoding of the raw little-endian int16 bytes.
    let raw = raw_bytes(&path);
    let offset = le_f32(&raw, 108) as usize;
    let (slope, inter) = (le_f32(&raw, 112), le_f32(&raw, 116));
    assert_eq!(v.header.scl_slope, slope);
    let expected: Vec<f32> = (0..17 * 21 * 3)
        .map(|i| f32::from(le_i16(&raw, offset + 2 * i)) * slope + inter)
        .collect();
    assert!(same_bits(&v.data, &expected));
    let (lo, hi) = finite_range(&v.data);
    assert!(lo >= 629.8 && hi <= 5571.7, "{lo}..{hi}");
}

#[test]
fn four_d_file_with_extensions_and_two_d_file() {
    let Some([four_d, two_d]) = data_files([
        "nibabel/nibabel/tests/data/example4d.nii.gz",
        "nifti-rs/resources/minimal_extended_hdr.nii",
    ]) else {
        return;
    };
    let v = read(&four_d);
    assert_eq!(v.dims, [128, 96, 24]);
    assert!(v.warnings.iter().any(|w| w.contains("2 volumes")));
    let (lo, hi) = finite_range(&v.data);
    assert!(lo >= 0.0 && hi <= 1162.0);

    let v = read(&two_d);
    assert_eq!(v.dims, [8, 8, 1]);
    assert!(v.data.iter().all(|&x| x == 0.0));
}

// ---------------------------------------------------------------------------------------------
// Reading: .hdr/.img pairs
// ---------------------------------------------------------------------------------------------

#[test]
fn pairs_equal_the_single_file() {
    let Some([nii, hdr, hdr_gz, img]) = data_files([
        "nifti-rs/resources/minimal.nii",
        "nifti-rs/resources/minimal.hdr",
        "nifti-rs/resources/minimal.hdr.gz",
        "nifti-rs/resources/minimal.img",
    ]) else {
        return;
    };
    let reference = read(&nii);
    assert_eq!(reference.dims, [64, 64, 10]);
    assert_eq!(finite_range(&reference.data), (0.0, 63.0));
    for other in [hdr, hdr_gz, img] {
        let v = read(&other);
        assert_eq!(v.dims, reference.dims, "{}", other.display());
        assert!(same_bits(&v.data, &reference.data), "{}", other.display());
        assert_eq!(v.world_from_voxel, reference.world_from_voxel);
    }
}

#[test]
fn little_endian_pair_from_niivue() {
    let Some(path) = data_file("niivue/packages/niivue/tests/images/ras.hdr") else {
        return;
    };
    let v = read(&path);
    assert_eq!(v.dims, [62, 41, 34]);
    assert_eq!(finite_range(&v.data), (0.0, 255.0));
    assert_eq!(v.orientation().code(), "RAS");
}

#[test]
fn pair_header_without_image_names_both_files() {
    let Some(path) = data_file("nibabel/nibabel/tests/data/nifti1.hdr") else {
        return;
    };
    let err = read_volume(&path).expect_err("image file is missing");
    assert!(matches!(err, VolumeError::MissingImage { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("nifti1.hdr") && msg.contains("nifti1.img"),
        "{msg}"
    );
    // The header alone can still be inspected.
    let header = read_header(&path).expect("header is fine");
    assert_eq!(header.dim[1..4], [91, 109, 91]);
}

// ---------------------------------------------------------------------------------------------
// Reading: errors, never panics
// ---------------------------------------------------------------------------------------------

fn expect_error(path: &Path) -> VolumeError {
    let err = read_volume(path).expect_err("file must be refused");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        err.to_string().contains(&name),
        "message does not name {name}: {err}"
    );
    err
}

#[test]
fn colour_and_complex_files_are_refused() {
    let Some([rgb_gz, rgb, complex]) = data_files([
        "ivadomed_data-testing/rgb_test_file.nii.gz",
        "nifti-rs/resources/rgb/3D.nii",
        "nifti-rs/resources/complex/complex32.nii",
    ]) else {
        return;
    };
    assert!(matches!(expect_error(&rgb_gz), VolumeError::Rgb { .. }));
    assert!(matches!(expect_error(&rgb), VolumeError::Rgb { .. }));
    assert!(matches!(
        expect_error(&complex),
        VolumeError::Complex { .. }
    ));
    // Their headers can still be shown.
    assert_eq!(read_header(&rgb).map(|h| h.datatype).ok(), Some(128));
}

#[test]
fn nifti2_and_analyze_are_refused() {
    let Some([nifti2, analyze]) = data_files([
        "nibabel/nibabel/tests/data/example_nifti2.nii.gz",
        "nibabel/nibabel/tests/data/analyze.hdr",
    ]) else {
        return;
    };
    assert!(matches!(expect_error(&nifti2), VolumeError::Nifti2 { .. }));
    assert!(matches!(
        read_header(&nifti2),
        Err(VolumeError::Nifti2 { .. })
    ));
    assert!(matches!(
        expect_error(&analyze),
        VolumeError::Analyze { .. }
    ));
}

#[test]
fn fuzz_artifacts_are_refused_without_panicking() {
    let Some(dir) = data_file("nifti-rs/resources/fuzz_artifacts") else {
        return;
    };
    let files = files_in(&dir);
    assert!(!files.is_empty());
    for f in files {
        expect_error(&f);
        assert!(read_header(&f).is_err());
    }
}

#[test]
fn truncated_empty_and_corrupt_files_are_refused() {
    let Some([plain, gz]) = data_files([
        "nibabel/nibabel/tests/data/anatomical.nii",
        "nibabel/doc/source/downloads/someones_anatomy.nii.gz",
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = fs::read(&plain).expect("readable");

    let cut = dir.path().join("cut.nii");
    fs::write(&cut, &bytes[..30000]).expect("write");
    match expect_error(&cut) {
        VolumeError::Truncated { got, expected, .. } => {
            assert_eq!(got, 30000 - 352);
            assert_eq!(expected, 33 * 41 * 25 * 2);
        }
        e => panic!("unexpected error {e}"),
    }

    let short = dir.path().join("short.nii");
    fs::write(&short, &bytes[..200]).expect("write");
    assert!(matches!(
        expect_error(&short),
        VolumeError::TooShort { len: 200, .. }
    ));

    let empty = dir.path().join("empty.nii.gz");
    fs::write(&empty, b"").expect("write");
    assert!(matches!(
        expect_error(&empty),
        VolumeError::TooShort { len: 0, .. }
    ));

    let gz_bytes = fs::read(&gz).expect("readable");
    let cut_gz = dir.path().join("cut.nii.gz");
    fs::write(&cut_gz, &gz_bytes[..gz_bytes.len() / 2]).expect("write");
    expect_error(&cut_gz);

    let mut corrupt = gz_bytes.clone();
    let middle = corrupt.len() / 2;
    for b in &mut corrupt[middle..middle + 64] {
        *b ^= 0x5a;
    }
    let corrupt_gz = dir.path().join("corrupt.nii.gz");
    fs::write(&corrupt_gz, &corrupt).expect("write");
    expect_error(&corrupt_gz);

    let missing = dir.path().join("missing.nii");
    assert!(matches!(expect_error(&missing), VolumeError::Io { .. }));
}

#[test]
fn absurd_header_fields_are_refused_before_reading() {
    let Some(path) = data_file("nibabel/nibabel/tests/data/anatomical.nii") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let original = fs::read(&path).expect("readable");
    // anatomical.nii is big-endian: dim[i] at 40 + 2i, datatype at 70, vox_offset at 108.
    let cases: [(&str, usize, Vec<u8>); 5] = [
        ("negative_dim.nii", 42, (-33i16).to_be_bytes().to_vec()),
        ("zero_dim.nii", 44, 0i16.to_be_bytes().to_vec()),
        ("bad_rank.nii", 40, 9i16.to_be_bytes().to_vec()),
        ("bad_type.nii", 70, 9999i16.to_be_bytes().to_vec()),
        ("bad_offset.nii", 108, f32::NAN.to_be_bytes().to_vec()),
    ];
    for (name, at, patch) in cases {
        let mut bytes = original.clone();
        bytes[at..at + patch.len()].copy_from_slice(&patch);
        let file = dir.path().join(name);
        fs::write(&file, &bytes).expect("write");
        expect_error(&file);
    }
    // Huge dims: refused by size before any allocation.
    let mut bytes = original.clone();
    for i in 1..=3 {
        bytes[40 + 2 * i..42 + 2 * i].copy_from_slice(&32767i16.to_be_bytes());
    }
    let file = dir.path().join("huge.nii");
    fs::write(&file, &bytes).expect("write");
    assert!(matches!(expect_error(&file), VolumeError::TooLarge { .. }));
}

/// Deterministic pseudo-random numbers (xorshift), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_files_never_panic() {
    let Some([plain, gz]) = data_files([
        "nifti-rs/resources/27/int16.nii",
        "nifti-rs/resources/f32.nii.gz",
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (source, name, span) in [(plain, "m.nii", 352), (gz, "m.nii.gz", usize::MAX)] {
        let original = fs::read(&source).expect("readable");
        let file = dir.path().join(name);
        for _ in 0..1500 {
            let mut bytes = original.clone();
            let span = span.min(bytes.len());
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(span);
                bytes[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => 0x7f,
                    _ => rng.next() as u8,
                };
            }
            if rng.below(8) == 0 {
                bytes.truncate(rng.below(bytes.len() + 1));
            }
            fs::write(&file, &bytes).expect("write");
            let result = read_volume(&file);
            assert!(
                !matches!(result, Err(VolumeError::Internal { .. })),
                "{result:?}"
            );
            if let Ok(v) = result {
                assert_eq!(v.data.len(), v.voxel_count());
                let (ras, o) = v.to_ras();
                assert!(same_bits(&o.from_ras(&ras.data, v.dims), &v.data));
            }
            let _ = read_header(&file);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Orientation
// ---------------------------------------------------------------------------------------------

fn corners(dims: [usize; 3]) -> Vec<[f64; 3]> {
    let mut out = Vec::new();
    for &z in &[0, dims[2] - 1] {
        for &y in &[0, dims[1] - 1] {
            for &x in &[0, dims[0] - 1] {
                out.push([x as f64, y as f64, z as f64]);
            }
        }
    }
    out
}

fn assert_close(a: [f64; 3], b: [f64; 3], tol: f64) {
    for i in 0..3 {
        assert!((a[i] - b[i]).abs() <= tol, "{a:?} vs {b:?}");
    }
}

/// Checks that the RAS grid keeps every voxel's world position, using the voxel values as
/// identities: the RAS voxel at each corner must hold the stored voxel at the same point.
fn check_world_positions(v: &Volume) {
    let (ras, o) = v.to_ras();
    let index: Vec<usize> = (0..v.voxel_count()).collect();
    let (ras_index, ras_dims) = o.to_ras(&index, v.dims);
    assert_eq!(ras_dims, ras.dims);
    let inverse = hypersegnas::volume::affine_inverse(&v.world_from_voxel).expect("invertible");
    for c in corners(ras.dims) {
        let world = affine_apply(&ras.world_from_voxel, c);
        let stored = affine_apply(&inverse, world);
        let rounded = stored.map(|s| s.round());
        assert_close(stored, rounded, 1e-3);
        let flat = rounded[0] as usize
            + v.dims[0] * (rounded[1] as usize + v.dims[1] * rounded[2] as usize);
        let at = c[0] as usize + ras.dims[0] * (c[1] as usize + ras.dims[1] * c[2] as usize);
        assert_eq!(ras_index[at], flat);
        assert_eq!(ras.data[at].to_bits(), v.data[flat].to_bits());
    }
}

#[test]
fn same_brain_in_three_orientations() {
    let Some([lps, ail, ras]) = data_files([
        "niivue/packages/niivue/tests/images/nifti_space/LPS.nii.gz",
        "niivue/packages/niivue/tests/images/nifti_space/AIL.nii.gz",
        "niivue/packages/niivue/tests/images/nifti_space/RAS.nii.gz",
    ]) else {
        return;
    };
    let (lps, ail, ras) = (read(&lps), read(&ail), read(&ras));
    assert_eq!(lps.orientation().code(), "LPS");
    assert_eq!(ail.orientation().code(), "AIL");
    assert_eq!(ras.orientation().code(), "RAS");

    let (r_ras, o_ras) = ras.to_ras();
    assert!(o_ras.is_identity());
    assert!(same_bits(&r_ras.data, &ras.data));
    assert_eq!(r_ras.world_from_voxel, ras.world_from_voxel);

    for v in [&lps, &ail] {
        let (r, o) = v.to_ras();
        assert_eq!(r.dims, r_ras.dims, "{}", o.code());
        assert!(same_bits(&r.data, &r_ras.data), "{}", o.code());
        for (row_a, row_b) in r.world_from_voxel.iter().zip(&r_ras.world_from_voxel) {
            for (a, b) in row_a.iter().zip(row_b) {
                assert!((a - b).abs() < 1e-3, "{}: {a} vs {b}", o.code());
            }
        }
        assert_close(
            [r.spacing[0], r.spacing[1], r.spacing[2]],
            r_ras.spacing,
            1e-5,
        );
        check_world_positions(v);
    }
}

#[test]
fn round_trips_are_exact() {
    let Some(files) = data_files([
        "niivue/packages/niivue/tests/images/nifti_space/LPS.nii.gz",
        "niivue/packages/niivue/tests/images/nifti_space/AIL.nii.gz",
        "niivue/packages/niivue/tests/images/nifti_space/RAS.nii.gz",
        "niivue/packages/niivue/demos/images/shear.nii.gz",
        "ivadomed_data-testing/sub-unf01/anat/sub-unf01_T2w.nii.gz",
        "totalsegmentator/tests/reference_files/aorta_report/test_result/models/ct_cropped.nii.gz",
        "nibabel/nibabel/tests/data/example4d.nii.gz",
    ]) else {
        return;
    };
    for f in files {
        let v = read(&f);
        let (ras, o) = v.to_ras();
        let back = o.from_ras(&ras.data, v.dims);
        assert!(same_bits(&back, &v.data), "{}", f.display());
        let labels: Vec<u16> = (0..v.voxel_count()).map(|i| (i % 65521) as u16).collect();
        let (ras_labels, _) = o.to_ras(&labels, v.dims);
        assert_eq!(o.from_ras(&ras_labels, v.dims), labels);
        check_world_positions(&v);
    }
}

#[test]
fn corners_keep_their_world_position_on_oblique_grids() {
    let Some([t2, shear]) = data_files([
        "ivadomed_data-testing/sub-unf01/anat/sub-unf01_T2w.nii.gz",
        "niivue/packages/niivue/demos/images/shear.nii.gz",
    ]) else {
        return;
    };
    for f in [t2, shear] {
        let v = read(&f);
        let (ras, o) = v.to_ras();
        let stored_from_ras = o.stored_from_ras(v.dims);
        for c in corners(ras.dims) {
            let a = affine_apply(&ras.world_from_voxel, c);
            let b = affine_apply(&v.world_from_voxel, affine_apply(&stored_from_ras, c));
            assert_close(a, b, 1e-6);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Header fields that must be copied unchanged to outputs.
fn geometry_fields(h: &nifti::NiftiHeader) -> Vec<u32> {
    let mut v = vec![
        h.qform_code as u32,
        h.sform_code as u32,
        u32::from(h.xyzt_units),
    ];
    let floats = [
        h.quatern_b,
        h.quatern_c,
        h.quatern_d,
        h.quatern_x,
        h.quatern_y,
        h.quatern_z,
    ];
    v.extend(floats.iter().map(|f| f.to_bits()));
    for row in [h.srow_x, h.srow_y, h.srow_z] {
        v.extend(row.iter().map(|f| f.to_bits()));
    }
    v.extend(h.pixdim[..4].iter().map(|f| f.to_bits()));
    v
}

fn threshold_labels(v: &Volume) -> Vec<u16> {
    v.data
        .iter()
        .map(|&x| match x {
            x if x > 300.0 => 2,
            x if x > -200.0 => 1,
            _ => 0,
        })
        .collect()
}

#[test]
fn label_map_copies_the_input_geometry() {
    let Some(path) = data_file("totalsegmentator/tests/reference_files/example_ct.nii.gz") else {
        return;
    };
    let ct = read(&path);
    let labels = threshold_labels(&ct);
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["seg.nii.gz", "seg.nii"] {
        let out = dir.path().join(name);
        write_label_map(&out, &labels, &ct).expect("write label map");
        let back = read(&out);
        assert_eq!(back.dims, ct.dims);
        assert_eq!(back.world_from_voxel, ct.world_from_voxel);
        assert!(
            back.data
                .iter()
                .zip(&labels)
                .all(|(&a, &b)| a == f32::from(b))
        );
        assert_eq!(geometry_fields(&back.header), geometry_fields(&ct.header));

        // The raw header, parsed by hand.
        let raw = raw_bytes(&out);
        assert_eq!(raw.len(), 352 + labels.len());
        assert_eq!(i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]), 348);
        let dims: Vec<i16> = (0..4).map(|i| le_i16(&raw, 40 + 2 * i)).collect();
        assert_eq!(dims, [3, 122, 101, 112]);
        assert_eq!(le_i16(&raw, 70), 2, "datatype uint8");
        assert_eq!(le_i16(&raw, 72), 8, "bitpix");
        assert_eq!(le_f32(&raw, 108), 352.0);
        assert_eq!((le_f32(&raw, 112), le_f32(&raw, 116)), (1.0, 0.0));
        assert_eq!(le_i16(&raw, 252), ct.header.qform_code);
        assert_eq!(le_i16(&raw, 254), ct.header.sform_code);
        let srows: Vec<u32> = (0..12)
            .map(|i| le_f32(&raw, 280 + 4 * i).to_bits())
            .collect();
        let expected: Vec<u32> = [ct.header.srow_x, ct.header.srow_y, ct.header.srow_z]
            .iter()
            .flatten()
            .map(|f| f.to_bits())
            .collect();
        assert_eq!(srows, expected);
        let quatern: Vec<u32> = (0..6)
            .map(|i| le_f32(&raw, 256 + 4 * i).to_bits())
            .collect();
        assert_eq!(quatern, geometry_fields(&ct.header)[3..9]);
        assert_eq!(&raw[344..348], b"n+1\0");
    }
    // Only the two outputs, no temporary files.
    assert_eq!(files_in(dir.path()).len(), 2);
}

#[test]
fn large_labels_are_written_as_uint16() {
    let Some(path) = data_file("totalsegmentator/tests/reference_files/example_ct_sm.nii.gz")
    else {
        return;
    };
    let ct = read(&path);
    let mut labels = threshold_labels(&ct);
    labels[12345] = 300;
    labels[0] = 65535;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("big_labels.nii.gz");
    write_label_map(&out, &labels, &ct).expect("write");
    let raw = raw_bytes(&out);
    assert_eq!(le_i16(&raw, 70), 512, "datatype uint16");
    assert_eq!(le_i16(&raw, 72), 16);
    let back = read(&out);
    assert!(
        back.data
            .iter()
            .zip(&labels)
            .all(|(&a, &b)| a == f32::from(b))
    );
}

#[test]
fn float_channels_are_written_as_4d() {
    let Some(path) = data_file("niivue/packages/niivue/tests/images/nifti_space/AIL.nii.gz") else {
        return;
    };
    let v = read(&path);
    let n = v.voxel_count();
    let mut data = v.data.clone();
    data.extend(v.data.iter().map(|x| x * 0.5 - 1.0));
    data.extend(std::iter::repeat_n(f32::NAN, n));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("probs.nii.gz");
    write_float_channels(&out, &data, 3, &v).expect("write");
    let raw = raw_bytes(&out);
    assert_eq!(le_i16(&raw, 40), 4);
    assert_eq!(le_i16(&raw, 48), 3, "dim[4] = channels");
    assert_eq!(le_i16(&raw, 70), 16, "float32");
    assert_eq!(raw.len(), 352 + 4 * data.len());
    let back = read(&out);
    assert_eq!(back.dims, v.dims);
    assert!(same_bits(&back.data, &v.data));
    assert!(back.warnings.iter().any(|w| w.contains("3 volumes")));
    assert_eq!(geometry_fields(&back.header), geometry_fields(&v.header));
    let last = n * 2 * 4 + 352;
    assert!(le_f32(&raw, last).is_nan());
}

#[test]
fn writing_over_the_input_is_refused_and_leaves_nothing() {
    let Some([nii, hdr, img]) = data_files([
        "nifti-rs/resources/minimal.nii",
        "nifti-rs/resources/minimal.hdr",
        "nifti-rs/resources/minimal.img",
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // Work on copies so that nothing shared is ever at risk.
    let input = dir.path().join("input.nii");
    fs::copy(&nii, &input).expect("copy");
    let pair_hdr = dir.path().join("pair.hdr");
    let pair_img = dir.path().join("pair.img");
    fs::copy(&hdr, &pair_hdr).expect("copy");
    fs::copy(&img, &pair_img).expect("copy");
    let link = dir.path().join("link.nii");
    let img_link = dir.path().join("img_link.nii");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&input, &link).expect("symlink");
        std::os::unix::fs::symlink(&pair_img, &img_link).expect("symlink");
    }

    let v = read(&input);
    let pair = read(&pair_hdr);
    let labels = vec![1u16; v.voxel_count()];
    let before = files_in(dir.path());
    let original = fs::read(&input).expect("readable");

    let err = write_label_map(&input, &labels, &v).expect_err("same file");
    assert!(matches!(err, VolumeError::SameAsInput { .. }), "{err}");
    let relative = input
        .parent()
        .map(|p| p.join(".").join("input.nii"))
        .expect("has parent");
    assert!(write_label_map(&relative, &labels, &v).is_err());
    #[cfg(unix)]
    {
        assert!(write_label_map(&link, &labels, &v).is_err());
        assert!(write_label_map(&img_link, &labels, &pair).is_err());
        assert!(write_float_channels(&link, &v.data, 1, &v).is_err());
    }
    // Other refusals: wrong length, wrong extension, missing directory.
    assert!(matches!(
        write_label_map(&dir.path().join("new.nii"), &labels[1..], &v),
        Err(VolumeError::DataLength { .. })
    ));
    assert!(matches!(
        write_label_map(&dir.path().join("new.img"), &labels, &v),
        Err(VolumeError::OutputExtension { .. })
    ));
    assert!(matches!(
        write_float_channels(&dir.path().join("new.nii"), &[], 0, &v),
        Err(VolumeError::InvalidArgument { .. })
    ));
    let err = write_label_map(&dir.path().join("no/such/dir/x.nii"), &labels, &v)
        .expect_err("missing directory");
    assert!(err.to_string().contains("x.nii"), "{err}");

    assert_eq!(files_in(dir.path()), before, "no file created or removed");
    assert_eq!(
        fs::read(&input).expect("readable"),
        original,
        "input untouched"
    );

    // A different, existing output is replaced atomically.
    let out = dir.path().join("out.nii");
    fs::write(&out, b"old").expect("write");
    write_label_map(&out, &labels, &v).expect("overwrite a non-input file");
    assert!(read(&out).data.iter().all(|&x| x == 1.0));
}

#[test]
fn synthetic_volumes_can_be_written() {
    let world: Affine = [
        [0.0, 0.0, -1.5, 20.0],
        [2.0, 0.0, 0.0, -10.0],
        [0.0, 3.0, 0.0, 5.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let v = Volume::from_array((0..24).map(|i| i as f32).collect(), [2, 3, 4], world);
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("syn.nii");
    write_float_channels(&out, &v.data, 1, &v).expect("write");
    let back = read(&out);
    assert_eq!(back.world_from_voxel, world);
    assert!(same_bits(&back.data, &v.data));
    assert_eq!(back.orientation().code(), "ASL");
}

// ---------------------------------------------------------------------------------------------
// Resampling on real data
// ---------------------------------------------------------------------------------------------

#[test]
fn resampling_real_volumes() {
    let Some([ct, seg]) = data_files([
        "totalsegmentator/tests/reference_files/example_ct_sm.nii.gz",
        "totalsegmentator/tests/reference_files/example_seg_dicom.nii.gz",
    ]) else {
        return;
    };
    let ct = read(&ct);
    let same = GridMap::identity(ct.dims).apply(&ct.data, Interp::Linear);
    assert!(same_bits(&same, &ct.data));

    let seg = read(&seg);
    let map = spacing_map(seg.dims, seg.spacing, [1.5, 1.5, 1.5]);
    assert_eq!(map.out_dims, [333, 333, 27]);
    assert_eq!(map.inverse().out_dims, seg.dims);
    let labels: Vec<u16> = seg.data.iter().map(|&x| x as u16).collect();
    let down = map.forward().apply_nearest(&labels);
    assert_eq!(down.len(), 333 * 333 * 27);
    let mut present = [false; 256];
    labels.iter().for_each(|&l| present[usize::from(l)] = true);
    assert!(down.iter().all(|&l| present[usize::from(l)]));
    let back = map.inverse().apply_nearest(&down);
    assert_eq!(back.len(), labels.len());
    let agree = back.iter().zip(&labels).filter(|(a, b)| a == b).count();
    assert!(agree as f64 > 0.97 * labels.len() as f64, "{agree}");

    // f32 nearest through `resample` agrees with the generic version.
    let f = resample(
        &seg.data,
        seg.dims,
        map.out_dims,
        map.scale,
        map.offset,
        Interp::Nearest,
    );
    assert!(f.iter().zip(&down).all(|(&a, &b)| a == f32::from(b)));
}
