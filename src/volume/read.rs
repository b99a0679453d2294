//! Reading NIfTI-1 volumes (`.nii`, `.nii.gz`, `.hdr`/`.img` pairs, plain or gzipped) into
//! `f32` voxel arrays.
//!
//! The header is read and checked by [`super::header`] before anything else; then only the
//! bytes of the first 3-D volume are read and converted here, chunk by chunk, straight from
//! the raw bytes (the `nifti` crate is used for parsing the header only, since its own
//! conversions panic on RGB and complex data). Compression is detected from the gzip magic
//! bytes, not from the file name.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use nifti::NiftiHeader;

use super::Volume;
use super::error::VolumeError;
use super::geometry::{column_norms, header_geometry};
use super::header::{DataType, HEADER_SIZE, Layout, parse_header, validate};

/// Bytes converted at a time (a multiple of every element size).
const CHUNK_BYTES: usize = 1 << 20;

/// Upper bound of the gzip (deflate) expansion ratio, used to cap pre-allocation.
const MAX_GZIP_RATIO: u64 = 1100;

/// Reads the first 3-D volume of a NIfTI-1 image as `f32`, scaled by `scl_slope`/`scl_inter`.
///
/// `path` may name a `.nii`, `.nii.gz`, the `.hdr`/`.hdr.gz` of a pair, or its
/// `.img`/`.img.gz`. Never panics on bad files: every problem is a [`VolumeError`] naming the
/// file.
pub fn read_volume(path: &Path) -> Result<Volume, VolumeError> {
    // Last resort only: the reader is written not to panic on any input, and this guard just
    // turns an unforeseen bug into an error instead of taking the program down.
    std::panic::catch_unwind(|| read_volume_unguarded(path)).unwrap_or_else(|payload| {
        Err(VolumeError::Internal {
            path: path.to_path_buf(),
            message: panic_message(payload.as_ref()),
        })
    })
}

/// Reads and checks only the header (for `info`-style reporting).
///
/// The structure is checked (NIfTI-1 size and magic, byte order, `dim[0]`), but not the
/// datatype or dimensions, so that headers of unsupported images can still be shown. For a
/// pair, only the header file is needed.
pub fn read_header(path: &Path) -> Result<NiftiHeader, VolumeError> {
    // Last resort, as in `read_volume`.
    std::panic::catch_unwind(|| {
        let header_path = header_path_for(path)?;
        let (bytes, _) = read_raw_header(&header_path)?;
        parse_header(&header_path, &bytes)
    })
    .unwrap_or_else(|payload| {
        Err(VolumeError::Internal {
            path: path.to_path_buf(),
            message: panic_message(payload.as_ref()),
        })
    })
}

fn read_volume_unguarded(path: &Path) -> Result<Volume, VolumeError> {
    let header_path = header_path_for(path)?;
    let (bytes, stream) = read_raw_header(&header_path)?;
    let header = parse_header(&header_path, &bytes)?;
    let layout = validate(&header_path, &header)?;
    let mut warnings = layout.warnings.clone();

    let data = if layout.pair {
        drop(stream);
        let image_path = image_path_for(&header_path)?;
        let mut source = open(&image_path)?;
        read_voxels(&image_path, &mut source, 0, &layout)?
    } else {
        let mut source = stream;
        read_voxels(&header_path, &mut source, HEADER_SIZE as u64, &layout)?
    };
    let data = apply_scaling(data, &header, &mut warnings, path);
    if let Some(note) = non_finite_note(&data, layout.dims) {
        warnings.push(format!(
            "{}: {note}; segmentation counts them as 0 after intensity normalisation",
            path.display()
        ));
    }

    let geometry = header_geometry(&header);
    for w in geometry.warnings {
        warnings.push(format!("{}: {w}", path.display()));
    }
    let world_from_voxel = geometry.world_from_voxel;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Volume {
        data,
        dims: layout.dims,
        spacing: column_norms(&world_from_voxel),
        world_from_voxel,
        header,
        path: path.to_path_buf(),
        warnings,
    })
}

/// An open file, decompressing on the fly when it starts with the gzip magic.
pub(crate) struct Source {
    reader: Box<dyn Read>,
    gzip: bool,
    /// Size of the file on disk.
    file_len: u64,
}

/// Opens a file and detects gzip compression from its first two bytes.
pub(crate) fn open(path: &Path) -> Result<Source, VolumeError> {
    let file = File::open(path).map_err(|e| VolumeError::io(path, "open", e))?;
    let file_len = file
        .metadata()
        .map_err(|e| VolumeError::io(path, "stat", e))?
        .len();
    let mut buffered = BufReader::with_capacity(1 << 16, file);
    let head = buffered
        .fill_buf()
        .map_err(|e| VolumeError::io(path, "read", e))?;
    let gzip = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    Ok(Source {
        reader,
        gzip,
        file_len,
    })
}

