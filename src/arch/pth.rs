//! Writing an architecture code as MONAI's architecture file: a `torch.save` zip archive
//! whose pickle is a dict of numpy arrays (`node_a`, `arch_code_a`, `arch_code_a_max`,
//! `arch_code_c`), the layout MONAI's DiNTS search script saves and its training script
//! reads with `torch.load(..., weights_only=False)`.
//!
//! The pickle uses protocol 3 and numpy's own reduce form of an array
//! (`numpy.core.multiarray._reconstruct` plus a `BUILD` with shape, dtype and raw bytes), so
//! numpy 1.x and 2.x both read it. The zip holds stored (uncompressed) entries under one
//! top-level folder, as `torch.save` writes them.

use std::path::Path;

use super::{ArchCode, ArchError};

/// A 2-D little-endian numpy array to pickle.
enum Array {
    I64 { shape: [usize; 2], values: Vec<i64> },
    F64 { shape: [usize; 2], values: Vec<f64> },
}

/// Writes `code` as a MONAI architecture file (atomically).
pub fn write_monai_arch(path: &Path, code: &ArchCode) -> Result<(), ArchError> {
    let bytes = monai_arch_bytes(code, archive_name(path));
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| ArchError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn archive_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if clean.is_empty() {
        "archive".into()
    } else {
        clean
    }
}

/// The bytes of a MONAI architecture file for `code`, with `folder` as the archive's
/// top-level folder.
pub fn monai_arch_bytes(code: &ArchCode, folder: String) -> Vec<u8> {
    let (a, c) = code.to_dints_matrices();
    let layers = code.num_layers();
    let edges = code.num_edges();
    let node_a = code.node_a();
    let node_a = Array::I64 {
        shape: [layers + 1, code.num_depths()],
        values: node_a.iter().flatten().map(|&b| b as i64).collect(),
    };
    let a_f = Array::F64 {
        shape: [layers, edges],
        values: a.iter().flatten().map(|&v| v as f64).collect(),
    };
    let a_i = Array::I64 {
        shape: [layers, edges],
        values: a.iter().flatten().map(|&v| v as i64).collect(),
    };
    let c_i = Array::I64 {
        shape: [layers, edges],
        values: c.iter().flatten().map(|&v| v as i64).collect(),
    };
    let pickle = pickle_dict(&[
        ("node_a", node_a),
        ("arch_code_a", a_f),
        ("arch_code_a_max", a_i),
        ("arch_code_c", c_i),
    ]);
    stored_zip(&[
        (format!("{folder}/data.pkl"), pickle),
        (format!("{folder}/byteorder"), b"little".to_vec()),
        (format!("{folder}/version"), b"3\n".to_vec()),
    ])
}

// Pickle opcodes (protocol 3).
const PROTO: u8 = 0x80;
const EMPTY_DICT: u8 = b'}';
const MARK: u8 = b'(';
const SETITEMS: u8 = b'u';
const STOP: u8 = b'.';
const GLOBAL: u8 = b'c';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BINUNICODE: u8 = b'X';
const BINBYTES: u8 = b'B';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const REDUCE: u8 = b'R';
const BUILD: u8 = b'b';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;

fn pickle_dict(items: &[(&str, Array)]) -> Vec<u8> {
    let mut p = vec![PROTO, 3, EMPTY_DICT, MARK];
    for (key, array) in items {
        unicode(&mut p, key);
        pickle_array(&mut p, array);
    }
    p.extend([SETITEMS, STOP]);
    p
}

