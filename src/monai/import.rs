//! Importing MONAI DiNTS checkpoints into our [`Network`] (plain mode, no MAN).
//!
//! Everything that the tensor shapes determine is inferred: input channels and classes
//! (`stem_down.0.mod.1.weight`, `stem_finals.1.weight`), levels (the number of down stems),
//! `use_downsample` (whether down stems have their stride-2 `mod.4` convolution), the filter
//! list and from it a `channel_mul`, and which of MONAI's three key layouts the file uses:
//!
//! - search space (`TopologySearch`): every cell holds every op, `op.ops.K` with K = op
//!   index, usually with `log_alpha_a` / `log_alpha_c`;
//! - searched instance (`TopologyInstance`, MONAI since 2023): one op per active cell, always
//!   at K = 0, its type given by the architecture code;
//! - pre-2023 instance: one op per active cell at K = its op index.
//!
//! What shapes cannot say (which same-level edges run skip connections, so have no tensors)
//! comes from an architecture code: MONAI's `.pth` file, our JSON, a preset, or the search
//! parameters decoded by [`super::decode`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::decode::decode;
use super::torch_file::{StateDict, TorchArchive, TorchFileError, array_of, root_entries};
use crate::arch::{ArchCode, Op, SearchSpace};
use crate::model::{ModelError, Network, NetworkConfig, OpKeys, TensorSource};

/// Errors importing a MONAI file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] TorchFileError),
    /// The file was read but does not describe a DiNTS network or architecture.
    #[error("{path}: {message}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tensors do not fit the inferred network and architecture.
    #[error("{path}: {source}")]
    Model {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ModelError,
    },
}

/// MONAI's key layouts (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyScheme {
    /// Every op of the space in every cell, K = op index.
    SearchSpace,
    /// One op per active cell at K = 0.
    Instance,
    /// One op per active cell at K = its op index (MONAI before 2023).
    LegacyInstance,
}

impl KeyScheme {
    /// The matching construction of our super-net.
    pub fn op_keys(self) -> OpKeys {
        match self {
            KeyScheme::SearchSpace => OpKeys::SuperNet,
            KeyScheme::Instance => OpKeys::Instance,
            KeyScheme::LegacyInstance => OpKeys::LegacyInstance,
        }
    }

    /// A description for logs and `info`.
    pub fn describe(self) -> &'static str {
        match self {
            KeyScheme::SearchSpace => "search space (every op in every cell, op.ops.K = op index)",
            KeyScheme::Instance => "searched instance (one op per cell at op.ops.0)",
            KeyScheme::LegacyInstance => {
                "searched instance, pre-2023 layout (one op per cell at op.ops.<op index>)"
            }
        }
    }
}

/// What a MONAI state dict says about its network.
#[derive(Clone, Debug)]
pub struct Inferred {
    /// The network configuration (no MAN), with the layers seen in the keys.
    pub config: NetworkConfig,
    /// The key layout.
    pub scheme: KeyScheme,
    /// The architecture decoded from `log_alpha_a` / `log_alpha_c`, when present.
    pub decoded: Option<ArchCode>,
}

const LOG_ALPHA_A: &str = "dints_space.log_alpha_a";
const LOG_ALPHA_C: &str = "dints_space.log_alpha_c";