impl Source {
    /// Reads until `buf` is full or the stream ends; returns the number of bytes read.
    fn read_full(&mut self, path: &Path, buf: &mut [u8]) -> Result<usize, VolumeError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(path, e)),
            }
        }
        Ok(filled)
    }

    /// Skips `n` bytes; returns how many could be skipped.
    fn skip(&mut self, path: &Path, n: u64) -> Result<u64, VolumeError> {
        let mut limited = (&mut self.reader).take(n);
        match io::copy(&mut limited, &mut io::sink()) {
            Ok(done) => Ok(done),
            Err(e) => Err(self.read_error(path, e)),
        }
    }

    fn read_error(&self, path: &Path, e: io::Error) -> VolumeError {
        if self.gzip {
            VolumeError::Gzip {
                path: path.to_path_buf(),
                source: e,
            }
        } else {
            VolumeError::io(path, "read", e)
        }
    }
}

/// Reads the first 348 bytes (decompressed as needed); returns them with the open stream
/// positioned just after them.
fn read_raw_header(path: &Path) -> Result<([u8; HEADER_SIZE], Source), VolumeError> {
    let mut source = open(path)?;
    let mut bytes = [0u8; HEADER_SIZE];
    let got = source.read_full(path, &mut bytes)?;
    if got < HEADER_SIZE {
        return Err(VolumeError::TooShort {
            path: path.to_path_buf(),
            len: got as u64,
        });
    }
    Ok((bytes, source))
}

/// Reads and converts the first volume. `position` is how many (decompressed) bytes of the
/// stream were already consumed.
fn read_voxels(
    path: &Path,
    source: &mut Source,
    position: u64,
    layout: &Layout,
) -> Result<Vec<f32>, VolumeError> {
    let offset = layout.vox_offset;
    let needed = layout.volume_bytes();
    let truncated = |got: u64| VolumeError::Truncated {
        path: path.to_path_buf(),
        offset,
        expected: needed,
        got,
    };
    // Uncompressed: the size on disk tells up front whether the data is all there.
    if !source.gzip && source.file_len < offset.saturating_add(needed) {
        return Err(truncated(source.file_len.saturating_sub(offset)));
    }
    if offset > position {
        let want = offset - position;
        if source.skip(path, want)? < want {
            return Err(truncated(0));
        }
    }

    let voxels = layout.voxels();
    let elem = layout.datatype.size();
    let capacity = if source.gzip {
        let bound = source.file_len.saturating_mul(MAX_GZIP_RATIO) / elem as u64;
        voxels.min(usize::try_from(bound).unwrap_or(usize::MAX))
    } else {
        voxels
    };
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(capacity)
        .map_err(|_| VolumeError::OutOfMemory {
            path: path.to_path_buf(),
            bytes: capacity as u64 * 4,
        })?;

    let mut buf = vec![0u8; needed.min(CHUNK_BYTES as u64) as usize];
    let mut remaining = needed;
    while remaining > 0 {
        let want = remaining.min(CHUNK_BYTES as u64) as usize;
        let got = source.read_full(path, &mut buf[..want])?;
        if got < want {
            return Err(truncated(needed - remaining + got as u64));
        }
        data.try_reserve(want / elem)
            .map_err(|_| VolumeError::OutOfMemory {
                path: path.to_path_buf(),
                bytes: needed / elem as u64 * 4,
            })?;
        convert(&buf[..want], layout.datatype, layout.big_endian, &mut data);
        remaining -= want as u64;
    }

    // For a single-volume gzip file the stream should end here: reading on lets the decoder
    // check the CRC, so corrupt files are reported rather than silently accepted.
    if source.gzip && layout.volumes == 1 {
        let mut tail = [0u8; 4096];
        for _ in 0..16 {
            if source.read_full(path, &mut tail)? < tail.len() {
                break;
            }
        }
    }
    Ok(data)
}

