//! The training configuration file (`TRAIN.toml`).
//!
//! ```toml
//! output_dir = "runs/demo"        # relative paths are relative to this file
//! seed = 0
//! device = "cpu"                  # cpu or auto (= cpu); gpu is refused, see below
//! batch = 1
//! checkpoint_every = 100
//! validate_every = 200
//! val_archs = ["dints-paper", "all-conv"]
//!
//! [network]
//! preset = "demo"                 # demo or paper; optional overrides below
//! # num_layers = 12
//! # num_depths = 4
//! # channel_mul = 0.0625
//! # man_hidden = [128, 256]
//!
//! [[classes]]                     # background is implicit, class 0
//! name = "spleen"
//! values = [1]                    # label values that belong to the class
//!
//! [[train]]
//! image = "ct.nii.gz"
//! label = "seg.nii.gz"
//!
//! [[val]]
//! image = "held_out.nii.gz"
//! label = "held_out_seg.nii.gz"
//!
//! [preprocess]
//! orientation = "RAS"
//! spacing = [3.0, 3.0, 3.0]
//! intensity = { kind = "ct_window", a_min = -175.0, a_max = 250.0, clip = true }
//!
//! [patch]
//! size = [96, 96, 96]
//! foreground_ratio = 0.5
//! # flip_axes = [0, 1]
//! # flip_jointly = false          # true: flip all axes together (rotation, no mirroring)
//! # intensity_shift = 0.1
//! # crop_probability = 0.0        # share of patches with a limited field of view
//!
//! [schedule]                      # the paper's defaults unless given
//! supernet_iters = 160000
//! anneal_iters = 20000
//!
//! [sampling]                      # optional; without it, Algorithm 1's uniform draw
//! # dense_arch = "all-conv"       # a preset that gets extra training (see `Sampling`)
//! # dense_warmup_iters = 300      # the first iterations train only `dense_arch`
//! # dense_probability = 0.25      # afterwards, chance per iteration of `dense_arch`
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::data::{ClassSpec, Pair, PatchOptions, resolve};
use super::schedule::Schedule;
use crate::checkpoint::{CheckpointConfig, Preprocess};
use crate::device::DeviceChoice;
use crate::model::NetworkConfig;

/// The network to train: a preset with optional overrides.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// `demo` or `paper`.
    pub preset: String,
    /// Layers.
    pub num_layers: Option<usize>,
    /// Levels.
    pub num_depths: Option<usize>,
    /// DiNTS channel multiplier.
    pub channel_mul: Option<f64>,
    /// MAN hidden widths.
    pub man_hidden: Option<Vec<usize>>,
}

fn default_batch() -> usize {
    1
}
fn default_every() -> usize {
    500
}
fn default_val_archs() -> Vec<String> {
    vec!["dints-paper".into(), "all-conv".into()]
}
fn default_overlap() -> f32 {
    0.5
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    4e-5
}
fn default_w_fixed_samples() -> usize {
    16
}
fn default_roi() -> Option<[usize; 3]> {
    None
}
fn default_device() -> DeviceChoice {
    DeviceChoice::Auto
}

/// How a search iteration picks its architecture. The default is Algorithm 1's: a uniform
/// draw over the valid codes every iteration.
///
/// A small super-net trained for few iterations can stay at the all-background solution
/// under uniform draws (every step trains a different sparse network). `dense_arch` names a
/// preset, usually `all-conv` (every edge active with a weighted op, so one step updates
/// every super-net weight), that is trained alone for the first `dense_warmup_iters`
/// iterations and afterwards instead of a uniform draw with probability `dense_probability`
/// (the "sandwich" idea of training the largest network alongside sampled ones).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Architecture preset given extra training; needed when either count below is set.
    pub dense_arch: Option<String>,
    /// Iterations at the start of the run that train `dense_arch` only.
    pub dense_warmup_iters: usize,
    /// After the warm-up, probability per iteration of `dense_arch` instead of a uniform draw.
    pub dense_probability: f64,
}