/// Infers the network of a MONAI DiNTS state dict from its keys and shapes.
pub fn infer(sd: &StateDict) -> Result<Inferred, ImportError> {
    let content = |message: String| ImportError::Content {
        path: sd.path().to_path_buf(),
        message,
    };
    let shape = |key: &str| sd.shape(key);
    let stem0 = shape("stem_down.0.mod.1.weight").ok_or_else(|| {
        content(
            "no 'stem_down.0.mod.1.weight': not a MONAI DiNTS state dict (expected keys \
             stem_down.*, dints_space.cell_tree.*, stem_finals.*)"
                .into(),
        )
    })?;
    if stem0.len() != 5 {
        return Err(content(format!(
            "stem_down.0.mod.1.weight has shape {stem0:?}; only 3-D DiNTS networks are supported"
        )));
    }
    let in_channels = stem0[1];
    let depths = (0..)
        .take_while(|d| shape(&format!("stem_down.{d}.mod.1.weight")).is_some())
        .count();
    let use_downsample = shape("stem_down.0.mod.4.weight").is_some();
    let mut filters: Vec<Option<usize>> = (0..depths)
        .map(|d| {
            let key = format!("stem_down.{d}.mod.1.weight");
            shape(&key).and_then(|s| s.first().copied())
        })
        .collect();
    filters.push(if use_downsample {
        let key = format!("stem_down.{}.mod.4.weight", depths - 1);
        shape(&key).and_then(|s| s.first().copied())
    } else {
        None
    });
    let channel_mul = channel_mul_for(&filters).ok_or_else(|| {
        content(format!(
            "the stems' channel counts {filters:?} do not follow DiNTS's rule \
             trunc(32 * 2^i * channel_mul) for any channel_mul"
        ))
    })?;
    let classes = shape("stem_finals.1.weight")
        .filter(|s| s.len() == 5)
        .map(|s| s[0])
        .ok_or_else(|| content("no 'stem_finals.1.weight' (the head's 1x1 convolution)".into()))?;

    // Cells: which op slots K each (layer, edge) holds.
    let mut slots: BTreeMap<(usize, usize), BTreeSet<usize>> = BTreeMap::new();
    let mut cells: BTreeSet<(usize, usize)> = BTreeSet::new();
    for key in sd.keys() {
        let Some(rest) = key.strip_prefix("dints_space.cell_tree.(") else {
            continue;
        };
        let Some((cell, tail)) = rest.split_once(')') else {
            continue;
        };
        let Some((l, e)) = cell.split_once(", ") else {
            continue;
        };
        let (Ok(l), Ok(e)) = (l.parse::<usize>(), e.parse::<usize>()) else {
            return Err(content(format!("unreadable cell key '{key}'")));
        };
        cells.insert((l, e));
        if let Some(k) = tail
            .strip_prefix(".op.ops.")
            .and_then(|t| t.split('.').next())
            .and_then(|k| k.parse::<usize>().ok())
        {
            slots.entry((l, e)).or_default().insert(k);
        }
    }

    let alpha_a = shape(LOG_ALPHA_A);
    let alpha_c = shape(LOG_ALPHA_C);
    let many_ops = slots.values().any(|s| s.len() > 1);
    let scheme = if alpha_a.is_some() || many_ops {
        KeyScheme::SearchSpace
    } else if slots.values().all(|s| s.contains(&0)) {
        KeyScheme::Instance
    } else {
        KeyScheme::LegacyInstance
    };
    let seen_layers = cells.iter().map(|(l, _)| l + 1).max().unwrap_or(0);
    let mut layers = seen_layers;
    let mut num_ops = Op::ALL.len();
    if scheme == KeyScheme::SearchSpace {
        let max_slot = slots.values().flatten().max().copied().unwrap_or(0);
        num_ops = match &alpha_c {
            Some(s) if s.len() == 3 => s[2],
            _ => max_slot + 1,
        };
        if let Some(s) = &alpha_a {
            layers = s.first().copied().unwrap_or(layers);
        }
        if num_ops == 0 || num_ops > Op::ALL.len() || max_slot >= num_ops {
            return Err(content(format!(
                "the search space holds {num_ops} ops per cell; DiNTS has at most 5"
            )));
        }
    }
    let space = SearchSpace {
        num_layers: layers.max(1),
        num_depths: depths,
        ops: Op::ALL[..num_ops].to_vec(),
    };
    let edges = space.num_edges();
    if let Some(&(l, e)) = cells.iter().find(|(_, e)| *e >= edges) {
        return Err(content(format!(
            "cell ({l}, {e}) exists but {depths} levels have only {edges} edges per layer"
        )));
    }

    let decoded = match (&alpha_a, &alpha_c) {
        (Some(sa), Some(sc)) => {
            let a = sd.values_f64(LOG_ALPHA_A);
            let c = sd.values_f64(LOG_ALPHA_C);
            let ok = sa.as_slice() == [layers, edges] && sc.as_slice() == [layers, edges, num_ops];
            if !ok {
                return Err(content(format!(
                    "log_alpha_a {sa:?} / log_alpha_c {sc:?} do not fit {layers} layers x \
                     {edges} edges x {num_ops} ops"
                )));
            }
            match (a, c) {
                (Some(a), Some(c)) => decode(&a, &c, layers, depths, num_ops),
                _ => None,
            }
        }
        _ => None,
    };

    let config = NetworkConfig {
        space,
        channel_mul,
        in_channels,
        num_classes: classes,
        use_downsample,
        man_hidden: Vec::new(),
    };
    config.validate().map_err(content)?;
    Ok(Inferred {
        config,
        scheme,
        decoded,
    })
}

