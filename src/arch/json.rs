//! The JSON file format of architecture codes.
//!
//! ```json
//! {
//!   "format": "hypersegnas-arch",
//!   "version": 1,
//!   "num_layers": 12,
//!   "num_depths": 4,
//!   "cells": [["conv_3x3x3", "off", ...], ...]
//! }
//! ```
//!
//! `cells` has one row per layer and one entry per edge in DiNTS order; an entry is `off` or
//! an op name (MONAI's names or the short ones: `skip`, `conv`, `3x3x1`, ...). MONAI's own
//! matrices are accepted too: a file with `arch_code_a` and `arch_code_c` instead of `cells`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ArchCode, ArchError, num_edges};

/// The on-disk form of an architecture code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchFile {
    /// Always `hypersegnas-arch`.
    #[serde(default)]
    pub format: Option<String>,
    /// Format version, 1.
    #[serde(default)]
    pub version: Option<u32>,
    /// Number of layers.
    pub num_layers: usize,
    /// Number of resolution levels.
    pub num_depths: usize,
    /// Per layer, per edge: `off` or an op name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<Vec<Vec<String>>>,
    /// MONAI's edge matrix (alternative to `cells`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_code_a: Option<Vec<Vec<u8>>>,
    /// MONAI's op matrix (alternative to `cells`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_code_c: Option<Vec<Vec<u8>>>,
}

impl ArchFile {
    /// The file form of a code.
    pub fn from_code(code: &ArchCode) -> Self {
        let cells = (0..code.num_layers())
            .map(|l| {
                (0..code.num_edges())
                    .map(|e| code.get(l, e).map_or("off", |op| op.name()).to_string())
                    .collect()
            })
            .collect();
        Self {
            format: Some("hypersegnas-arch".into()),
            version: Some(1),
            num_layers: code.num_layers(),
            num_depths: code.num_depths(),
            cells: Some(cells),
            arch_code_a: None,
            arch_code_c: None,
        }
    }

    /// The code this file describes.
    pub fn to_code(&self) -> Result<ArchCode, String> {
        if let Some(format) = &self.format
            && format != "hypersegnas-arch"
        {
            return Err(format!("format is '{format}', expected 'hypersegnas-arch'"));
        }
        let edges = num_edges(self.num_depths);
        match (&self.cells, &self.arch_code_a, &self.arch_code_c) {
            (Some(cells), _, _) => {
                if cells.len() != self.num_layers {
                    return Err(format!(
                        "'cells' has {} rows but num_layers is {}",
                        cells.len(),
                        self.num_layers
                    ));
                }
                let mut code = ArchCode::empty(self.num_layers, self.num_depths);
                for (layer, row) in cells.iter().enumerate() {
                    if row.len() != edges {
                        return Err(format!(
                            "row {layer} of 'cells' has {} entries, expected {edges} \
                             (3 x num_depths - 2)",
                            row.len()
                        ));
                    }
                    for (edge, text) in row.iter().enumerate() {
                        let op = match text.trim().to_ascii_lowercase().as_str() {
                            "off" | "none" | "" | "-" | "." => None,
                            _ => Some(super::Op::parse(text).ok_or_else(|| {
                                format!("layer {layer} edge {edge}: unknown op '{text}'")
                            })?),
                        };
                        code.set(layer, edge, op);
                    }
                }
                Ok(code)
            }
            (None, Some(a), Some(c)) => {
                let code = ArchCode::from_dints_matrices(a, c, self.num_depths)
                    .map_err(|e| e.to_string())?;
                if code.num_layers() != self.num_layers {
                    return Err(format!(
                        "arch_code_a has {} rows but num_layers is {}",
                        code.num_layers(),
                        self.num_layers
                    ));
                }
                Ok(code)
            }
            _ => Err("needs 'cells', or both 'arch_code_a' and 'arch_code_c'".into()),
        }
    }
}

/// Reads an architecture code from a JSON file. The code is not validated against a
/// network here; callers do that with the network's search space.
pub fn read_arch_json(path: &Path) -> Result<ArchCode, ArchError> {
    let file_error = |message: String| ArchError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let file: ArchFile = serde_json::from_str(&text)
        .map_err(|e| file_error(format!("not an architecture file: {e}")))?;
    file.to_code().map_err(file_error)
}

/// Writes an architecture code as JSON, atomically (temporary file, then rename).
pub fn write_arch_json(path: &Path, code: &ArchCode) -> Result<(), ArchError> {
    let file_error = |message: String| ArchError::File {
        path: path.display().to_string(),
        message,
    };
    let text = serde_json::to_string_pretty(&ArchFile::from_code(code))
        .map_err(|e| file_error(e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| file_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{SearchSpace, preset};

    #[test]
    fn json_round_trip() {
        let code = preset("dints-paper", &SearchSpace::dints(12, 4)).unwrap();
        let text = serde_json::to_string(&ArchFile::from_code(&code)).unwrap();
        let back: ArchFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_code().unwrap(), code);
    }

    #[test]
    fn monai_matrices_are_accepted() {
        let text = r#"{"num_layers": 1, "num_depths": 2,
            "arch_code_a": [[1, 0, 1, 0]], "arch_code_c": [[1, 0, 0, 3]]}"#;
        let file: ArchFile = serde_json::from_str(text).unwrap();
        let code = file.to_code().unwrap();
        assert_eq!(code.get(0, 0), Some(crate::arch::Op::Conv3x3x3));
        assert_eq!(code.get(0, 2), Some(crate::arch::Op::Skip));
        assert_eq!(code.get(0, 3), None);
    }

    #[test]
    fn wrong_row_length_names_the_row() {
        let text = r#"{"num_layers": 1, "num_depths": 2, "cells": [["conv", "off"]]}"#;
        let file: ArchFile = serde_json::from_str(text).unwrap();
        let err = file.to_code().unwrap_err();
        assert!(err.contains("row 0") && err.contains("expected 4"), "{err}");
    }
}
