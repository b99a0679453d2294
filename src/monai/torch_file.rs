//! Reading PyTorch files without Python: `torch.save` zip archives (state dicts and MONAI's
//! architecture files holding numpy arrays) and `safetensors.torch` state dicts.
//!
//! A `torch.save` archive holds `<name>/data.pkl` (the pickled object, read by
//! [`super::pickle`]), one `<name>/data/<key>` entry per storage and `<name>/byteorder`.
//! Tensors reference storages by key with an element offset, a shape and strides; values
//! are gathered from the memory-mapped archive only when asked for.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::pickle::{self, TensorRef, Value};
use super::zip::ZipArchive;
use crate::checkpoint::SafetensorsFile;
use crate::model::TensorSource;

/// Errors reading a PyTorch or safetensors file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's contents are unusable.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Element types of torch storages and numpy arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// float32.
    F32,
    /// float64.
    F64,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
    /// int64.
    I64,
    /// int32.
    I32,
    /// int16.
    I16,
    /// int8.
    I8,
    /// uint8.
    U8,
    /// bool.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// numpy's type code without byte order (`f4`, `i8`, `b1`, ...).
    fn from_numpy(code: &str) -> Option<Self> {
        let code = code.trim_start_matches(['<', '>', '=', '|']);
        Some(match code {
            "f4" | "float32" => DType::F32,
            "f8" | "float64" => DType::F64,
            "f2" | "float16" => DType::F16,
            "i8" | "int64" => DType::I64,
            "i4" | "int32" => DType::I32,
            "i2" | "int16" => DType::I16,
            "i1" | "int8" => DType::I8,
            "u1" | "uint8" => DType::U8,
            "b1" | "bool" => DType::Bool,
            _ => return None,
        })
    }

    /// Converts one element to f64.
    fn read(self, b: &[u8], big_endian: bool) -> f64 {
        let mut a = [0u8; 8];
        let n = self.size();
        a[..n].copy_from_slice(&b[..n]);
        if big_endian {
            a[..n].reverse();
        }
        match self {
            DType::F32 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            DType::F64 => f64::from_le_bytes(a),
            DType::F16 => half_to_f32(u16::from_le_bytes([a[0], a[1]])) as f64,
            DType::BF16 => f32::from_bits((u16::from_le_bytes([a[0], a[1]]) as u32) << 16) as f64,
            DType::I64 => i64::from_le_bytes(a) as f64,
            DType::I32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            DType::I16 => i16::from_le_bytes([a[0], a[1]]) as f64,
            DType::I8 => a[0] as i8 as f64,
            DType::U8 => a[0] as f64,
            DType::Bool => (a[0] != 0) as u8 as f64,
        }
    }
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        0x1f if frac == 0.0 => f32::INFINITY,
        0x1f => f32::NAN,
        _ => (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// The bytes of one storage.
enum StorageBytes {
    /// A byte range of the memory map (stored entry).
    Range(usize, usize),
    /// Inflated from a compressed entry.
    Owned(Vec<u8>),
}

/// An opened `torch.save` archive: its pickled object and its storages.
pub struct TorchArchive {
    path: PathBuf,
    map: memmap2::Mmap,
    storages: HashMap<String, StorageBytes>,
    big_endian: bool,
    /// The unpickled object.
    pub root: Value,
}

impl TorchArchive {
    /// Opens and unpickles `path`.
    pub fn open(path: &Path) -> Result<Self, TorchFileError> {
        let map = map_file(path)?;
        let format = |message: String| TorchFileError::Format {
            path: path.to_path_buf(),
            message,
        };
        if !ZipArchive::looks_like_zip(&map) {
            let hint = if map.starts_with(&[0x80]) {
                "this is the legacy (pre-1.6) torch.save format, which is not supported; \
                 re-save it with torch >= 1.6 (the default zip format) or as .safetensors"
            } else {
                "not a torch.save zip archive"
            };
            return Err(format(hint.into()));
        }
        let zip = ZipArchive::parse(&map).map_err(&format)?;
        let pkl = zip
            .entries()
            .iter()
            .find(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"))
            .ok_or_else(|| format("no data.pkl entry: not a torch.save archive".into()))?;
        let prefix = pkl.name.trim_end_matches("data.pkl").to_string();
        let big_endian = match zip.entry(&format!("{prefix}byteorder")) {
            Some(e) => zip.read(e).map_err(&format)?.as_ref() == b"big",
            None => false,
        };
        let pkl_bytes = zip.read(pkl).map_err(&format)?;
        let root = pickle::load(&pkl_bytes).map_err(|e| format(format!("data.pkl: {e}")))?;

        let data_prefix = format!("{prefix}data/");
        let mut storages = HashMap::new();
        for entry in zip.entries() {
            let Some(key) = entry.name.strip_prefix(&data_prefix) else {
                // Read only for its CRC-32 check, so that damage anywhere is reported; these
                // records (version, byte order, ids) are a few bytes each.
                zip.read(entry).map_err(&format)?;
                continue;
            };
            let bytes = match zip.stored_range(entry).map_err(&format)? {
                Some((start, end)) => StorageBytes::Range(start, end),
                None => StorageBytes::Owned(zip.read(entry).map_err(&format)?.into_owned()),
            };
            storages.insert(key.to_string(), bytes);
        }
        drop(pkl_bytes);
        Ok(Self {
            path: path.to_path_buf(),
            map,
            storages,
            big_endian,
            root,
        })
    }

    fn storage(&self, key: &str) -> Option<&[u8]> {
        match self.storages.get(key)? {
            StorageBytes::Range(start, end) => self.map.get(*start..*end),
            StorageBytes::Owned(bytes) => Some(bytes),
        }
    }

    /// Checks a tensor reference against its storage; the error says what is wrong.
    fn check_tensor(&self, t: &TensorRef) -> Result<DType, String> {
        let dtype = DType::from_storage(&t.storage_type).ok_or_else(|| {
            format!(
                "storage type {} is not supported (float32/64/16, bfloat16, integer and \
                 bool storages are)",
                t.storage_type
            )
        })?;
        let bytes = self
            .storage(&t.storage)
            .ok_or_else(|| format!("storage '{}' is missing from the archive", t.storage))?;
        let numel: usize = t.shape.iter().product();
        if numel > 0 {
            let last = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&n, &s)| {
                    acc.checked_add((n - 1).checked_mul(s)?)
                })
                .ok_or("tensor extent overflows")?;
            let needed = (last + 1)
                .checked_mul(dtype.size())
                .ok_or("tensor extent overflows")?;
            if needed > bytes.len() {
                return Err(format!(
                    "storage '{}' holds {} bytes but the tensor needs {needed} (truncated file?)",
                    t.storage,
                    bytes.len()
                ));
            }
        }
        Ok(dtype)
    }

    /// The values of a checked tensor, in row-major order, as f64.
    fn gather(&self, t: &TensorRef, dtype: DType) -> Option<Vec<f64>> {
        let bytes = self.storage(&t.storage)?;
        let numel: usize = t.shape.iter().product();
        let size = dtype.size();
        let mut out = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let element = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            let b = bytes.get(element * size..(element + 1) * size)?;
            out.push(dtype.read(b, self.big_endian));
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < t.shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Some(out)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn map_file(path: &Path) -> Result<memmap2::Mmap, TorchFileError> {
    let io = |source| TorchFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Err(TorchFileError::Format {
            path: path.to_path_buf(),
            message: "the file is empty".into(),
        });
    }
    // SAFETY: read-only map; a file changed meanwhile gives wrong values or a format error
    // from the bounds-checked readers, never out-of-bounds access.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// Where a state dict's tensors live.
enum Backing {
    Torch(TorchArchive),
    Safetensors(SafetensorsFile),
}

/// One tensor of a state dict.
struct Entry {
    shape: Vec<usize>,
    /// Torch: the reference and its element type; safetensors: the original key.
    origin: Origin,
}

enum Origin {
    Torch(Rc<TensorRef>, DType),
    Safetensors(String),
}

/// A PyTorch state dict (`torch.save(model.state_dict())`, optionally wrapped as
/// `{"state_dict": …}` or `{"model": …}` and with keys prefixed `module.` by
/// `DataParallel`), or a `safetensors.torch` file. Keys are exposed without the prefix.
pub struct StateDict {
    path: PathBuf,
    backing: Backing,
    tensors: BTreeMap<String, Entry>,
    /// Entries that were not tensors (ignored), for reports.
    pub skipped: Vec<String>,
}

impl StateDict {
    /// Opens a `.pt`/`.pth`/`.bin` torch archive or a `.safetensors` file (by content).
    pub fn open(path: &Path) -> Result<Self, TorchFileError> {
        let head = {
            use std::io::Read;
            let mut head = [0u8; 8];
            let mut file = File::open(path).map_err(|source| TorchFileError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let n = file.read(&mut head).unwrap_or(0);
            head[..n].to_vec()
        };
        if ZipArchive::looks_like_zip(&head) || head.first() == Some(&0x80) {
            Self::from_archive(TorchArchive::open(path)?)
        } else {
            Self::from_safetensors(path)
        }
    }

    fn from_safetensors(path: &Path) -> Result<Self, TorchFileError> {
        let file = SafetensorsFile::open(path).map_err(|e| TorchFileError::Format {
            path: path.to_path_buf(),
            message: match e {
                crate::checkpoint::CheckpointError::Format { message, .. } => {
                    format!("neither a torch.save zip archive nor a safetensors file ({message})")
                }
                other => other.to_string(),
            },
        })?;
        let mut tensors = BTreeMap::new();
        for key in file.keys() {
            let shape = file.shape(&key).unwrap_or_default();
            tensors.insert(
                strip_prefix(&key).to_string(),
                Entry {
                    shape,
                    origin: Origin::Safetensors(key),
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            backing: Backing::Safetensors(file),
            tensors,
            skipped: Vec::new(),
        })
    }

    fn from_archive(archive: TorchArchive) -> Result<Self, TorchFileError> {
        let path = archive.path().to_path_buf();
        let format = |message: String| TorchFileError::Format {
            path: path.clone(),
            message,
        };
        let dict = unwrap_state_dict(&archive.root).ok_or_else(|| {
            format(format!(
                "the pickled object is a {}, not a state dict (a dict of tensors, optionally \
                 under 'state_dict' or 'model')",
                archive.root.kind()
            ))
        })?;
        let mut tensors = BTreeMap::new();
        let mut skipped = Vec::new();
        for (k, v) in dict.borrow().iter() {
            let Value::Str(key) = k else {
                skipped.push(format!("a {} key", k.kind()));
                continue;
            };
            let Value::Tensor(t) = v else {
                skipped.push(key.clone());
                continue;
            };
            let dtype = archive
                .check_tensor(t)
                .map_err(|m| format(format!("tensor '{key}': {m}")))?;
            tensors.insert(
                strip_prefix(key).to_string(),
                Entry {
                    shape: t.shape.clone(),
                    origin: Origin::Torch(t.clone(), dtype),
                },
            );
        }
        if tensors.is_empty() {
            return Err(format("the state dict holds no tensors".into()));
        }
        Ok(Self {
            path,
            backing: Backing::Torch(archive),
            tensors,
            skipped,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there is no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Values as f64 (for small tensors such as architecture parameters).
    pub fn values_f64(&self, key: &str) -> Option<Vec<f64>> {
        let entry = self.tensors.get(key)?;
        match (&self.backing, &entry.origin) {
            (Backing::Torch(a), Origin::Torch(t, dtype)) => a.gather(t, *dtype),
            (Backing::Safetensors(f), Origin::Safetensors(k)) => {
                Some(f.values(k)?.iter().map(|&v| v as f64).collect())
            }
            _ => None,
        }
    }
}

impl TensorSource for StateDict {
    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|e| e.shape.clone())
    }

    fn values(&self, key: &str) -> Option<Cow<'_, [f32]>> {
        let entry = self.tensors.get(key)?;
        match (&self.backing, &entry.origin) {
            (Backing::Torch(a), Origin::Torch(t, dtype)) => {
                let values = a.gather(t, *dtype)?;
                Some(Cow::Owned(values.into_iter().map(|v| v as f32).collect()))
            }
            (Backing::Safetensors(f), Origin::Safetensors(k)) => f.values(k),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

/// `module.` (from `DataParallel`) removed.
fn strip_prefix(key: &str) -> &str {
    key.strip_prefix("module.").unwrap_or(key)
}

/// The dict of tensors: the root, or under `state_dict` / `model` / `network`.
fn unwrap_state_dict(root: &Value) -> Option<pickle::Dict> {
    let Value::Dict(d) = root else {
        return None;
    };
    for wrapper in ["state_dict", "model", "network", "net"] {
        let inner = d.borrow().iter().find_map(|(k, v)| match (k, v) {
            (Value::Str(s), Value::Dict(inner)) if s == wrapper => Some(inner.clone()),
            _ => None,
        });
        if let Some(inner) = inner {
            return Some(inner);
        }
    }
    Some(d.clone())
}

/// An n-dimensional array read from a pickle (numpy array or torch tensor), as f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f64>,
}

/// Reads the numpy array (or tensor) `value` of an archive.
pub fn array_of(archive: &TorchArchive, value: &Value) -> Result<Array, String> {
    array_at_depth(archive, value, 0)
}

/// Nested lists deeper than this are refused (a crafted pickle can even make a list that
/// contains itself).
const MAX_NESTING: usize = 16;

fn array_at_depth(archive: &TorchArchive, value: &Value, depth: usize) -> Result<Array, String> {
    if depth > MAX_NESTING {
        return Err(format!("lists nested deeper than {MAX_NESTING} levels"));
    }
    match value {
        Value::Tensor(t) => {
            let dtype = archive.check_tensor(t)?;
            let values = archive.gather(t, dtype).ok_or("unreadable tensor")?;
            Ok(Array {
                shape: t.shape.clone(),
                values,
            })
        }
        Value::List(_) | Value::Tuple(_) => {
            // A nested list of numbers.
            let items = value.items().unwrap_or_default();
            let mut rows = Vec::new();
            for item in &items {
                rows.push(match item {
                    Value::Int(i) => Array {
                        shape: vec![],
                        values: vec![*i as f64],
                    },
                    Value::Float(f) => Array {
                        shape: vec![],
                        values: vec![*f],
                    },
                    Value::Bool(b) => Array {
                        shape: vec![],
                        values: vec![*b as u8 as f64],
                    },
                    other => array_at_depth(archive, other, depth + 1)?,
                });
            }
            let inner = rows.first().map(|r| r.shape.clone()).unwrap_or_default();
            if rows.iter().any(|r| r.shape != inner) {
                return Err("a ragged nested list".into());
            }
            let mut shape = vec![rows.len()];
            shape.extend(inner);
            Ok(Array {
                shape,
                values: rows.into_iter().flat_map(|r| r.values).collect(),
            })
        }
        Value::Object(o) => {
            let o = o.borrow();
            let name = o.callable.global_name().unwrap_or_default();
            if !name.ends_with("multiarray._reconstruct") {
                return Err(format!("a {}, not an array", value.kind()));
            }
            // BUILD state: (version, shape, dtype, is_fortran, raw bytes).
            let state = o
                .state
                .as_ref()
                .and_then(Value::items)
                .ok_or("array without state")?;
            let [_, shape, dtype, fortran, raw] = state.as_slice() else {
                return Err("unexpected numpy array state".into());
            };
            let shape: Vec<usize> = shape
                .items()
                .ok_or("bad array shape")?
                .iter()
                .map(|v| match v {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err("bad array shape"),
                })
                .collect::<Result<_, _>>()?;
            let (dtype, big_endian) = numpy_dtype(dtype)?;
            let Value::Bytes(raw) = raw else {
                return Err("numpy object arrays are not supported".into());
            };
            let numel: usize = shape.iter().product();
            if raw.len() != numel * dtype.size() {
                return Err(format!(
                    "array data has {} bytes, expected {}",
                    raw.len(),
                    numel * dtype.size()
                ));
            }
            let mut values: Vec<f64> = raw
                .chunks_exact(dtype.size())
                .map(|b| dtype.read(b, big_endian))
                .collect();
            if matches!(fortran, Value::Bool(true)) && shape.len() > 1 {
                values = fortran_to_c(&values, &shape);
            }
            Ok(Array { shape, values })
        }
        other => Err(format!("a {}, not an array", other.kind())),
    }
}

/// numpy's `dtype(code, align, copy)` object with its `BUILD` state `(3, order, …)`.
fn numpy_dtype(value: &Value) -> Result<(DType, bool), String> {
    let Value::Object(o) = value else {
        return Err(format!("array dtype is a {}", value.kind()));
    };
    let o = o.borrow();
    let args = o.args.items().unwrap_or_default();
    let Some(Value::Str(code)) = args.first() else {
        return Err("array dtype without a type code".into());
    };
    let dtype =
        DType::from_numpy(code).ok_or_else(|| format!("numpy dtype '{code}' is not supported"))?;
    let order = o
        .state
        .as_ref()
        .and_then(Value::items)
        .and_then(|s| match s.get(1) {
            Some(Value::Str(order)) => Some(order.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "<".into());
    Ok((dtype, order == ">"))
}

fn fortran_to_c(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = shape.len();
    let mut f_strides = vec![1usize; n];
    for axis in 1..n {
        f_strides[axis] = f_strides[axis - 1] * shape[axis - 1];
    }
    let mut out = Vec::with_capacity(values.len());
    let mut index = vec![0usize; n];
    for _ in 0..values.len() {
        let at: usize = index.iter().zip(&f_strides).map(|(i, s)| i * s).sum();
        out.push(values[at]);
        for axis in (0..n).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// The string-keyed entries of the archive's root dict.
pub fn root_entries(archive: &TorchArchive) -> Option<Vec<(String, Value)>> {
    let Value::Dict(d) = &archive.root else {
        return None;
    };
    Some(
        d.borrow()
            .iter()
            .filter_map(|(k, v)| match k {
                Value::Str(s) => Some((s.clone(), v.clone())),
                _ => None,
            })
            .collect(),
    )
}