fn unicode(p: &mut Vec<u8>, s: &str) {
    p.push(BINUNICODE);
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn small_int(p: &mut Vec<u8>, v: usize) {
    if v < 256 {
        p.extend([BININT1, v as u8]);
    } else {
        p.push(BININT);
        p.extend((v as i32).to_le_bytes());
    }
}

fn pickle_array(p: &mut Vec<u8>, array: &Array) {
    let (shape, descr, raw): ([usize; 2], &str, Vec<u8>) = match array {
        Array::I64 { shape, values } => (
            *shape,
            "i8",
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        Array::F64 { shape, values } => (
            *shape,
            "f8",
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    };
    // _reconstruct(ndarray, (0,), b'b')
    p.push(GLOBAL);
    p.extend(b"numpy.core.multiarray\n_reconstruct\n");
    p.push(GLOBAL);
    p.extend(b"numpy\nndarray\n");
    small_int(p, 0);
    p.push(TUPLE1);
    p.push(BINBYTES);
    p.extend(1u32.to_le_bytes());
    p.push(b'b');
    p.extend([TUPLE3, REDUCE]);
    // State: (1, shape, dtype, is_fortran, raw bytes).
    p.push(MARK);
    small_int(p, 1);
    small_int(p, shape[0]);
    small_int(p, shape[1]);
    p.push(TUPLE2);
    // dtype(descr, False, True) with state (3, '<', None, None, None, -1, -1, 0).
    p.push(GLOBAL);
    p.extend(b"numpy\ndtype\n");
    unicode(p, descr);
    p.extend([NEWFALSE, NEWTRUE, TUPLE3, REDUCE]);
    p.push(MARK);
    small_int(p, 3);
    unicode(p, "<");
    p.extend([NONE, NONE, NONE]);
    p.push(BININT);
    p.extend((-1i32).to_le_bytes());
    p.push(BININT);
    p.extend((-1i32).to_le_bytes());
    small_int(p, 0);
    p.extend([TUPLE, BUILD]);
    p.push(NEWFALSE);
    p.push(BINBYTES);
    p.extend((raw.len() as u32).to_le_bytes());
    p.extend(&raw);
    p.extend([TUPLE, BUILD]);
}

/// A zip archive of stored entries.
fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let crc = crc.sum();
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| -> Vec<u8> {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes()); // version made by
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // stored
            h.extend(0u16.to_le_bytes()); // time
            h.extend(0x21u16.to_le_bytes()); // date (1980-01-01)
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra length
            if central {
                h.extend(0u16.to_le_bytes()); // comment length
                h.extend(0u16.to_le_bytes()); // disk number
                h.extend(0u16.to_le_bytes()); // internal attributes
                h.extend(0u32.to_le_bytes()); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(data);
        central.extend(header(0x0201_4b50, true));
    }
    let central_offset = out.len() as u32;
    let central_len = central.len() as u32;
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]); // disk numbers
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend(central_len.to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{SearchSpace, preset};

    #[test]
    fn archive_has_the_three_records_and_a_valid_directory() {
        let code = preset("dints-paper", &SearchSpace::dints(12, 4)).unwrap();
        let bytes = monai_arch_bytes(&code, "arch".into());
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        // End of central directory: 3 entries.
        let eocd = bytes.len() - 22;
        assert_eq!(&bytes[eocd..eocd + 4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([bytes[eocd + 10], bytes[eocd + 11]]), 3);
        let text = String::from_utf8_lossy(&bytes);
        for name in ["arch/data.pkl", "arch/byteorder", "arch/version"] {
            assert!(text.contains(name), "{name}");
        }
        // The pickle names every key once and ends with STOP.
        for key in ["node_a", "arch_code_a", "arch_code_a_max", "arch_code_c"] {
            assert!(text.contains(key), "{key}");
        }
    }

    #[test]
    fn arrays_hold_the_code() {
        let space = SearchSpace::dints(12, 4);
        let code = preset("dints-paper", &space).unwrap();
        let (_, c) = code.to_dints_matrices();
        let mut p = Vec::new();
        pickle_array(
            &mut p,
            &Array::I64 {
                shape: [12, 10],
                values: c.iter().flatten().map(|&v| v as i64).collect(),
            },
        );
        // The raw bytes follow the last BINBYTES length: 120 little-endian i64.
        let raw_len = 120 * 8;
        let start = p.len() - 2 - raw_len;
        assert_eq!(
            u32::from_le_bytes(p[start - 4..start].try_into().unwrap()) as usize,
            raw_len
        );
        let first = i64::from_le_bytes(p[start..start + 8].try_into().unwrap());
        assert_eq!(first, c[0][0] as i64);
    }
}
