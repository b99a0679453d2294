//! The native checkpoint: one `.safetensors` file.
//!
//! Super-net tensors carry MONAI's DiNTS key names (every op of the space is held, so
//! `op.ops.K` with K = op index); the HyperSegNAS parts are `encoder.*`, `man.*` and
//! `w_fixed`. Linear weights are stored `[out, in]` as in PyTorch. The configuration (search
//! space, channels, classes, pre-processing, ROI, MAN widths, and an optional default
//! architecture) is JSON under the metadata key `hypersegnas`, so a PyTorch user can open
//! the file with the `safetensors` package and read everything.
//!
//! Loading parses the header from a memory map and reads each tensor with a positioned read
//! straight into the network, so a paper-scale checkpoint (3.6 GB with two classes, mostly
//! the MAN) is never held twice: peak memory is the network plus transient copies of the
//! tensor being read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use serde::{Deserialize, Serialize};

use crate::arch::{ArchCode, ArchFile};
use crate::model::weights::Layout;
use crate::model::{ModelError, Network, NetworkConfig, OpKeys, TensorSource};

/// The metadata key holding the configuration JSON.
pub const METADATA_KEY: &str = "hypersegnas";
/// The `format` value of the configuration JSON.
pub const FORMAT: &str = "hypersegnas-checkpoint";

/// How image intensities are normalised before the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intensity {
    /// CT window: `(v - a_min) / (a_max - a_min)`, clipped to [0, 1] when `clip`.
    CtWindow {
        /// Lower end of the window (HU).
        a_min: f32,
        /// Upper end of the window (HU).
        a_max: f32,
        /// Clip to [0, 1].
        clip: bool,
    },
    /// Zero mean, unit variance over the volume (over non-zero voxels when `nonzero`), for MR.
    ZScore {
        /// Use only non-zero voxels for the statistics.
        nonzero: bool,
    },
    /// Leave values as they are.
    None,
}

/// How the size of the resampled grid is chosen. Both put the first resampled voxel on
/// the first original voxel; they differ in how many voxels follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GridRule {
    /// `round(n * spacing / target)` voxels: the grid covers the volume's full extent.
    #[default]
    Extent,
    /// `round((n - 1) * spacing / target) + 1` voxels: the grid spans the first to the last
    /// voxel centre, as MONAI's `Spacingd` does (`scale_extent = False`).
    Corners,
}

/// Pre-processing a checkpoint expects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Target orientation; only `RAS` is supported.
    pub orientation: String,
    /// Target voxel size in mm (x, y, z of the RAS grid); `None` keeps the input's.
    pub spacing: Option<[f64; 3]>,
    /// Intensity normalisation.
    pub intensity: Intensity,
    /// Size rule of the resampled grid (absent in older checkpoints: `extent`).
    #[serde(default)]
    pub grid: GridRule,
}

impl Preprocess {
    /// Checks the values, with messages a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.orientation != "RAS" {
            return Err(format!(
                "orientation '{}' is not supported (only RAS)",
                self.orientation
            ));
        }
        if let Some(spacing) = self.spacing
            && spacing.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(format!("target spacing {spacing:?} mm must be positive"));
        }
        match &self.intensity {
            Intensity::CtWindow { a_min, a_max, .. }
                if !(a_min.is_finite() && a_max.is_finite() && a_max > a_min) =>
            {
                Err(format!(
                    "CT window [{a_min}, {a_max}] must be finite with a_max > a_min"
                ))
            }
            _ => Ok(()),
        }
    }

    /// RAS, 1.5 mm, CT window [-175, 250] HU (a common abdominal window).
    pub fn ct_default() -> Self {
        Self {
            orientation: "RAS".into(),
            spacing: Some([1.5; 3]),
            intensity: Intensity::CtWindow {
                a_min: -175.0,
                a_max: 250.0,
                clip: true,
            },
            grid: GridRule::Extent,
        }
    }

    /// The pre-processing of MONAI's `pancreas_ct_dints_segmentation` bundle: RAS, 1 mm
    /// (grid as `Spacingd` builds it), `ScaleIntensityRanged(a_min=-87, a_max=199, b_min=0,
    /// b_max=1, clip=True)`, that is `(HU + 87) / 286` clipped to [0, 1].
    pub fn monai_pancreas() -> Self {
        Self {
            orientation: "RAS".into(),
            spacing: Some([1.0; 3]),
            intensity: Intensity::CtWindow {
                a_min: -87.0,
                a_max: 199.0,
                clip: true,
            },
            grid: GridRule::Corners,
        }
    }
}

