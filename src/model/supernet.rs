//! The super-net F: DiNTS's stems, the `L x E` tree of cells and the head, with
//! HyperSegNAS's channel weights multiplied into every active edge.
//!
//! Key names follow MONAI's `DiNTS` state dict (`stem_down.{d}.mod.1.weight`,
//! `dints_space.cell_tree.(l, e).op.ops.K.conv.weight`, `stem_finals.1.bias`, ...), so a
//! MONAI checkpoint and ours name every tensor the same way.

use burn::module::Module;
use burn::tensor::{Tensor, activation::relu};

use super::blocks::{
    Conv, FactorizedIncrease, FactorizedReduce, Norm, OpBlock, op_params, resize_trilinear,
    upsample2,
};
use super::config::NetworkConfig;
use super::weights::ParamBuilder;
use crate::arch::{ArchCode, EdgeKind, Op};

/// Which ops a cell holds and under which `op.ops.K` index.
#[derive(Clone, Debug)]
pub enum OpKeys {
    /// A super-net cell: every op of the space, `K` = position in the space's op set.
    SuperNet,
    /// A searched instance: only the architecture's op, at `K = 0` (MONAI since 2023).
    Instance,
    /// A searched instance written by MONAI before early 2023: the op at `K` = its DiNTS
    /// index.
    LegacyInstance,
}

/// A down stem: resize the original input to the level's resolution, then convolutions.
#[derive(Module, Debug)]
pub struct StemDown {
    conv_a: Conv,
    norm_a: Norm,
    conv_b: Option<Conv>,
    norm_b: Option<Norm>,
    scale: usize,
}

impl StemDown {
    fn new(b: &mut ParamBuilder, cfg: &NetworkConfig, level: usize) -> Self {
        let f = cfg.filters();
        let key = format!("stem_down.{level}.mod");
        let conv_a = Conv::cubic(b, &format!("{key}.1"), cfg.in_channels, f[level], 3);
        let norm_a = Norm::affine(b, &format!("{key}.2"), f[level]);
        let (conv_b, norm_b) = if cfg.use_downsample {
            let conv = Conv::new(
                b,
                &format!("{key}.4"),
                f[level],
                f[level + 1],
                [3; 3],
                2,
                [1; 3],
                false,
            );
            (
                Some(conv),
                Some(Norm::affine(b, &format!("{key}.5"), f[level + 1])),
            )
        } else {
            (None, None)
        };
        Self {
            conv_a,
            norm_a,
            conv_b,
            norm_b,
            scale: 1 << level,
        }
    }

    /// # Shapes
    /// - input: `[batch, in_channels, x, y, z]` (the original input)
    /// - output: `[batch, level channels, x / stride, y / stride, z / stride]`
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let [_, _, sx, sy, sz] = x.dims();
        let x = resize_trilinear(x, [sx / self.scale, sy / self.scale, sz / self.scale]);
        let mut y = self.norm_a.forward(self.conv_a.forward(x));
        if let (Some(conv), Some(norm)) = (&self.conv_b, &self.norm_b) {
            y = norm.forward(conv.forward(relu(y)));
        }
        y
    }
}

/// An up stem of the head: ReLU, 3x3x3 convolution, norm, x2 upsampling.
#[derive(Module, Debug)]
pub struct StemUp {
    conv: Conv,
    norm: Norm,
    upsample: bool,
}

impl StemUp {
    fn new(b: &mut ParamBuilder, cfg: &NetworkConfig, level: usize) -> Self {
        let f = cfg.filters();
        let key = format!("stem_up.{level}.mod");
        let (c_in, c_out, upsample) = if cfg.use_downsample {
            (f[level + 1], f[level], true)
        } else {
            (f[level], f[level.saturating_sub(1)], level > 0)
        };
        Self {
            conv: Conv::cubic(b, &format!("{key}.1"), c_in, c_out, 3),
            norm: Norm::affine(b, &format!("{key}.2"), c_out),
            upsample,
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let y = self.norm.forward(self.conv.forward_relu(x));
        if self.upsample { upsample2(y) } else { y }
    }
}

/// One cell: the edge's preprocess (for up and down edges) and its op blocks.
#[derive(Module, Debug)]
pub struct Cell {
    down: Option<FactorizedReduce>,
    up: Option<FactorizedIncrease>,
    /// Op blocks, parallel to `ops` (`None` for skip).
    blocks: Vec<Option<OpBlock>>,
    /// The ops this cell holds.
    #[module(skip)]
    ops: Vec<Op>,
}

impl Cell {
    fn new(
        b: &mut ParamBuilder,
        cfg: &NetworkConfig,
        layer: usize,
        edge: usize,
        ops: &[(usize, Op)],
    ) -> Self {
        let e = cfg.space.edge(edge);
        let key = format!("dints_space.cell_tree.({layer}, {edge})");
        let c = cfg.level_channels(e.target);
        let c_prev = cfg.level_channels(e.source);
        let pre = format!("{key}.preprocess");
        let (down, up) = match e.kind {
            EdgeKind::Same => (None, None),
            EdgeKind::Down => (Some(FactorizedReduce::new(b, &pre, c_prev, c)), None),
            EdgeKind::Up => (None, Some(FactorizedIncrease::new(b, &pre, c_prev, c))),
        };
        let blocks = ops
            .iter()
            .map(|(k, op)| OpBlock::new(b, &format!("{key}.op.ops.{k}"), *op, c))
            .collect();
        Self {
            down,
            up,
            blocks,
            ops: ops.iter().map(|(_, op)| *op).collect(),
        }
    }

