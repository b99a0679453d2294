//! Writing label maps and float channels as NIfTI-1 single files (`.nii` / `.nii.gz`).
//!
//! The header is written here byte by byte (348 bytes, little-endian, then a 4-byte
//! "no extensions" flag and the data at offset 352), starting from the header of the image the
//! output belongs to: the sform, qform (codes, quaternion, offsets), pixdim (qfac included) and
//! units are copied field for field, never recomputed, so viewers place the output exactly on
//! the input.
//!
//! Files are written atomically: to a temporary file in the destination directory, flushed to
//! disk, then renamed over the destination. On any error the temporary file is removed and
//! nothing is left behind. Writing over any file of the input image is refused.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;
use nifti::NiftiHeader;

use super::Volume;
use super::error::VolumeError;
use super::header::HEADER_SIZE;
use super::read::{split_suffix, with_suffixes};

/// NIfTI intent code for label maps (`NIFTI_INTENT_LABEL`).
const INTENT_LABEL: i16 = 1002;

/// Values converted per write call.
const VALUES_PER_CHUNK: usize = 1 << 16;

/// Write a label map on the grid of `like` (same dims, same sform/qform codes and values, same
/// pixdim, xyzt_units), datatype u8 when max label <= 255 else u16, scl_slope 1 / inter 0,
/// .nii or .nii.gz by extension. Written to a temporary file in the same directory, then
/// renamed. Refuses (error) if `path` resolves to any file of the input image `like.path`
/// (including the companion files of a `.hdr`/`.img` pair). Creates no file on error.
pub fn write_label_map(path: &Path, labels: &[u16], like: &Volume) -> Result<(), VolumeError> {
    let gzip = output_is_gzip(path)?;
    let voxels = grid_voxels(path, like)?;
    if labels.len() != voxels {
        return Err(VolumeError::DataLength {
            path: path.to_path_buf(),
            what: "label map",
            expected: voxels,
            got: labels.len(),
        });
    }
    refuse_input_files(path, like)?;
    let max = labels.iter().copied().max().unwrap_or(0);
    let small = max <= u16::from(u8::MAX);
    let mut header = output_header(like, None);
    header.intent_code = INTENT_LABEL;
    header.datatype = if small { 2 } else { 512 };
    header.bitpix = if small { 8 } else { 16 };
    header.cal_min = 0.0;
    header.cal_max = f32::from(max);
    set_description(&mut header, "hypersegnas label map");
    let level = Compression::default();
    write_atomically(path, gzip, level, |out| {
        out.write_all(&encode_header(&header))?;
        out.write_all(&[0; 4])?;
        let mut bytes = Vec::with_capacity(VALUES_PER_CHUNK * 2);
        for chunk in labels.chunks(VALUES_PER_CHUNK) {
            bytes.clear();
            if small {
                // Every value is <= 255 here, so the cast keeps it.
                bytes.extend(chunk.iter().map(|&v| v as u8));
            } else {
                bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            }
            out.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// Write float32 channels (4-D, `dim[4] = channels`; data channel-major, each channel x
/// fastest) on the grid of `like`, with the same rules as [`write_label_map`].
pub fn write_float_channels(
    path: &Path,
    data: &[f32],
    channels: usize,
    like: &Volume,
) -> Result<(), VolumeError> {
    let gzip = output_is_gzip(path)?;
    let voxels = grid_voxels(path, like)?;
    if channels == 0 || channels > i16::MAX as usize {
        return Err(VolumeError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!("{channels} channels; NIfTI-1 allows 1 to {}", i16::MAX),
        });
    }
    let expected = voxels.saturating_mul(channels);
    if data.len() != expected {
        return Err(VolumeError::DataLength {
            path: path.to_path_buf(),
            what: "channel data",
            expected,
            got: data.len(),
        });
    }
    refuse_input_files(path, like)?;
    let mut header = output_header(like, Some(channels));
    header.intent_code = 0;
    header.datatype = 16;
    header.bitpix = 32;
    header.cal_min = 0.0;
    header.cal_max = 0.0;
    set_description(&mut header, "hypersegnas float channels");
    // Float maps are large and compress poorly: favour speed.
    let level = Compression::fast();
    write_atomically(path, gzip, level, |out| {
        out.write_all(&encode_header(&header))?;
        out.write_all(&[0; 4])?;
        let mut bytes = Vec::with_capacity(VALUES_PER_CHUNK * 4);
        for chunk in data.chunks(VALUES_PER_CHUNK) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            out.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// Whether the output is gzipped (`.nii.gz`) or plain (`.nii`); other names are refused.
fn output_is_gzip(path: &Path) -> Result<bool, VolumeError> {
    match split_suffix(path, &[".nii.gz", ".nii"]) {
        Some((_, suffix)) => Ok(suffix.eq_ignore_ascii_case(".nii.gz")),
        None => Err(VolumeError::OutputExtension {
            path: path.to_path_buf(),
        }),
    }
}

/// Voxels of `like`'s grid, refusing sizes NIfTI-1 cannot store.
fn grid_voxels(path: &Path, like: &Volume) -> Result<usize, VolumeError> {
    if like.dims.iter().any(|&n| n == 0 || n > i16::MAX as usize) {
        return Err(VolumeError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!(
                "grid dims {:?}; NIfTI-1 allows 1 to {} per axis",
                like.dims,
                i16::MAX
            ),
        });
    }
    Ok(like.dims.iter().product())
}

/// The output header: `like`'s header with the geometry fields kept and everything about the
/// data (size, type, scaling, intent, extensions) reset. `channels` makes it 4-D. The caller
/// sets the datatype.
fn output_header(like: &Volume, channels: Option<usize>) -> NiftiHeader {
    let h = &like.header;
    let [nx, ny, nz] = like.dims.map(|n| n as u16);
    let dim = match channels {
        Some(c) => [4, nx, ny, nz, c as u16, 1, 1, 1],
        None => [3, nx, ny, nz, 1, 1, 1, 1],
    };
    NiftiHeader {
        sizeof_hdr: HEADER_SIZE as i32,
        data_type: [0; 10],
        db_name: [0; 18],
        extents: 0,
        session_error: 0,
        regular: 0,
        dim,
        intent_p1: 0.0,
        intent_p2: 0.0,
        intent_p3: 0.0,
        vox_offset: 352.0,
        scl_slope: 1.0,
        scl_inter: 0.0,
        glmax: 0,
        glmin: 0,
        aux_file: [0; 24],
        intent_name: [0; 16],
        magic: *b"n+1\0",
        ..h.clone()
    }
}

/// Puts `text` in the 80-byte `descrip` field.
fn set_description(header: &mut NiftiHeader, text: &str) {
    let mut d = vec![0u8; 80];
    let n = text.len().min(79);
    d[..n].copy_from_slice(&text.as_bytes()[..n]);
    header.descrip = d;
}

/// Encodes a header as the 348 bytes of NIfTI-1, little-endian, every field as stored.
pub(crate) fn encode_header(h: &NiftiHeader) -> [u8; HEADER_SIZE] {
    let mut b = Vec::with_capacity(HEADER_SIZE);
    let f32s = |b: &mut Vec<u8>, vs: &[f32]| vs.iter().for_each(|v| b.extend(v.to_le_bytes()));
    b.extend(h.sizeof_hdr.to_le_bytes());
    b.extend(h.data_type);
    b.extend(h.db_name);
    b.extend(h.extents.to_le_bytes());
    b.extend(h.session_error.to_le_bytes());
    b.push(h.regular);
    b.push(h.dim_info);
    h.dim.iter().for_each(|d| b.extend(d.to_le_bytes()));
    f32s(&mut b, &[h.intent_p1, h.intent_p2, h.intent_p3]);
    for v in [h.intent_code, h.datatype, h.bitpix, h.slice_start] {
        b.extend(v.to_le_bytes());
    }
    f32s(&mut b, &h.pixdim);
    f32s(&mut b, &[h.vox_offset, h.scl_slope, h.scl_inter]);
    b.extend(h.slice_end.to_le_bytes());
    b.push(h.slice_code);
    b.push(h.xyzt_units);
    f32s(&mut b, &[h.cal_max, h.cal_min, h.slice_duration, h.toffset]);
    b.extend(h.glmax.to_le_bytes());
    b.extend(h.glmin.to_le_bytes());
    let mut descrip = [0u8; 80];
    let n = h.descrip.len().min(80);
    descrip[..n].copy_from_slice(&h.descrip[..n]);
    b.extend(descrip);
    b.extend(h.aux_file);
    b.extend(h.qform_code.to_le_bytes());
    b.extend(h.sform_code.to_le_bytes());
    f32s(
        &mut b,
        &[
            h.quatern_b,
            h.quatern_c,
            h.quatern_d,
            h.quatern_x,
            h.quatern_y,
            h.quatern_z,
        ],
    );
    f32s(&mut b, &h.srow_x);
    f32s(&mut b, &h.srow_y);
    f32s(&mut b, &h.srow_z);
    b.extend(h.intent_name);
    b.extend(h.magic);
    let mut out = [0u8; HEADER_SIZE];
    out.copy_from_slice(&b);
    out
}

/// Refuses an output path that is (or links to) any file of the input image.
fn refuse_input_files(path: &Path, like: &Volume) -> Result<(), VolumeError> {
    if fs::symlink_metadata(path).is_err() {
        // Nothing there yet, so nothing of the input can be overwritten.
        return Ok(());
    }
    for input in input_files(&like.path) {
        if crate::fsutil::same_file(path, &input) {
            return Err(VolumeError::SameAsInput {
                path: path.to_path_buf(),
                input,
            });
        }
    }
    Ok(())
}

/// The files an image may have been read from: the path itself and, for a pair, every
/// `.hdr`/`.img` (gzipped or not, either case) with the same stem.
fn input_files(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    let pair = [".hdr.gz", ".hdr", ".img.gz", ".img"];
    if let Some((stem, _)) = split_suffix(path, &pair) {
        files.extend(with_suffixes(&stem, &pair, false));
        files.extend(with_suffixes(&stem, &pair, true));
    }
    files
}

/// Distinguishes temporary files made by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new, empty temporary file next to `path`.
fn create_temp(path: &Path) -> Result<(PathBuf, File), VolumeError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last_error = None;
    for _ in 0..64 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(VolumeError::io(
                    path,
                    "create a temporary file beside it",
                    e,
                ));
            }
        }
    }
    let e = last_error.unwrap_or_else(|| io::Error::other("no free temporary name"));
    Err(VolumeError::io(
        path,
        "create a temporary file beside it",
        e,
    ))
}

/// Writes through `write` into a temporary file (gzipped when asked), syncs it, and renames
/// it to `path`; removes the temporary file on any error.
fn write_atomically(
    path: &Path,
    gzip: bool,
    level: Compression,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), VolumeError> {
    let (temp, file) = create_temp(path)?;
    let written = (|| -> io::Result<()> {
        let buffered = BufWriter::with_capacity(1 << 20, file);
        let buffered = if gzip {
            let mut encoder = GzEncoder::new(buffered, level);
            write(&mut encoder)?;
            encoder.finish()?
        } else {
            let mut buffered = buffered;
            write(&mut buffered)?;
            buffered
        };
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(VolumeError::io(path, "write", e));
    }
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(VolumeError::io(
            path,
            "move the finished file into place",
            e,
        ));
    }
    Ok(())
}

/// Checks, before any work is done, that `path` can take a NIfTI output: a `.nii` or
/// `.nii.gz` name in a folder that exists.
pub fn check_output_path(path: &Path) -> Result<(), VolumeError> {
    output_is_gzip(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(VolumeError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!("the folder {} does not exist", parent.display()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encoding_puts_fields_at_their_offsets() {
        let h = NiftiHeader {
            dim: [3, 10, 20, 30, 1, 1, 1, 1],
            datatype: 2,
            bitpix: 8,
            vox_offset: 352.0,
            qform_code: 1,
            sform_code: 2,
            srow_z: [0.0, 0.0, 2.5, -7.0],
            magic: *b"n+1\0",
            ..NiftiHeader::default()
        };
        let b = encode_header(&h);
        let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]);
        let f32_at = |o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        assert_eq!(i32::from_le_bytes([b[0], b[1], b[2], b[3]]), 348);
        assert_eq!(i16_at(40), 3);
        assert_eq!(i16_at(46), 30);
        assert_eq!(i16_at(70), 2);
        assert_eq!(i16_at(72), 8);
        assert_eq!(f32_at(108), 352.0);
        assert_eq!(i16_at(252), 1);
        assert_eq!(i16_at(254), 2);
        assert_eq!(f32_at(320), 2.5);
        assert_eq!(f32_at(324), -7.0);
        assert_eq!(&b[344..348], b"n+1\0");
        // And the crate's parser reads it back identically.
        let back = NiftiHeader::from_reader(&b[..]).expect("parses");
        assert_eq!(back.srow_z, h.srow_z);
        assert_eq!(back.dim, h.dim);
    }

    #[test]
    fn output_names_must_be_nifti() {
        assert_eq!(output_is_gzip(Path::new("a/b.nii")).ok(), Some(false));
        assert_eq!(output_is_gzip(Path::new("a/b.NII.GZ")).ok(), Some(true));
        assert!(output_is_gzip(Path::new("a/b.hdr")).is_err());
        assert!(output_is_gzip(Path::new("a/.nii")).is_err());
    }

    #[test]
    fn pair_inputs_protect_all_companions() {
        let files = input_files(Path::new("/d/x.hdr"));
        assert!(files.contains(&PathBuf::from("/d/x.img")));
        assert!(files.contains(&PathBuf::from("/d/x.img.gz")));
        assert!(files.contains(&PathBuf::from("/d/x.HDR.GZ")));
        assert_eq!(input_files(Path::new("/d/x.nii")).len(), 1);
    }
}