/// Everything a checkpoint says about itself besides the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// Network shapes and search space.
    pub network: NetworkConfig,
    /// One name per class, background first.
    pub class_names: Vec<String>,
    /// Pre-processing.
    pub preprocess: Preprocess,
    /// Sliding-window ROI (x, y, z voxels).
    pub roi: [usize; 3],
    /// The checkpoint's own architecture (for example the searched or fine-tuned one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<ArchFile>,
    /// Free-form training state (iteration, phase, ...) written by the trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

impl CheckpointConfig {
    /// A configuration with default CT pre-processing and a 96^3 ROI.
    pub fn new(network: NetworkConfig, class_names: Vec<String>) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            network,
            class_names,
            preprocess: Preprocess::ct_default(),
            roi: [96; 3],
            arch: None,
            training: None,
        }
    }

    /// The checkpoint's own architecture, if it names one.
    pub fn default_arch(&self) -> Option<Result<ArchCode, String>> {
        self.arch.as_ref().map(ArchFile::to_code)
    }

    /// Checks the configuration, with messages a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is '{}', expected '{FORMAT}'", self.format));
        }
        if self.version != 1 {
            return Err(format!(
                "format version {} is not supported (this build reads version 1)",
                self.version
            ));
        }
        self.preprocess.validate()?;
        self.network.validate()?;
        if self.class_names.len() != self.network.num_classes {
            return Err(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.network.num_classes
            ));
        }
        let max_roi = crate::inference::MAX_ROI;
        if self.roi.iter().any(|r| *r > max_roi) {
            return Err(format!(
                "ROI {:?} is larger than {max_roi} per side",
                self.roi
            ));
        }
        if let Some(problem) = self.network.input_size_problem(self.roi) {
            return Err(format!("ROI {:?} {problem}", self.roi));
        }
        if self.network.has_man() && self.roi.iter().any(|r| *r < MIN_MAN_ROI) {
            return Err(format!(
                "ROI {:?} is too small for the image encoder: each side needs at least \
                 {MIN_MAN_ROI} voxels (below that its last instance norm sees one voxel and the \
                 encoding no longer depends on the patch)",
                self.roi
            ));
        }
        Ok(())
    }
}

/// Smallest ROI side for networks with a MAN: Table 4's five stride-2 convolutions must
/// leave at least 2 voxels per side for the instance norm after the fifth.
pub const MIN_MAN_ROI: usize = 64;

/// Checkpoint errors; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a usable checkpoint.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tensors do not fit the configuration.
    #[error("{path}: {source}")]
    Model {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ModelError,
    },
}

/// Where the bytes of a safetensors file live.
enum Storage {
    /// On disk: the header is parsed from a memory map, tensors are read with positioned
    /// reads, so their pages never count against the process (see [`load`]).
    Disk { map: memmap2::Mmap, file: File },
    /// Embedded in the binary.
    Static(&'static [u8]),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Disk { map, .. } => map,
            Storage::Static(bytes) => bytes,
        }
    }
}

/// A safetensors file (on disk or embedded) with its parsed header.
pub struct SafetensorsFile {
    path: PathBuf,
    storage: Storage,
    header_len: usize,
    meta: safetensors::tensor::Metadata,
}