    /// Does the edge carry weights for `op`? A skip between nodes of the same level is
    /// the identity and has none; a skip across levels still has its preprocess.
    fn has_weights(&self, op: Op) -> bool {
        op != Op::Skip || self.down.is_some() || self.up.is_some()
    }

    /// The cell's output for `op`: `op(preprocess(x))`, `None` if the cell lacks that op.
    fn forward(&self, x: Tensor<5>, op: Op) -> Option<Tensor<5>> {
        let slot = self.ops.iter().position(|&o| o == op)?;
        let mut y = x;
        if let Some(down) = &self.down {
            y = down.forward(y);
        }
        if let Some(up) = &self.up {
            y = up.forward(y);
        }
        Some(match &self.blocks[slot] {
            Some(block) => block.forward(y),
            None => y,
        })
    }
}

/// The DiNTS super-net (or a searched instance of it).
#[derive(Module, Debug)]
pub struct SuperNet {
    stem_down: Vec<StemDown>,
    stem_up: Vec<StemUp>,
    final_conv: Conv,
    final_norm: Norm,
    classifier: Conv,
    /// `cells[layer * E + edge]`; `None` where an instance has no cell.
    cells: Vec<Option<Cell>>,
    num_depths: usize,
    num_edges: usize,
}

/// Errors of a forward pass that depend on the inputs (shapes, architecture).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The input's spatial size does not fit the network's levels.
    #[error("input size {size:?} {problem}")]
    InputSize {
        /// Spatial size of the input.
        size: [usize; 3],
        /// What is wrong with it ([`crate::model::NetworkConfig::input_size_problem_for`]).
        problem: String,
    },
    /// The input has the wrong number of channels.
    #[error("input has {found} channels, the network expects {expected}")]
    Channels {
        /// Channels the network expects.
        expected: usize,
        /// Channels found.
        found: usize,
    },
    /// The architecture asks for an op the network does not hold.
    #[error("layer {layer} edge {edge}: this network has no weights for op {op}")]
    MissingOp {
        /// Layer.
        layer: usize,
        /// Edge.
        edge: usize,
        /// Op.
        op: Op,
    },
    /// The architecture is not valid.
    #[error(transparent)]
    Arch(#[from] crate::arch::ArchError),
}

impl SuperNet {
    /// Builds the super-net. With [`OpKeys::SuperNet`] every cell holds every op of the
    /// space; otherwise only the cells that `arch` activates exist, each with its one op.
    pub fn new(
        b: &mut ParamBuilder,
        cfg: &NetworkConfig,
        keys: &OpKeys,
        arch: Option<&ArchCode>,
    ) -> Self {
        let depths = cfg.space.num_depths;
        let edges = cfg.space.num_edges();
        let f = cfg.filters();

        let stem_down = (0..depths).map(|d| StemDown::new(b, cfg, d)).collect();
        let mut cells = Vec::with_capacity(cfg.space.num_layers * edges);
        for layer in 0..cfg.space.num_layers {
            for edge in 0..edges {
                let ops: Vec<(usize, Op)> = match (keys, arch) {
                    (OpKeys::SuperNet, _) => cfg.space.ops.iter().copied().enumerate().collect(),
                    (OpKeys::Instance, Some(a)) => {
                        a.get(layer, edge).map(|op| (0, op)).into_iter().collect()
                    }
                    (OpKeys::LegacyInstance, Some(a)) => a
                        .get(layer, edge)
                        .map(|op| (op.dints_index(), op))
                        .into_iter()
                        .collect(),
                    (_, None) => Vec::new(),
                };
                cells.push((!ops.is_empty()).then(|| Cell::new(b, cfg, layer, edge, &ops)));
            }
        }
        let stem_up = (0..depths).map(|d| StemUp::new(b, cfg, d)).collect();
        let final_conv = Conv::cubic(b, "stem_finals.0.conv", f[0], f[0], 3);
        let final_norm = Norm::affine(b, "stem_finals.0.norm", f[0]);
        let classifier = Conv::new(
            b,
            "stem_finals.1",
            f[0],
            cfg.num_classes,
            [1; 3],
            1,
            [0; 3],
            true,
        );
        Self {
            stem_down,
            stem_up,
            final_conv,
            final_norm,
            classifier,
            cells,
            num_depths: depths,
            num_edges: edges,
        }
    }

