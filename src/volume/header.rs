//! Checking a raw NIfTI-1 header before anything is allocated or converted.
//!
//! The 348 header bytes are inspected here directly (byte order, NIfTI-2, Analyze, magic,
//! `dim[0]`) before the `nifti` crate parses them into a [`NiftiHeader`]; the parsed header is
//! then validated (datatype first, then dimensions and data offset) into a [`Layout`] that says
//! exactly which bytes to read and how to convert them.

use std::path::Path;

use nifti::{Endianness, NiftiHeader};

use super::error::VolumeError;

/// Size in bytes of a NIfTI-1 header.
pub const HEADER_SIZE: usize = 348;

/// Largest number of voxels accepted in one 3-D volume (2^31).
pub const MAX_VOXELS: u64 = 1 << 31;

/// Largest data offset accepted (1 TiB): anything larger is garbage.
const MAX_VOX_OFFSET: f32 = 1.0e12;

/// NIfTI-1 magic of a single `.nii` file.
const MAGIC_SINGLE: &[u8; 4] = b"n+1\0";
/// NIfTI-1 magic of a `.hdr`/`.img` pair.
const MAGIC_PAIR: &[u8; 4] = b"ni1\0";

/// The scalar on-disk datatypes this module converts to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Unsigned 8-bit integer (code 2).
    U8,
    /// Signed 8-bit integer (code 256).
    I8,
    /// Unsigned 16-bit integer (code 512).
    U16,
    /// Signed 16-bit integer (code 4).
    I16,
    /// Unsigned 32-bit integer (code 768).
    U32,
    /// Signed 32-bit integer (code 8).
    I32,
    /// Unsigned 64-bit integer (code 1280).
    U64,
    /// Signed 64-bit integer (code 1024).
    I64,
    /// 32-bit float (code 16).
    F32,
    /// 64-bit float (code 64).
    F64,
}

impl DataType {
    /// The scalar type for a NIfTI datatype code, or `None` for any other code.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => Self::U8,
            256 => Self::I8,
            512 => Self::U16,
            4 => Self::I16,
            768 => Self::U32,
            8 => Self::I32,
            1280 => Self::U64,
            1024 => Self::I64,
            16 => Self::F32,
            64 => Self::F64,
            _ => return None,
        })
    }

    /// The NIfTI datatype code.
    pub fn code(self) -> i16 {
        match self {
            Self::U8 => 2,
            Self::I8 => 256,
            Self::U16 => 512,
            Self::I16 => 4,
            Self::U32 => 768,
            Self::I32 => 8,
            Self::U64 => 1280,
            Self::I64 => 1024,
            Self::F32 => 16,
            Self::F64 => 64,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// Short name, e.g. "int16".
    pub fn name(self) -> &'static str {
        datatype_name(self.code())
    }
}

/// Name of any NIfTI-1 datatype code ("int16", "RGB24", "complex64"...), "unknown" otherwise.
pub fn datatype_name(code: i16) -> &'static str {
    match code {
        0 => "unknown (DT_UNKNOWN)",
        1 => "binary",
        2 => "uint8",
        4 => "int16",
        8 => "int32",
        16 => "float32",
        32 => "complex64",
        64 => "float64",
        128 => "RGB24",
        256 => "int8",
        512 => "uint16",
        768 => "uint32",
        1024 => "int64",
        1280 => "uint64",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "RGBA32",
        _ => "unknown",
    }
}

/// Everything needed to read and convert the first 3-D volume of a checked header.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// On-disk scalar type.
    pub datatype: DataType,
    /// Whether the voxel data is big-endian.
    pub big_endian: bool,
    /// Spatial size (missing dimensions are 1).
    pub dims: [usize; 3],
    /// Number of 3-D volumes in the file (product of `dim[4..]`, zeros counted as 1).
    pub volumes: u64,
    /// Where the voxel data starts (in the decompressed data file).
    pub vox_offset: u64,
    /// `true` for a `.hdr`/`.img` pair (magic `ni1`), `false` for a single `.nii`.
    pub pair: bool,
    /// Notes for the user.
    pub warnings: Vec<String>,
}

