//! numpy `.npy` files of float32 values: reading patches and writing logits.
//!
//! Only little-endian float32 (`<f4`) in C order is read; anything else is refused with a
//! message saying how to convert it in numpy. Files are written as format version 1.0 with
//! the header padded to 64 bytes, atomically.

use std::path::{Path, PathBuf};

/// A float32 array.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// `.npy` errors; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a usable `.npy` array.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads a little-endian float32 C-order array.
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes).map_err(|message| NpyError::Format {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses the bytes of a `.npy` file (see [`read_npy`]).
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, String> {
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated .npy header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    match descr {
        "<f4" => {}
        ">f4" => {
            return Err("values are big-endian float32 (>f4); convert with \
                        a.astype('<f4') first"
                .into());
        }
        other => {
            return Err(format!(
                "values are '{other}', expected little-endian float32 ('<f4'); convert with \
                 a.astype(numpy.float32) first"
            ));
        }
    }
    let fortran = dict_value(header, "fortran_order").ok_or("no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("the array is in Fortran order; save numpy.ascontiguousarray(a)".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("the .npy header has no 'shape'")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text}"))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or("the shape overflows")?;
    let data = &bytes[start + header_len..];
    if data.len() != count * 4 {
        return Err(format!(
            "shape {shape:?} needs {} bytes of data but the file has {} (truncated?)",
            count * 4,
            data.len()
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(NpyArray { shape, values })
}

/// The text of `key`'s value in the header's Python dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// The bytes of a `.npy` file holding `values` with `shape` as `<f4`.
pub fn npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend(MAGIC);
    out.extend([1, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in values {
        out.extend(v.to_le_bytes());
    }
    out
}

/// Writes `values` with `shape` atomically.
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<(), NpyError> {
    crate::fsutil::write_atomic(path, &npy_bytes(shape, values)).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let bytes = npy_bytes(&[2, 3, 4], &values);
        assert_eq!((bytes.len() - 24 * 4) % 64, 0);
        let back = parse_npy(&bytes).unwrap();
        assert_eq!(back.shape, vec![2, 3, 4]);
        assert_eq!(back.values, values);
    }

    #[test]
    fn numpy_written_header_parses() {
        // np.save of np.zeros((1, 2), np.float32), numpy 2.x header.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{header:<117}\n");
        bytes.extend((padded.len() as u16).to_le_bytes());
        bytes.extend(padded.as_bytes());
        bytes.extend([0u8; 8]);
        assert_eq!(parse_npy(&bytes).unwrap().shape, vec![1, 2]);
    }

    #[test]
    fn wrong_dtype_order_and_size_are_refused() {
        let good = npy_bytes(&[2, 2], &[0.0; 4]);
        // Same-length substitutions inside the header.
        let swap = |from: &str, to: &str| {
            let mut bytes = good.clone();
            let at = bytes
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap();
            bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
            bytes
        };
        assert!(
            parse_npy(&swap("<f4", "<f8"))
                .unwrap_err()
                .contains("'<f8'")
        );
        assert!(
            parse_npy(&swap("<f4", ">f4"))
                .unwrap_err()
                .contains("big-endian")
        );
        assert!(
            parse_npy(&swap("False", "True "))
                .unwrap_err()
                .contains("Fortran")
        );
        for len in 0..good.len() {
            assert!(parse_npy(&good[..len]).is_err());
        }
    }
}