    /// Runs architecture `arch` on `x`. With `channel_weights` (`[batch, total]`, laid out as
    /// [`NetworkConfig::channel_weight_offsets`] says), each active edge that has weights has
    /// its output channels multiplied by their channel weights after the op (after its norm,
    /// so no instance norm cancels them). Algorithm 1 scales an edge's weights
    /// (`w_active = w * w_a`): a skip between nodes of the same level is the identity, has
    /// no weights and is left as it is; a skip across levels is scaled after its preprocess.
    ///
    /// # Shapes
    /// - x: `[batch, in_channels, x, y, z]`, a spatial size that
    ///   [`NetworkConfig::input_size_problem_for`] accepts for `arch`
    /// - output: `[batch, classes, x, y, z]` logits
    pub fn forward(
        &self,
        x: Tensor<5>,
        arch: &ArchCode,
        channel_weights: Option<(&Tensor<2>, &[usize])>,
    ) -> Result<Tensor<5>, ForwardError> {
        let [batch, _, _, _, _] = x.dims();
        let node_a = arch.node_a();
        let edges = self.num_edges;

        // Stems: every level reads the original input; unused levels are zeros.
        let mut nodes: Vec<Option<Tensor<5>>> = self
            .stem_down
            .iter()
            .enumerate()
            .map(|(d, stem)| node_a[0][d].then(|| stem.forward(x.clone())))
            .collect();

        // Cells: a node is the sum of its incoming edges, in edge order.
        for layer in 0..arch.num_layers() {
            let mut next: Vec<Option<Tensor<5>>> = vec![None; self.num_depths];
            for edge in 0..edges {
                let Some(op) = arch.get(layer, edge) else {
                    continue;
                };
                let index = layer * edges + edge;
                let missing = ForwardError::MissingOp { layer, edge, op };
                let cell = self.cells[index].as_ref().ok_or(missing)?;
                let (source, target) = edge_levels(edge);
                let input = nodes[source].clone().ok_or_else(|| {
                    ForwardError::Arch(crate::arch::ArchError::Invalid(vec![format!(
                        "layer {layer} edge {edge} reads level {source}, which is inactive"
                    )]))
                })?;
                let mut out =
                    cell.forward(input, op)
                        .ok_or(ForwardError::MissingOp { layer, edge, op })?;
                if let Some((w, offsets)) = channel_weights
                    && cell.has_weights(op)
                {
                    let (start, end) = (offsets[index], offsets[index + 1]);
                    let scale = w.clone().slice([0..batch, start..end]);
                    out = out * scale.reshape([batch, end - start, 1, 1, 1]);
                }
                next[target] = Some(match next[target].take() {
                    Some(sum) => sum + out,
                    None => out,
                });
            }
            nodes = next;
        }

        // Head: from the deepest active level of the last row up to level 0; a level that
        // the last layer does not write contributes nothing (DiNTS's zero node).
        let last = &node_a[arch.num_layers()];
        let start = (0..self.num_depths).rev().find(|&d| last[d]).unwrap_or(0);
        let deepest = nodes[start].take().ok_or_else(|| {
            ForwardError::Arch(crate::arch::ArchError::Invalid(vec![
                "the last layer has no active edge, so the head has no input".into(),
            ]))
        })?;
        let mut t = self.stem_up[start].forward(deepest);
        for level in (0..start).rev() {
            let input = match nodes[level].take() {
                Some(node) => node + t,
                None => t,
            };
            t = self.stem_up[level].forward(input);
        }
        let y = self.final_norm.forward(self.final_conv.forward_relu(t));
        Ok(self.classifier.forward(y))
    }
}

/// Source and target level of edge `edge` (DiNTS order).
fn edge_levels(edge: usize) -> (usize, usize) {
    let shifted = edge + 1;
    let target = shifted / 3;
    (target + shifted % 3 - 1, target)
}

/// Parameter count of a searched instance of `code` (stems, head and the active cells with
/// their one op each), as MONAI's `DiNTS(TopologyInstance(...))` holds it.
pub fn instance_params(cfg: &NetworkConfig, code: &ArchCode) -> usize {
    let mut n = cfg.stem_and_head_params();
    for layer in 0..code.num_layers() {
        for edge in 0..code.num_edges() {
            if let Some(op) = code.get(layer, edge) {
                let e = cfg.space.edge(edge);
                let c = cfg.level_channels(e.target);
                let c_prev = cfg.level_channels(e.source);
                if e.kind != EdgeKind::Same {
                    n += c_prev * c + 2 * c;
                }
                n += op_params(op, c);
            }
        }
    }
    n
}