impl Layout {
    /// Voxels in one 3-D volume.
    pub fn voxels(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    /// Bytes of one 3-D volume.
    pub fn volume_bytes(&self) -> u64 {
        self.voxels() as u64 * self.datatype.size() as u64
    }
}

/// Checks the raw header bytes and parses them.
///
/// Refuses, in this order: NIfTI-2, anything whose `sizeof_hdr` is not 348 in either byte
/// order, headers without NIfTI-1 magic (Analyze 7.5), and a `dim[0]` outside 1..=7.
pub(crate) fn parse_header(
    path: &Path,
    bytes: &[u8; HEADER_SIZE],
) -> Result<NiftiHeader, VolumeError> {
    let head = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let little = i32::from_le_bytes(head);
    let big = i32::from_be_bytes(head);
    let magic = [bytes[344], bytes[345], bytes[346], bytes[347]];
    let nifti2_magic = &bytes[4..7] == b"n+2" || &bytes[4..7] == b"ni2";
    let big_endian = if little == 348 {
        false
    } else if big == 348 {
        true
    } else if little == 540 || big == 540 || nifti2_magic {
        return Err(VolumeError::Nifti2 {
            path: path.to_path_buf(),
        });
    } else {
        return Err(VolumeError::NotNifti {
            path: path.to_path_buf(),
            detail: format!("sizeof_hdr is {little} (byte-swapped {big}), expected 348"),
        });
    };
    if &magic != MAGIC_SINGLE && &magic != MAGIC_PAIR {
        return Err(VolumeError::Analyze {
            path: path.to_path_buf(),
        });
    }
    let dim0_bytes = [bytes[40], bytes[41]];
    let dim0 = if big_endian {
        i16::from_be_bytes(dim0_bytes)
    } else {
        i16::from_le_bytes(dim0_bytes)
    };
    if !(1..=7).contains(&dim0) {
        return Err(VolumeError::bad_header(
            path,
            format!("dim[0] is {dim0}, expected 1 to 7"),
        ));
    }
    // With sizeof_hdr and dim[0] checked, the crate's parser cannot fail on 348 bytes and
    // picks the same byte order (it swaps when dim[0] read natively is above 7).
    let header = NiftiHeader::from_reader(&bytes[..]).map_err(|e| VolumeError::NotNifti {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let parsed_big = header.endianness == Endianness::Big;
    if parsed_big != big_endian {
        return Err(VolumeError::bad_header(
            path,
            "byte order is ambiguous (sizeof_hdr and dim[0] disagree)",
        ));
    }
    Ok(header)
}

/// Validates a parsed header: datatype first, then dimensions, size limit and data offset.
pub(crate) fn validate(path: &Path, header: &NiftiHeader) -> Result<Layout, VolumeError> {
    let code = header.datatype;
    let datatype = check_datatype(path, code)?;
    let name = path.display();

    // The crate stores dim as u16; the format defines it as i16.
    let raw: [i16; 8] = header.dim.map(|d| d as i16);
    let ndim = raw[0];
    if !(1..=7).contains(&ndim) {
        return Err(VolumeError::bad_header(
            path,
            format!("dim[0] is {ndim}, expected 1 to 7"),
        ));
    }
    let ndim = ndim as usize;
    let mut dims = [1usize; 3];
    for (axis, slot) in dims.iter_mut().enumerate() {
        let i = axis + 1;
        if i <= ndim {
            let n = raw[i];
            if n < 1 {
                return Err(VolumeError::bad_header(
                    path,
                    format!("dim[{i}] is {n}; spatial sizes must be at least 1"),
                ));
            }
            *slot = n as usize;
        }
    }
    let mut volumes: u64 = 1;
    for (i, &n) in raw.iter().enumerate().take(ndim + 1).skip(4) {
        if n < 0 {
            return Err(VolumeError::bad_header(
                path,
                format!("dim[{i}] is {n}; sizes cannot be negative"),
            ));
        }
        volumes *= u64::from(n.max(1) as u16);
    }
    let voxels = dims.iter().map(|&n| n as u128).product::<u128>();
    if voxels > u128::from(MAX_VOXELS) {
        return Err(VolumeError::TooLarge {
            path: path.to_path_buf(),
            voxels,
            limit: MAX_VOXELS,
        });
    }

    let mut warnings = Vec::new();
    if volumes > 1 {
        warnings.push(format!(
            "{name}: 4-D input has {volumes} volumes; using the first"
        ));
    }
    let expected_bits = (datatype.size() * 8) as i16;
    if header.bitpix != expected_bits {
        warnings.push(format!(
            "{name}: bitpix is {} but datatype {} has {expected_bits} bits; trusting the datatype",
            header.bitpix,
            datatype.name()
        ));
    }

    let pair = header.magic == *MAGIC_PAIR;
    let offset = header.vox_offset;
    if !(0.0..=MAX_VOX_OFFSET).contains(&offset) {
        return Err(VolumeError::bad_header(
            path,
            format!("vox_offset is {offset}"),
        ));
    }
    // Truncation is intended: the offset is a non-negative whole number of bytes in practice.
    let mut vox_offset = offset as u64;
    if !pair && vox_offset < HEADER_SIZE as u64 + 4 {
        warnings.push(format!(
            "{name}: vox_offset {offset} is inside the header; reading data from byte 352"
        ));
        vox_offset = HEADER_SIZE as u64 + 4;
    }

    Ok(Layout {
        datatype,
        big_endian: header.endianness == Endianness::Big,
        dims,
        volumes,
        vox_offset,
        pair,
        warnings,
    })
}

/// Maps a datatype code to a supported scalar type or to the matching error.
fn check_datatype(path: &Path, code: i16) -> Result<DataType, VolumeError> {
    if let Some(t) = DataType::from_code(code) {
        return Ok(t);
    }
    let path = path.to_path_buf();
    let name = datatype_name(code);
    Err(match code {
        128 | 2304 => VolumeError::Rgb { path, code, name },
        32 | 1792 | 2048 => VolumeError::Complex { path, code, name },
        1 | 1536 => VolumeError::UnsupportedDatatype { path, code, name },
        _ => VolumeError::UnknownDatatype { path, code },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid little-endian single-file header.
    fn header_bytes() -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&348i32.to_le_bytes());
        for (i, d) in [3i16, 4, 5, 6, 1, 1, 1, 1].iter().enumerate() {
            b[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        b[70..72].copy_from_slice(&4i16.to_le_bytes());
        b[72..74].copy_from_slice(&16i16.to_le_bytes());
        b[108..112].copy_from_slice(&352f32.to_le_bytes());
        b[344..348].copy_from_slice(MAGIC_SINGLE);
        b
    }

    #[test]
    fn datatype_codes_round_trip() {
        for code in [2, 256, 512, 4, 768, 8, 1280, 1024, 16, 64] {
            let t = DataType::from_code(code).expect("scalar code");
            assert_eq!(t.code(), code);
        }
        assert_eq!(DataType::from_code(128), None);
    }

    #[test]
    fn valid_header_gives_layout() {
        let p = Path::new("x.nii");
        let h = parse_header(p, &header_bytes()).expect("valid header");
        let layout = validate(p, &h).expect("valid layout");
        assert_eq!(layout.dims, [4, 5, 6]);
        assert_eq!(layout.datatype, DataType::I16);
        assert_eq!(layout.vox_offset, 352);
        assert!(!layout.pair);
        assert!(layout.warnings.is_empty());
    }

    #[test]
    fn negative_and_zero_dims_are_refused() {
        let p = Path::new("x.nii");
        for bad in [-3i16, 0] {
            let mut b = header_bytes();
            b[44..46].copy_from_slice(&bad.to_le_bytes());
            let h = parse_header(p, &b).expect("structurally fine");
            let err = validate(p, &h).expect_err("bad dim");
            assert!(matches!(err, VolumeError::BadHeader { .. }), "{err}");
        }
    }

    #[test]
    fn huge_dims_are_refused_before_allocation() {
        let p = Path::new("x.nii");
        let mut b = header_bytes();
        for i in 1..=3 {
            b[40 + 2 * i..42 + 2 * i].copy_from_slice(&30000i16.to_le_bytes());
        }
        let h = parse_header(p, &b).expect("structurally fine");
        assert!(matches!(validate(p, &h), Err(VolumeError::TooLarge { .. })));
    }

    #[test]
    fn nifti2_analyze_and_garbage_are_told_apart() {
        let p = Path::new("x.nii");
        let mut b = header_bytes();
        b[0..4].copy_from_slice(&540i32.to_le_bytes());
        assert!(matches!(
            parse_header(p, &b),
            Err(VolumeError::Nifti2 { .. })
        ));
        let mut b = header_bytes();
        b[344..348].copy_from_slice(&[0; 4]);
        assert!(matches!(
            parse_header(p, &b),
            Err(VolumeError::Analyze { .. })
        ));
        let mut b = header_bytes();
        b[0..4].copy_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            parse_header(p, &b),
            Err(VolumeError::NotNifti { .. })
        ));
    }

    #[test]
    fn big_endian_header_is_detected() {
        let mut b = header_bytes();
        b[0..4].copy_from_slice(&348i32.to_be_bytes());
        for (i, d) in [3i16, 4, 5, 6, 1, 1, 1, 1].iter().enumerate() {
            b[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_be_bytes());
        }
        b[70..72].copy_from_slice(&4i16.to_be_bytes());
        b[72..74].copy_from_slice(&16i16.to_be_bytes());
        b[108..112].copy_from_slice(&352f32.to_be_bytes());
        let p = Path::new("x.nii");
        let h = parse_header(p, &b).expect("valid header");
        let layout = validate(p, &h).expect("valid layout");
        assert!(layout.big_endian);
        assert_eq!(layout.dims, [4, 5, 6]);
    }
}
