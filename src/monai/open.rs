//! Opening any supported checkpoint (ours or MONAI's) with an architecture, for the
//! commands that run one network: `forward`, `segment` and `info`.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::import::{self, Inferred};
use super::torch_file::StateDict;
use crate::arch::{self, ArchCode};
use crate::checkpoint::{self, CheckpointConfig, SafetensorsFile};
use crate::model::{Network, NetworkConfig, WeightMode};

/// Where the architecture comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ArchSpec {
    /// A file: our JSON (`.json`) or MONAI's `torch.save`d numpy dict (`.pth`, `.pt`).
    File(PathBuf),
    /// The checkpoint's own: the architecture stored in our checkpoint, or the decoded
    /// `log_alpha` of a MONAI search-space checkpoint.
    Checkpoint,
    /// A built-in preset (`all-conv`, `dints-paper`, `unet`, `random-N`).
    Preset(String),
}

impl ArchSpec {
    /// `checkpoint`, an existing file, or else a preset name.
    pub fn parse(text: &str) -> Self {
        let path = Path::new(text);
        if text == "checkpoint" {
            ArchSpec::Checkpoint
        } else if path.exists() || text.ends_with(".json") || text.ends_with(".pth") {
            ArchSpec::File(path.to_path_buf())
        } else {
            ArchSpec::Preset(text.to_string())
        }
    }

    /// The file, if this names one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ArchSpec::File(p) => Some(p),
            _ => None,
        }
    }
}

/// Reads an architecture file by its contents: JSON, or a `torch.save` archive.
pub fn read_arch_file(path: &Path) -> Result<ArchCode, String> {
    let head = std::fs::read(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .into_iter()
        .take(4)
        .collect::<Vec<u8>>();
    let name = path.to_string_lossy().to_ascii_lowercase();
    if head.starts_with(b"PK") {
        import::read_arch_pth(path).map_err(|e| e.to_string())
    } else if name.ends_with(".pth") || name.ends_with(".pt") {
        Err(format!(
            "{}: not an architecture file: MONAI's are torch.save zip archives, and this file \
             does not start like one",
            path.display()
        ))
    } else {
        arch::read_arch_json(path).map_err(|e| e.to_string())
    }
}

/// Which kind of checkpoint was opened.
#[derive(Clone, Debug)]
pub enum Origin {
    /// Our `.safetensors` checkpoint.
    Native,
    /// A MONAI DiNTS state dict, with what was inferred from it.
    Monai(Box<Inferred>),
}

/// A network ready to run.
pub struct Opened {
    /// The network.
    pub network: Network,
    /// The architecture to run.
    pub arch: ArchCode,
    /// The configuration (stored, or synthesised for MONAI files: default CT
    /// pre-processing, a 96-voxel ROI rounded to the network's divisor, classes `class_K`).
    pub config: CheckpointConfig,
    /// The channel-weight mode that fits (MAN for our super-nets, plain otherwise).
    pub mode: WeightMode,
    /// Native or MONAI.
    pub origin: Origin,
}

/// True when `path` is one of our checkpoints (safetensors with our metadata).
pub fn is_native(path: &Path) -> bool {
    SafetensorsFile::open(path)
        .ok()
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.contains_key(checkpoint::METADATA_KEY))
}

/// Opens `path` (ours or MONAI's) onto `device` with the architecture `spec` (default:
/// the checkpoint's own, else `all-conv` for our super-nets; MONAI instances need one).
pub fn open(path: &Path, spec: Option<&ArchSpec>, device: &Device) -> Result<Opened, String> {
    if is_native(path) {
        return open_native(path, spec, device);
    }
    let sd = StateDict::open(path).map_err(|e| e.to_string())?;
    let inferred = import::infer(&sd).map_err(|e| e.to_string())?;
    let arch = match spec {
        None | Some(ArchSpec::Checkpoint) => None,
        Some(ArchSpec::File(file)) => Some(read_arch_file(file)?),
        Some(ArchSpec::Preset(name)) => Some(
            arch::preset(name, &inferred.config.space)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
    };
    if spec == Some(&ArchSpec::Checkpoint) && inferred.decoded.is_none() {
        return Err(format!(
            "{}: --arch checkpoint needs a search-space checkpoint with log_alpha_a and \
             log_alpha_c; this is a {}",
            path.display(),
            inferred.scheme.describe()
        ));
    }
    let imported = import::load(&sd, arch, device).map_err(|e| e.to_string())?;
    let config = monai_config(&imported.inferred.config);
    Ok(Opened {
        network: imported.network,
        arch: imported.arch,
        config,
        mode: WeightMode::Plain,
        origin: Origin::Monai(Box::new(imported.inferred)),
    })
}

fn open_native(path: &Path, spec: Option<&ArchSpec>, device: &Device) -> Result<Opened, String> {
    let ckpt = checkpoint::load(path, device).map_err(|e| e.to_string())?;
    let space = &ckpt.config.network.space;
    let arch = match spec {
        Some(ArchSpec::File(file)) => read_arch_file(file)?,
        Some(ArchSpec::Preset(name)) => arch::preset(name, space).map_err(|e| e.to_string())?,
        Some(ArchSpec::Checkpoint) | None => match ckpt.config.default_arch() {
            Some(code) => {
                code.map_err(|e| format!("{}: stored architecture: {e}", path.display()))?
            }
            None if spec.is_some() => {
                return Err(format!(
                    "{}: the checkpoint stores no architecture of its own",
                    path.display()
                ));
            }
            None => arch::preset("all-conv", space).map_err(|e| e.to_string())?,
        },
    };
    arch.validate(space)
        .map_err(|e| format!("architecture: {e}"))?;
    let mode = if ckpt.config.network.has_man() {
        WeightMode::Man
    } else {
        WeightMode::Plain
    };
    Ok(Opened {
        network: ckpt.network,
        arch,
        config: ckpt.config,
        mode,
        origin: Origin::Native,
    })
}

/// The configuration we give a MONAI network.
fn monai_config(network: &NetworkConfig) -> CheckpointConfig {
    let classes = (0..network.num_classes)
        .map(|k| format!("class_{k}"))
        .collect();
    let mut config = CheckpointConfig::new(network.clone(), classes);
    let divisor = network.input_divisor();
    config.roi = [(96usize.div_ceil(divisor) * divisor).max(2 * divisor); 3];
    config
}