impl SafetensorsFile {
    /// Opens `path` and parses its header.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and only its header is read; a file changed by another
        // process meanwhile gives a parse error or wrong values, never memory unsafety here.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Storage::Disk { map, file })
    }

    /// Wraps bytes embedded in the binary; `name` stands in for the path in messages.
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<Self, CheckpointError> {
        Self::parse(PathBuf::from(name), Storage::Static(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<Self, CheckpointError> {
        let (header_len, meta) =
            SafeTensors::read_metadata(storage.bytes()).map_err(|e| CheckpointError::Format {
                path: path.clone(),
                message: format!("not a safetensors file: {e}"),
            })?;
        Ok(Self {
            path,
            storage,
            header_len,
            meta,
        })
    }

    /// The parsed tensor table (views into the file's bytes; reading a view's data pages
    /// the file in).
    pub fn tensors(&self) -> Result<SafeTensors<'_>, CheckpointError> {
        SafeTensors::deserialize(self.storage.bytes()).map_err(|e| CheckpointError::Format {
            path: self.path.clone(),
            message: format!("not a safetensors file: {e}"),
        })
    }

    /// The metadata strings of the header.
    pub fn metadata(&self) -> Result<HashMap<String, String>, CheckpointError> {
        Ok(self.meta.metadata().clone().unwrap_or_default())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw bytes of tensor `key`, read from disk or copied from the embedded bytes.
    fn raw(&self, key: &str) -> Option<(Dtype, Vec<u8>)> {
        let info = self.meta.info(key)?;
        let (begin, end) = info.data_offsets;
        let start = 8 + self.header_len + begin;
        let len = end - begin;
        let bytes = match &self.storage {
            Storage::Disk { file, .. } => {
                use std::os::unix::fs::FileExt;
                let mut buffer = vec![0u8; len];
                file.read_exact_at(&mut buffer, start as u64).ok()?;
                buffer
            }
            Storage::Static(bytes) => bytes.get(start..start + len)?.to_vec(),
        };
        Some((info.dtype, bytes))
    }
}

/// Converts little-endian tensor bytes of `dtype` to f32 values.
pub fn bytes_to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        _ => return None,
    })
}

/// Converts a tensor view to f32 values.
pub fn view_to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    bytes_to_f32(view.dtype(), view.data())
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24.
            let v = frac as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

impl TensorSource for SafetensorsFile {
    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.meta.info(key).map(|info| info.shape.clone())
    }

    fn values(&self, key: &str) -> Option<Cow<'_, [f32]>> {
        let (dtype, bytes) = self.raw(key)?;
        bytes_to_f32(dtype, &bytes).map(Cow::Owned)
    }

    fn keys(&self) -> Vec<String> {
        self.meta.offset_keys()
    }
}

/// Reads only the configuration of a native checkpoint.
pub fn read_config(path: &Path) -> Result<CheckpointConfig, CheckpointError> {
    let file = SafetensorsFile::open(path)?;
    config_of(&file)
}

fn config_of(file: &SafetensorsFile) -> Result<CheckpointConfig, CheckpointError> {
    let format_error = |message: String| CheckpointError::Format {
        path: file.path().to_path_buf(),
        message,
    };
    let meta = file.metadata()?;
    let json = meta.get(METADATA_KEY).ok_or_else(|| {
        format_error(format!(
            "no '{METADATA_KEY}' metadata: not a HyperSegNAS checkpoint (importing MONAI \
             DiNTS state dicts is not supported yet)"
        ))
    })?;
    let config: CheckpointConfig = serde_json::from_str(json)
        .map_err(|e| format_error(format!("bad configuration JSON: {e}")))?;
    config.validate().map_err(format_error)?;
    Ok(config)
}

/// A loaded checkpoint: the network and its configuration.
pub struct Checkpoint {
    /// The network, on the requested device.
    pub network: Network,
    /// The configuration stored with it.
    pub config: CheckpointConfig,
}

/// Loads a native checkpoint onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    load_file(&SafetensorsFile::open(path)?, device)
}

/// The demo super-net shipped with the tool (`assets/demo.safetensors`, see the model card
/// beside it), used when no checkpoint is given.
pub static DEMO_CHECKPOINT: &[u8] = include_bytes!("../assets/demo.safetensors");

/// Loads the embedded demo checkpoint onto `device`.
pub fn load_demo(device: &Device) -> Result<Checkpoint, CheckpointError> {
    load_file(
        &SafetensorsFile::from_static("<bundled demo checkpoint>", DEMO_CHECKPOINT)?,
        device,
    )
}

