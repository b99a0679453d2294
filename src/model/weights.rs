//! Where parameters come from, and the names they are saved under.
//!
//! Every block is built through a [`ParamBuilder`] that takes the parameter's checkpoint key
//! (MONAI's DiNTS names for the super-net). The builder either draws a fresh initial value or
//! takes the tensor of that key from a checkpoint, and records which [`ParamId`] carries which
//! key, so the same construction code defines the names for saving and loading.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// How a parameter is stored in a checkpoint relative to its in-memory layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same layout.
    Plain,
    /// A linear layer's weight: `[in, out]` in memory (Burn), `[out, in]` on disk (PyTorch).
    LinearWeight,
}

/// The checkpoint key and layout of every parameter of a model.
#[derive(Clone, Debug, Default)]
pub struct ParamNames {
    by_id: BTreeMap<ParamId, (String, Layout)>,
}

impl ParamNames {
    /// Key and layout of a parameter.
    pub fn get(&self, id: &ParamId) -> Option<&(String, Layout)> {
        self.by_id.get(id)
    }

    /// Number of named parameters.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no parameter is named.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// All keys, sorted.
    pub fn keys(&self) -> BTreeSet<String> {
        self.by_id.values().map(|(k, _)| k.clone()).collect()
    }
}

/// A read-only set of named f32 tensors in checkpoint layout (PyTorch's).
pub trait TensorSource {
    /// Shape of a tensor, `None` when the key is absent.
    fn shape(&self, key: &str) -> Option<Vec<usize>>;
    /// Values of a tensor, row-major, converted to f32.
    fn values(&self, key: &str) -> Option<Cow<'_, [f32]>>;
    /// Every key.
    fn keys(&self) -> Vec<String>;
}

/// The transpose of a row-major `rows x cols` matrix.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// A stable parameter id for a checkpoint key (64-bit FNV-1a of the key).
pub fn param_id(key: &str) -> ParamId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ParamId::from(hash)
}

/// How to draw a fresh parameter.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`, PyTorch's default for convolutions
    /// and linear layers (Kaiming uniform with a = sqrt(5)).
    FanIn(usize),
    /// All ones (norm scales).
    Ones,
    /// All zeros (norm shifts).
    Zeros,
    /// A constant.
    Constant(f32),
}

/// Problems found while loading a checkpoint into a network.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Keys the network needs that the checkpoint lacks.
    pub missing: Vec<String>,
    /// Keys the checkpoint has that the network does not use.
    pub unexpected: Vec<String>,
    /// `key: expected [..], found [..]`.
    pub mismatched: Vec<String>,
}

impl LoadReport {
    /// True when everything matched.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// One message listing the first few of each kind of problem, with counts.
    pub fn summary(&self) -> String {
        fn part(label: &str, items: &[String]) -> Option<String> {
            if items.is_empty() {
                return None;
            }
            let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
            let more = if items.len() > 5 {
                format!(", ... ({} more)", items.len() - 5)
            } else {
                String::new()
            };
            Some(format!(
                "{} {label}: {}{more}",
                items.len(),
                shown.join(", ")
            ))
        }
        [
            part("missing", &self.missing),
            part("unexpected", &self.unexpected),
            part("wrongly shaped", &self.mismatched),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
    }
}

/// Builds parameters, fresh or from a checkpoint, and names them.
pub struct ParamBuilder<'a> {
    device: Device,
    rng: StdRng,
    source: Option<&'a dyn TensorSource>,
    names: ParamNames,
    used: BTreeSet<String>,
    report: LoadReport,
}

impl<'a> ParamBuilder<'a> {
    /// Fresh parameters drawn on the host from `seed`, so the same seed gives the same
    /// network on every device.
    pub fn fresh(device: &Device, seed: u64) -> Self {
        Self {
            device: device.clone(),
            rng: StdRng::seed_from_u64(seed),
            source: None,
            names: ParamNames::default(),
            used: BTreeSet::new(),
            report: LoadReport::default(),
        }
    }

    /// Parameters taken from `source`.
    pub fn from_source(device: &Device, source: &'a dyn TensorSource) -> Self {
        Self {
            source: Some(source),
            ..Self::fresh(device, 0)
        }
    }

    /// The device parameters are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A parameter of shape `shape` under checkpoint key `key`.
    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        init: Init,
        layout: Layout,
    ) -> Param<Tensor<D>> {
        let disk_shape = match layout {
            Layout::Plain => shape.to_vec(),
            Layout::LinearWeight => shape.iter().rev().copied().collect(),
        };
        let values = match self.source {
            None => self.draw(shape.iter().product(), init),
            Some(source) => self.take(source, key, &disk_shape, layout),
        };
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &self.device);
        // A trainable parameter whose id is derived from its key, so optimiser state saved
        // with a checkpoint finds its parameters again after a restart.
        let mut param = Param::from_tensor(tensor);
        param.id = param_id(key);
        self.names.by_id.insert(param.id, (key.to_string(), layout));
        param
    }

    fn draw(&mut self, len: usize, init: Init) -> Vec<f32> {
        match init {
            Init::FanIn(fan_in) => {
                let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..len)
                    .map(|_| self.rng.random_range(-bound..=bound))
                    .collect()
            }
            Init::Ones => vec![1.0; len],
            Init::Zeros => vec![0.0; len],
            Init::Constant(c) => vec![c; len],
        }
    }

    fn take(
        &mut self,
        source: &dyn TensorSource,
        key: &str,
        disk_shape: &[usize],
        layout: Layout,
    ) -> Vec<f32> {
        let len = disk_shape.iter().product();
        let Some(found) = source.shape(key) else {
            self.report.missing.push(key.to_string());
            return vec![0.0; len];
        };
        self.used.insert(key.to_string());
        if found != disk_shape {
            self.report
                .mismatched
                .push(format!("{key}: expected {disk_shape:?}, found {found:?}"));
            return vec![0.0; len];
        }
        let Some(values) = source.values(key) else {
            self.report.missing.push(key.to_string());
            return vec![0.0; len];
        };
        match layout {
            Layout::Plain => values.into_owned(),
            // Disk [out, in] -> memory [in, out], in one pass.
            Layout::LinearWeight => transpose(&values, disk_shape[0], disk_shape[1]),
        }
    }

    /// Finishes construction: the names of every parameter, and what did not match.
    pub fn finish(mut self) -> (ParamNames, LoadReport) {
        if let Some(source) = self.source {
            self.report.unexpected = source
                .keys()
                .into_iter()
                .filter(|k| !self.used.contains(k))
                .collect();
            self.report.unexpected.sort();
        }
        (self.names, self.report)
    }
}