/// Appends the values in `bytes` (a whole number of elements) to `out` as `f32`.
fn convert(bytes: &[u8], datatype: DataType, big_endian: bool, out: &mut Vec<f32>) {
    // `as f32` rounds to nearest, which is the intended conversion for every type here.
    macro_rules! decode {
        ($t:ty, $n:literal, $to_f32:expr) => {{
            let (chunks, _) = bytes.as_chunks::<$n>();
            let to_f32 = $to_f32;
            if big_endian {
                out.extend(chunks.iter().map(|c| to_f32(<$t>::from_be_bytes(*c))));
            } else {
                out.extend(chunks.iter().map(|c| to_f32(<$t>::from_le_bytes(*c))));
            }
        }};
    }
    match datatype {
        DataType::U8 => out.extend(bytes.iter().map(|&b| f32::from(b))),
        DataType::I8 => out.extend(bytes.iter().map(|&b| f32::from(b as i8))),
        DataType::U16 => decode!(u16, 2, f32::from),
        DataType::I16 => decode!(i16, 2, f32::from),
        DataType::U32 => decode!(u32, 4, |v: u32| v as f32),
        DataType::I32 => decode!(i32, 4, |v: i32| v as f32),
        DataType::U64 => decode!(u64, 8, |v: u64| v as f32),
        DataType::I64 => decode!(i64, 8, |v: i64| v as f32),
        DataType::F32 => decode!(f32, 4, |v: f32| v),
        DataType::F64 => decode!(f64, 8, |v: f64| v as f32),
    }
}

/// Applies `v * scl_slope + scl_inter` in `f32`. A slope of 0 or a non-finite slope means no
/// scaling (as in nibabel); a non-finite intercept with a valid slope is taken as 0.
fn apply_scaling(
    mut data: Vec<f32>,
    header: &NiftiHeader,
    warnings: &mut Vec<String>,
    path: &Path,
) -> Vec<f32> {
    let slope = header.scl_slope;
    if slope.is_infinite() {
        // Not one of the spec's "no scaling" values (0, NaN), but unusable all the same.
        warnings.push(format!(
            "{}: scl_slope is {slope}; using no scaling",
            path.display()
        ));
    }
    if slope == 0.0 || !slope.is_finite() {
        return data;
    }
    let mut inter = header.scl_inter;
    if !inter.is_finite() {
        warnings.push(format!("{}: scl_inter is {inter}; using 0", path.display()));
        inter = 0.0;
    }
    if slope == 1.0 && inter == 0.0 {
        return data;
    }
    for v in &mut data {
        *v = *v * slope + inter;
    }
    data
}

/// "N of M voxels are NaN or infinite (the first at (x, y, z))", or `None` when all are
/// finite. `dims` gives the voxel index of the first (x fastest).
pub(crate) fn non_finite_note(data: &[f32], dims: [usize; 3]) -> Option<String> {
    let first = data.iter().position(|v| !v.is_finite())?;
    let count = data[first..].iter().filter(|v| !v.is_finite()).count();
    let [nx, ny, _] = dims;
    let at = [
        first % nx.max(1),
        first / nx.max(1) % ny.max(1),
        first / (nx * ny).max(1),
    ];
    Some(format!(
        "{count} of {} voxels are NaN or infinite (the first at {at:?})",
        data.len()
    ))
}

/// The header file for a path: itself, or for an `.img`/`.img.gz` its `.hdr`/`.hdr.gz`.
fn header_path_for(path: &Path) -> Result<PathBuf, VolumeError> {
    let Some((stem, suffix)) = split_suffix(path, &[".img.gz", ".img"]) else {
        return Ok(path.to_path_buf());
    };
    let upper = suffix.chars().any(|c| c.is_ascii_uppercase());
    let tried = with_suffixes(&stem, &[".hdr", ".hdr.gz"], upper);
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(VolumeError::MissingHeader {
            path: path.to_path_buf(),
            tried,
        }),
    }
}

/// The image file of a pair header: `x.hdr` -> `x.img` or `x.img.gz`; `x.hdr.gz` ->
/// `x.img.gz` or `x.img`. Other names lose their last extension (and `.gz`).
fn image_path_for(header_path: &Path) -> Result<PathBuf, VolumeError> {
    let (stem, suffix) = split_suffix(header_path, &[".hdr.gz", ".hdr"])
        .or_else(|| {
            let name = header_path.file_name()?.to_str()?;
            let base = name.strip_suffix(".gz").unwrap_or(name);
            let stem_len = base.rfind('.').unwrap_or(base.len());
            let stem = header_path.with_file_name(&name[..stem_len]);
            Some((stem, name[stem_len..].to_string()))
        })
        .unwrap_or_else(|| (header_path.to_path_buf(), String::new()));
    let upper = suffix.chars().any(|c| c.is_ascii_uppercase());
    let gz_first = suffix.to_ascii_lowercase().ends_with(".gz");
    let order: &[&str] = if gz_first {
        &[".img.gz", ".img"]
    } else {
        &[".img", ".img.gz"]
    };
    let tried = with_suffixes(&stem, order, upper);
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(VolumeError::MissingImage {
            path: header_path.to_path_buf(),
            tried,
        }),
    }
}