/// Loads an opened checkpoint file onto `device`.
pub fn load_file(file: &SafetensorsFile, device: &Device) -> Result<Checkpoint, CheckpointError> {
    let path = file.path();
    let config = config_of(file)?;
    let network = Network::from_source(&config.network, device, file, &OpKeys::SuperNet, None)
        .map_err(|source| CheckpointError::Model {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Checkpoint { network, config })
}

/// One parameter to write. Its bytes are produced only when the writer asks for them, one
/// tensor at a time, so saving never holds a second copy of the whole network.
struct LazyView {
    /// Shape on disk.
    shape: Vec<usize>,
    /// The parameter, flattened (shares the parameter's storage).
    tensor: Tensor<1>,
    layout: Layout,
    /// In-memory rows and columns (linear weights only).
    matrix: (usize, usize),
    /// Set when the values could not be read; the file is then discarded.
    failed: std::cell::Cell<bool>,
}

impl View for &LazyView {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let values = match self
            .tensor
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
        {
            Ok(values) => values,
            Err(_) => {
                self.failed.set(true);
                vec![0.0; self.data_len() / 4]
            }
        };
        // Little-endian bytes in disk order, written in one pass (a linear weight is
        // transposed on the way), so only one extra copy of the tensor exists at a time.
        let mut bytes = vec![0u8; values.len() * 4];
        let (rows, cols) = self.matrix;
        for (i, v) in values.iter().enumerate() {
            let j = match self.layout {
                Layout::Plain => i,
                Layout::LinearWeight => (i % cols) * rows + i / cols,
            };
            bytes[4 * j..4 * j + 4].copy_from_slice(&v.to_le_bytes());
        }
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }
}

/// Collects every named parameter of a network.
struct Collector<'a> {
    names: &'a crate::model::ParamNames,
    out: Vec<(String, LazyView)>,
}

impl ModuleVisitor for Collector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((key, layout)) = self.names.get(&param.id) else {
            return;
        };
        let tensor = param.val();
        let dims = tensor.dims();
        let count = dims.iter().product::<usize>();
        let (shape, matrix) = match layout {
            Layout::Plain => (dims.to_vec(), (0, 0)),
            Layout::LinearWeight => (vec![dims[1], dims[0]], (dims[0], dims[1])),
        };
        self.out.push((
            key.clone(),
            LazyView {
                shape,
                tensor: tensor.reshape([count]),
                layout: *layout,
                matrix,
                failed: std::cell::Cell::new(false),
            },
        ));
    }
}

/// Saves `network` with `config` to `path`, atomically (a temporary file renamed over the
/// destination, so a killed writer never leaves a corrupt checkpoint).
pub fn save(
    path: &Path,
    network: &Network,
    config: &CheckpointConfig,
) -> Result<(), CheckpointError> {
    let format_error = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    if config.network != network.config {
        return Err(format_error(
            "the configuration does not describe this network".into(),
        ));
    }
    let mut collector = Collector {
        names: &network.names,
        out: Vec::new(),
    };
    network.model.visit(&mut collector);
    if collector.out.len() != network.names.len() {
        return Err(format_error(format!(
            "collected {} of {} named tensors",
            collector.out.len(),
            network.names.len()
        )));
    }
    let json = serde_json::to_string(config).map_err(|e| format_error(e.to_string()))?;
    let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);

    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temp = crate::fsutil::AtomicFile::create(path).map_err(io)?;
    let views = collector.out.iter().map(|(k, v)| (k.as_str(), v));
    safetensors::tensor::serialize_to_file(views, Some(metadata), temp.path())
        .map_err(|e| format_error(format!("writing failed: {e}")))?;
    let failed: Vec<&str> = collector
        .out
        .iter()
        .filter(|(_, v)| v.failed.get())
        .map(|(k, _)| k.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(format_error(format!(
            "could not read the values of {}",
            failed.join(", ")
        )));
    }
    temp.commit().map_err(io)
}