/// The `channel_mul` whose filter list matches `filters` (entries that are `None` are
/// unconstrained), preferring short decimals (0.5, 0.2, 0.0625, ...); `None` when no value
/// fits.
pub fn channel_mul_for(filters: &[Option<usize>]) -> Option<f64> {
    let (mut lo, mut hi) = (0f64, f64::INFINITY);
    for (i, f) in filters.iter().enumerate() {
        if let Some(f) = f {
            let base = 32.0 * 2f64.powi(i as i32);
            lo = lo.max(*f as f64 / base);
            hi = hi.min((*f + 1) as f64 / base);
        }
    }
    let matches = |c: f64| {
        filters
            .iter()
            .enumerate()
            .all(|(i, f)| f.is_none_or(|f| (32.0 * 2f64.powi(i as i32) * c) as usize == f))
    };
    // The lower end itself when it is a short decimal (0.0625), else the shortest decimal in
    // the interval (0.2 for 6, 12, 25, 51, 102).
    let short = (lo * 1e6).fract() == 0.0;
    short
        .then_some(lo)
        .into_iter()
        .chain((0..=8).map(|digits| {
            let scale = 10f64.powi(digits);
            (lo * scale).ceil() / scale
        }))
        .chain([lo])
        .find(|&c| c > 0.0 && c < hi && matches(c))
}

/// A view of a state dict without some keys (the search parameters, which the network
/// itself does not hold).
struct Without<'a> {
    inner: &'a StateDict,
    hidden: &'a [&'a str],
}

impl TensorSource for Without<'_> {
    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        (!self.hidden.contains(&key))
            .then(|| self.inner.shape(key))
            .flatten()
    }

    fn values(&self, key: &str) -> Option<std::borrow::Cow<'_, [f32]>> {
        (!self.hidden.contains(&key))
            .then(|| self.inner.values(key))
            .flatten()
    }

    fn keys(&self) -> Vec<String> {
        self.inner
            .keys()
            .into_iter()
            .filter(|k| !self.hidden.contains(&k.as_str()))
            .collect()
    }
}

/// A MONAI network loaded into ours.
pub struct Imported {
    /// The network (plain mode: no MAN).
    pub network: Network,
    /// The architecture it runs.
    pub arch: ArchCode,
    /// What was inferred.
    pub inferred: Inferred,
}

/// Loads a MONAI state dict with architecture `arch` (required for searched instances;
/// for search-space checkpoints `None` means the decoded architecture).
pub fn load(
    sd: &StateDict,
    arch: Option<ArchCode>,
    device: &Device,
) -> Result<Imported, ImportError> {
    let path = sd.path().to_path_buf();
    let content = |message: String| ImportError::Content {
        path: path.clone(),
        message,
    };
    let mut inferred = infer(sd)?;
    let arch = match (arch, &inferred.decoded) {
        (Some(a), _) => a,
        (None, Some(decoded)) => decoded.clone(),
        (None, None) => {
            return Err(content(format!(
                "this {} has no search parameters to decode: pass the architecture (MONAI's \
                 arch .pth, a JSON code or a preset) with --arch",
                inferred.scheme.describe()
            )));
        }
    };
    if arch.num_depths() != inferred.config.space.num_depths {
        return Err(content(format!(
            "the architecture has {} levels but the checkpoint's network has {}",
            arch.num_depths(),
            inferred.config.space.num_depths
        )));
    }
    if inferred.scheme == KeyScheme::SearchSpace {
        if arch.num_layers() != inferred.config.space.num_layers {
            return Err(content(format!(
                "the architecture has {} layers but the search space has {}",
                arch.num_layers(),
                inferred.config.space.num_layers
            )));
        }
    } else {
        // An instance's layer count is the architecture's (trailing layers of skip edges
        // leave no keys).
        inferred.config.space.num_layers = arch.num_layers();
    }
    arch.validate(&inferred.config.space)
        .map_err(|e| content(format!("architecture: {e}")))?;

    let hidden = [LOG_ALPHA_A, LOG_ALPHA_C];
    let source = Without {
        inner: sd,
        hidden: &hidden,
    };
    let keys = inferred.scheme.op_keys();
    let arch_for_build = (inferred.scheme != KeyScheme::SearchSpace).then_some(&arch);
    let network = Network::from_source(&inferred.config, device, &source, &keys, arch_for_build)
        .map_err(|source| ImportError::Model {
            path: path.clone(),
            source,
        })?;
    Ok(Imported {
        network,
        arch,
        inferred,
    })
}