/// A training configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where checkpoints and logs go.
    pub output_dir: PathBuf,
    /// Seed of initial weights, patches and architectures.
    #[serde(default)]
    pub seed: u64,
    /// Where to train. Training runs on the CPU backend: Burn's wgpu backend has no gradient
    /// for trilinear up-sampling, so `gpu` is refused and `auto` means the CPU.
    #[serde(default = "default_device")]
    pub device: DeviceChoice,
    /// Patches per step.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Save a checkpoint every this many iterations (and at the end).
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    /// Validate every this many iterations (and at the end); 0: only at the end.
    #[serde(default = "default_every")]
    pub validate_every: usize,
    /// Architecture presets evaluated at validation (a fine-tuning run uses its own).
    #[serde(default = "default_val_archs")]
    pub val_archs: Vec<String>,
    /// Sliding-window overlap at validation.
    #[serde(default = "default_overlap")]
    pub val_overlap: f32,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// SGD weight decay.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Patches averaged to initialise `w_fixed` at the start of annealing.
    #[serde(default = "default_w_fixed_samples")]
    pub w_fixed_samples: usize,
    /// Sliding-window ROI stored in the checkpoint; default: the patch size.
    #[serde(default = "default_roi")]
    pub roi: Option<[usize; 3]>,
    /// The network.
    pub network: NetworkSpec,
    /// Foreground classes (background is class 0).
    pub classes: Vec<ClassSpec>,
    /// Training pairs.
    pub train: Vec<Pair>,
    /// Validation pairs.
    #[serde(default)]
    pub val: Vec<Pair>,
    /// Pre-processing.
    pub preprocess: Preprocess,
    /// Patch sampling.
    #[serde(default)]
    pub patch: PatchOptions,
    /// Iteration counts and learning rates.
    #[serde(default)]
    pub schedule: Schedule,
    /// How each iteration picks its architecture.
    #[serde(default)]
    pub sampling: Sampling,
    /// Directory of the configuration file (paths are relative to it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl TrainConfig {
    /// Reads a configuration file.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        let mut config: TrainConfig = toml::from_str(&text)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config
            .check()
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("needs at least one [[classes]] entry".into());
        }
        if self.classes.len() > 254 {
            return Err("at most 254 foreground classes".into());
        }
        if self.batch == 0 {
            return Err("batch must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for class in &self.classes {
            if class.name.eq_ignore_ascii_case("background") {
                return Err("class 0 is the implicit background; do not list it".into());
            }
            if class.values.is_empty() {
                return Err(format!("class '{}' lists no label values", class.name));
            }
            for v in &class.values {
                if *v == 0 {
                    return Err(format!(
                        "class '{}' claims label value 0, which is the background",
                        class.name
                    ));
                }
                if !seen.insert(*v) {
                    return Err(format!("label value {v} belongs to two classes"));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.patch.foreground_ratio) {
            return Err(format!(
                "patch.foreground_ratio must be in [0, 1], got {}",
                self.patch.foreground_ratio
            ));
        }
        if self.patch.flip_axes.iter().any(|a| *a > 2) {
            return Err(format!(
                "patch.flip_axes {:?}: axes are 0, 1, 2",
                self.patch.flip_axes
            ));
        }
        if !(self.patch.intensity_shift.is_finite() && self.patch.intensity_shift >= 0.0) {
            return Err("patch.intensity_shift must be finite and >= 0".into());
        }
        let s = &self.schedule;
        for (name, lr) in [
            ("warmup_start_lr", s.warmup_start_lr),
            ("peak_lr", s.peak_lr),
            ("anneal_lr", s.anneal_lr),
            ("finetune_lr", s.finetune_lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if !(lr.is_finite() && lr >= 0.0) {
                return Err(format!("{name} must be finite and >= 0, got {lr}"));
            }
        }
        let sampling = &self.sampling;
        if !(0.0..=1.0).contains(&sampling.dense_probability) {
            return Err(format!(
                "sampling.dense_probability must be in [0, 1], got {}",
                sampling.dense_probability
            ));
        }
        match &sampling.dense_arch {
            Some(name) => {
                let space = self.network_config_unchecked()?.space;
                crate::arch::preset(name, &space)
                    .map_err(|e| format!("sampling.dense_arch: {e}"))?;
            }
            None if sampling.dense_warmup_iters > 0 || sampling.dense_probability > 0.0 => {
                return Err(
                    "sampling.dense_warmup_iters and dense_probability need sampling.dense_arch"
                        .into(),
                );
            }
            None => {}
        }
        if self.network_config_unchecked()?.man_hidden.is_empty() {
            return Err(
                "training needs a meta-assistant network: man_hidden must not be empty".into(),
            );
        }
        // Validation architectures matter only when there is something to validate on.
        for name in self.val_archs.iter().filter(|_| !self.val.is_empty()) {
            let space = self.network_config_unchecked()?.space;
            crate::arch::preset(name, &space).map_err(|e| format!("val_archs: {e}"))?;
        }
        let net = self.network_config_unchecked()?;
        net.validate()?;
        if let Some(problem) = net.input_size_problem(self.patch.size) {
            return Err(format!("patch size {:?} {problem}", self.patch.size));
        }
        self.checkpoint_config(net).validate()
    }

    fn network_config_unchecked(&self) -> Result<NetworkConfig, String> {
        let classes = self.classes.len() + 1;
        let mut net = NetworkConfig::preset(&self.network.preset, 1, classes).ok_or_else(|| {
            format!(
                "unknown network preset '{}' (known: demo, paper)",
                self.network.preset
            )
        })?;
        if let Some(n) = self.network.num_layers {
            net.space.num_layers = n;
        }
        if let Some(n) = self.network.num_depths {
            net.space.num_depths = n;
        }
        if let Some(m) = self.network.channel_mul {
            net.channel_mul = m;
        }
        if let Some(h) = &self.network.man_hidden {
            net.man_hidden = h.clone();
        }
        Ok(net)
    }

    /// The network configuration.
    pub fn network_config(&self) -> Result<NetworkConfig, TrainError> {
        self.network_config_unchecked().map_err(TrainError::Input)
    }

    /// The configuration stored in checkpoints of this run.
    pub fn checkpoint_config(&self, network: NetworkConfig) -> CheckpointConfig {
        let mut names = vec!["background".to_string()];
        names.extend(self.classes.iter().map(|c| c.name.clone()));
        let mut config = CheckpointConfig::new(network, names);
        config.preprocess = self.preprocess.clone();
        config.roi = self.roi.unwrap_or(self.patch.size);
        config
    }

    /// Output folder, resolved.
    pub fn output_dir(&self) -> PathBuf {
        resolve(&self.base_dir, &self.output_dir)
    }

    /// Training pairs with resolved paths.
    pub fn train_pairs(&self) -> Vec<Pair> {
        self.resolve_pairs(&self.train)
    }

    /// Validation pairs with resolved paths.
    pub fn val_pairs(&self) -> Vec<Pair> {
        self.resolve_pairs(&self.val)
    }

    fn resolve_pairs(&self, pairs: &[Pair]) -> Vec<Pair> {
        pairs
            .iter()
            .map(|p| Pair {
                image: resolve(&self.base_dir, &p.image),
                label: resolve(&self.base_dir, &p.label),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
output_dir = "run"

[network]
preset = "demo"

[[classes]]
name = "spleen"
values = [1]

[[train]]
image = "ct.nii.gz"
label = "seg.nii.gz"

[preprocess]
orientation = "RAS"
intensity = { kind = "ct_window", a_min = -175.0, a_max = 250.0, clip = true }
"#;

    #[test]
    fn misspelt_patch_and_schedule_keys_are_refused() {
        // A misspelt key used to be dropped silently, so a run trained without the option
        // its configuration asked for.
        let ok = format!("{BASE}\n[patch]\nflip_jointly = true\n[schedule]\npeak_lr = 0.03\n");
        let config: TrainConfig = toml::from_str(&ok).unwrap();
        assert!(config.patch.flip_jointly);
        for bad in ["[patch]\nflip_jointy = true", "[schedule]\npeak_rl = 0.03"] {
            let err = toml::from_str::<TrainConfig>(&format!("{BASE}\n{bad}\n")).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
    }

    #[test]
    fn sampling_options_are_checked() {
        let read = |extra: &str| {
            let mut config: TrainConfig = toml::from_str(&format!("{BASE}\n{extra}\n")).unwrap();
            config.base_dir = PathBuf::from(".");
            config.check()
        };
        assert!(read("").is_ok());
        assert!(read("[sampling]\ndense_arch = \"all-conv\"\ndense_probability = 0.25").is_ok());
        let cases = [
            (
                "[sampling]\ndense_warmup_iters = 10",
                "need sampling.dense_arch",
            ),
            (
                "[sampling]\ndense_arch = \"all-conv\"\ndense_probability = 1.5",
                "[0, 1]",
            ),
            (
                "[sampling]\ndense_arch = \"no-such\"",
                "sampling.dense_arch",
            ),
        ];
        for (extra, expected) in cases {
            let err = read(extra).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
    }
}