/// If the file name ends with one of `suffixes` (ignoring ASCII case), returns the path
/// without it and the suffix as written.
pub(crate) fn split_suffix(path: &Path, suffixes: &[&str]) -> Option<(PathBuf, String)> {
    let name = path.file_name()?.to_str()?;
    let lower = name.to_ascii_lowercase();
    let suffix = suffixes.iter().find(|s| lower.ends_with(*s))?;
    let cut = name.len() - suffix.len();
    if cut == 0 {
        return None;
    }
    Some((path.with_file_name(&name[..cut]), name[cut..].to_string()))
}

/// `stem` + each suffix (upper-cased when `upper`).
pub(crate) fn with_suffixes(stem: &Path, suffixes: &[&str], upper: bool) -> Vec<PathBuf> {
    let name = stem
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    suffixes
        .iter()
        .map(|s| {
            let s = if upper {
                s.to_ascii_uppercase()
            } else {
                (*s).to_string()
            };
            stem.with_file_name(format!("{name}{s}"))
        })
        .collect()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_handles_both_byte_orders() {
        let mut out = Vec::new();
        convert(&[0x01, 0x02, 0xff, 0xfe], DataType::I16, false, &mut out);
        assert_eq!(out, vec![513.0, -257.0]);
        out.clear();
        convert(&[0x01, 0x02, 0xff, 0xfe], DataType::I16, true, &mut out);
        assert_eq!(out, vec![258.0, -2.0]);
        out.clear();
        convert(&1.5f64.to_be_bytes(), DataType::F64, true, &mut out);
        assert_eq!(out, vec![1.5]);
        out.clear();
        convert(&[200, 56], DataType::I8, false, &mut out);
        assert_eq!(out, vec![-56.0, 56.0]);
        out.clear();
        convert(&u64::MAX.to_le_bytes(), DataType::U64, false, &mut out);
        assert_eq!(out, vec![u64::MAX as f32]);
    }

    #[test]
    fn non_finite_voxels_are_counted_and_located() {
        assert_eq!(non_finite_note(&[0.0, 1.0, -3.5], [3, 1, 1]), None);
        let mut data = vec![0.0; 2 * 3 * 4];
        data[1 + 2 * (2 + 3 * 2)] = f32::NAN;
        data[23] = f32::NEG_INFINITY;
        let note = non_finite_note(&data, [2, 3, 4]).unwrap();
        assert_eq!(
            note,
            "2 of 24 voxels are NaN or infinite (the first at [1, 2, 2])"
        );
    }

    #[test]
    fn scaling_follows_nibabel_rules() {
        let path = Path::new("x.nii");
        let mut warnings = Vec::new();
        let mut h = NiftiHeader {
            scl_slope: 0.0,
            scl_inter: 5.0,
            ..NiftiHeader::default()
        };
        assert_eq!(apply_scaling(vec![2.0], &h, &mut warnings, path), vec![2.0]);
        h.scl_slope = f32::NAN;
        assert_eq!(apply_scaling(vec![2.0], &h, &mut warnings, path), vec![2.0]);
        h.scl_slope = 2.0;
        let out = apply_scaling(vec![2.0, f32::NAN], &h, &mut warnings, path);
        assert_eq!(out[0], 9.0);
        assert!(out[1].is_nan());
        h.scl_inter = f32::INFINITY;
        assert_eq!(apply_scaling(vec![2.0], &h, &mut warnings, path), vec![4.0]);
        assert_eq!(warnings.len(), 1);
        h.scl_slope = f32::NEG_INFINITY;
        assert_eq!(apply_scaling(vec![2.0], &h, &mut warnings, path), vec![2.0]);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[1].contains("scl_slope is -inf"), "{warnings:?}");
    }

    #[test]
    fn pair_names_are_derived() {
        let (stem, suffix) =
            split_suffix(Path::new("/a/b.HDR.gz"), &[".hdr.gz", ".hdr"]).expect("has suffix");
        assert_eq!(stem, Path::new("/a/b"));
        assert_eq!(suffix, ".HDR.gz");
        let names = with_suffixes(&stem, &[".img"], true);
        assert_eq!(names, vec![PathBuf::from("/a/b.IMG")]);
        assert!(split_suffix(Path::new("/a/.img"), &[".img"]).is_none());
    }
}