/// Reads MONAI's architecture file: a `torch.save`d dict with numpy arrays (or tensors)
/// `arch_code_a` (layers x E, 0/1) and `arch_code_c` (layers x E op indices, or one-hot
/// layers x E x ops), and optionally `node_a`, which must agree with the code.
pub fn read_arch_pth(path: &Path) -> Result<ArchCode, ImportError> {
    let content = |message: String| ImportError::Content {
        path: path.to_path_buf(),
        message,
    };
    let archive = TorchArchive::open(path)?;
    let entries = root_entries(&archive).ok_or_else(|| {
        content(format!(
            "the pickled object is a {}, expected a dict with arch_code_a and arch_code_c",
            archive.root.kind()
        ))
    })?;
    let get = |name: &str| -> Result<Option<super::torch_file::Array>, ImportError> {
        match entries.iter().find(|(k, _)| k == name) {
            Some((_, v)) => array_of(&archive, v)
                .map(Some)
                .map_err(|m| content(format!("'{name}': {m}"))),
            None => Ok(None),
        }
    };
    let a = get("arch_code_a")?.ok_or_else(|| content("no 'arch_code_a' entry".into()))?;
    let c = get("arch_code_c")?.ok_or_else(|| content("no 'arch_code_c' entry".into()))?;
    let node_a = get("node_a")?;
    let [layers, edges] = a.shape[..] else {
        return Err(content(format!(
            "arch_code_a has shape {:?}, expected 2-D",
            a.shape
        )));
    };
    if edges < 1 || (edges + 2) % 3 != 0 {
        return Err(content(format!(
            "arch_code_a has {edges} columns; DiNTS layers have 3 x levels - 2 edges"
        )));
    }
    let depths = edges.div_ceil(3);
    let op_index: Vec<f64> = match c.shape[..] {
        [l, e] if l == layers && e == edges => c.values.clone(),
        [l, e, ops] if l == layers && e == edges && ops > 0 => c
            .values
            .chunks(ops)
            .map(|row| (0..ops).fold(0, |b, o| if row[o] > row[b] { o } else { b }) as f64)
            .collect(),
        _ => {
            return Err(content(format!(
                "arch_code_c has shape {:?}, expected [{layers}, {edges}] (op indices) or \
                 [{layers}, {edges}, ops] (one-hot)",
                c.shape
            )));
        }
    };
    let to_rows = |values: &[f64]| -> Result<Vec<Vec<u8>>, ImportError> {
        values
            .chunks(edges)
            .map(|row| {
                row.iter()
                    .map(|&v| {
                        if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
                            Ok(v as u8)
                        } else {
                            Err(content(format!(
                                "arch code entry {v} is not a small integer"
                            )))
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let code = ArchCode::from_dints_matrices(&to_rows(&a.values)?, &to_rows(&op_index)?, depths)
        .map_err(|e| content(e.to_string()))?;
    if let Some(node_a) = node_a {
        let expected = code.node_a();
        let rows = layers + 1;
        let agree = node_a.shape == [rows, depths]
            && node_a
                .values
                .chunks(depths)
                .zip(&expected)
                .all(|(got, want)| got.iter().zip(want).all(|(g, w)| (*g != 0.0) == *w));
        if !agree {
            return Err(content(format!(
                "node_a (shape {:?}) disagrees with the node activations that arch_code_a \
                 implies ({rows} x {depths})",
                node_a.shape
            )));
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_mul_is_recovered_from_truncated_filters() {
        let f = |v: &[usize]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        assert_eq!(channel_mul_for(&f(&[32, 64, 128, 256, 512])), Some(1.0));
        assert_eq!(channel_mul_for(&f(&[6, 12, 25, 51, 102])), Some(0.2));
        assert_eq!(channel_mul_for(&f(&[2, 4, 8, 16, 32])), Some(0.0625));
        assert_eq!(channel_mul_for(&f(&[8, 16, 32])), Some(0.25));
        assert_eq!(channel_mul_for(&f(&[8, 17, 32])), None);
        let c = channel_mul_for(&[Some(6), Some(12), Some(25), None]).unwrap();
        assert_eq!((32.0 * 4.0 * c) as usize, 25);
    }
}
