//! Architecture codes of the DiNTS multi-path search space that HyperSegNAS searches.
//!
//! A [`SearchSpace`] has `L` layers, `D` resolution levels and `E = 3D - 2` edges per layer,
//! ordered as in DiNTS: grouped by target level, each group ordered by source level. An
//! [`ArchCode`] says, for every layer and edge, whether the edge is off or which op it runs.
//! Everything the networks, the MAN input (`l_arch`) and MONAI's `node_a` / `arch_code_a` /
//! `arch_code_c` matrices need is derived from that one table.

mod json;
mod presets;
mod sample;

pub use json::{ArchFile, read_arch_json, write_arch_json};
pub use presets::{PRESET_NAMES, preset};
pub use sample::{count_valid, sample_uniform, sample_with};

use std::fmt;

/// One cell operation. The discriminant is DiNTS's op index, which is part of MONAI's file
/// formats (`arch_code_c` stores these numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Identity (`skip_connect`): no weights.
    Skip = 0,
    /// ReLU, 3x3x3 convolution, instance norm.
    Conv3x3x3 = 1,
    /// ReLU, (3,3,1) then (1,1,3) convolution, instance norm (pseudo-3D).
    Conv3x3x1 = 2,
    /// ReLU, (3,1,3) then (1,3,1) convolution, instance norm (pseudo-3D).
    Conv3x1x3 = 3,
    /// ReLU, (1,3,3) then (3,1,1) convolution, instance norm (pseudo-3D).
    Conv1x3x3 = 4,
}

impl Op {
    /// All DiNTS ops in index order.
    pub const ALL: [Op; 5] = [
        Op::Skip,
        Op::Conv3x3x3,
        Op::Conv3x3x1,
        Op::Conv3x1x3,
        Op::Conv1x3x3,
    ];

    /// DiNTS's op index.
    pub fn dints_index(self) -> usize {
        self as usize
    }

    /// The op with DiNTS index `index`.
    pub fn from_dints_index(index: usize) -> Option<Op> {
        Op::ALL.get(index).copied()
    }

    /// MONAI's name of the op.
    pub fn name(self) -> &'static str {
        match self {
            Op::Skip => "skip_connect",
            Op::Conv3x3x3 => "conv_3x3x3",
            Op::Conv3x3x1 => "conv_3x3x1",
            Op::Conv3x1x3 => "conv_3x1x3",
            Op::Conv1x3x3 => "conv_1x3x3",
        }
    }

    /// A short label for tables and grids.
    pub fn short(self) -> &'static str {
        match self {
            Op::Skip => "skip",
            Op::Conv3x3x3 => "3x3x3",
            Op::Conv3x3x1 => "3x3x1",
            Op::Conv3x1x3 => "3x1x3",
            Op::Conv1x3x3 => "1x3x3",
        }
    }

    /// Parses MONAI's name or the short label (`skip`, `conv`, `3x3x3`, ...).
    pub fn parse(text: &str) -> Option<Op> {
        let text = text.trim().to_ascii_lowercase();
        if text == "conv" {
            return Some(Op::Conv3x3x3);
        }
        Op::ALL
            .into_iter()
            .find(|op| op.name() == text || op.short() == text)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an edge changes resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// Same level: no preprocess.
    Same,
    /// From the next coarser level: factorized increase (x2 upsample) before the op.
    Up,
    /// From the next finer level: factorized reduce (stride 2) before the op.
    Down,
}

/// One edge of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Level the edge reads.
    pub source: usize,
    /// Level the edge writes.
    pub target: usize,
    /// Resolution change.
    pub kind: EdgeKind,
}

/// Errors about search spaces and architecture codes. Messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The architecture breaks one or more rules of the search space.
    #[error("invalid architecture: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The code and the search space disagree on their size.
    #[error(
        "architecture has {found_layers} layers x {found_depths} levels but the network has \
         {layers} layers x {depths} levels"
    )]
    ShapeMismatch {
        /// Layers of the network.
        layers: usize,
        /// Levels of the network.
        depths: usize,
        /// Layers of the code.
        found_layers: usize,
        /// Levels of the code.
        found_depths: usize,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An unknown preset name.
    #[error("unknown architecture preset '{0}' (known: {known})", known = PRESET_NAMES.join(", "))]
    UnknownPreset(String),
}

/// The search space: layers, resolution levels and the op set of every edge.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SearchSpace {
    /// Number of layers (DiNTS's `num_blocks`; 12 in the paper).
    pub num_layers: usize,
    /// Number of resolution levels (DiNTS's `num_depths`; 4 in the paper).
    pub num_depths: usize,
    /// The ops a super-net edge holds, in the order of its `op.ops.K` keys.
    #[serde(with = "op_names")]
    pub ops: Vec<Op>,
}

impl SearchSpace {
    /// HyperSegNAS's space: skip and 3x3x3 convolution (O = 2).
    pub fn hypersegnas(num_layers: usize, num_depths: usize) -> Self {
        Self {
            num_layers,
            num_depths,
            ops: vec![Op::Skip, Op::Conv3x3x3],
        }
    }

    /// DiNTS's space: all five ops.
    pub fn dints(num_layers: usize, num_depths: usize) -> Self {
        Self {
            num_layers,
            num_depths,
            ops: Op::ALL.to_vec(),
        }
    }

    /// Edges per layer, `3D - 2`.
    pub fn num_edges(&self) -> usize {
        num_edges(self.num_depths)
    }

    /// The edge with index `edge`, in DiNTS order.
    pub fn edge(&self, edge: usize) -> Edge {
        edge_at(edge)
    }

    /// All edges of a layer, in DiNTS order.
    pub fn edges(&self) -> Vec<Edge> {
        (0..self.num_edges()).map(edge_at).collect()
    }

    /// Position of `op` in this space's op set, which is its `K` in `op.ops.K`.
    pub fn op_slot(&self, op: Op) -> Option<usize> {
        self.ops.iter().position(|&o| o == op)
    }

    /// Checks the space itself.
    pub fn validate(&self) -> Result<(), ArchError> {
        let mut problems = Vec::new();
        if self.num_layers == 0 {
            problems.push("the search space needs at least one layer".to_string());
        }
        if self.num_depths == 0 {
            problems.push("the search space needs at least one level".to_string());
        }
        if self.ops.is_empty() {
            problems.push("the search space needs at least one op".to_string());
        }
        let mut seen = self.ops.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.ops.len() {
            problems.push("the op set lists an op twice".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ArchError::Invalid(problems))
        }
    }
}

/// Edges per layer for `depths` levels.
pub fn num_edges(depths: usize) -> usize {
    (3 * depths).saturating_sub(2)
}

/// DiNTS's edge table: source `(i + 1) / 3 - 1 + (i + 1) % 3`, target `(i + 1) / 3`.
fn edge_at(edge: usize) -> Edge {
    let shifted = edge + 1;
    let target = shifted / 3;
    let source = target + shifted % 3 - 1;
    let kind = match shifted % 3 {
        0 => EdgeKind::Down,
        1 => EdgeKind::Same,
        _ => EdgeKind::Up,
    };
    Edge {
        source,
        target,
        kind,
    }
}

/// An architecture code: per layer and edge, off (`None`) or one op.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArchCode {
    num_layers: usize,
    num_depths: usize,
    /// Layer-major: `cells[layer * E + edge]`.
    cells: Vec<Option<Op>>,
}

impl ArchCode {
    /// A code with every edge off.
    pub fn empty(num_layers: usize, num_depths: usize) -> Self {
        Self {
            num_layers,
            num_depths,
            cells: vec![None; num_layers * num_edges(num_depths)],
        }
    }

    /// Builds a code from MONAI's matrices: `arch_code_a` (edge on/off) and `arch_code_c`
    /// (DiNTS op index, ignored where the edge is off). Both are layers x E.
    pub fn from_dints_matrices(
        arch_code_a: &[Vec<u8>],
        arch_code_c: &[Vec<u8>],
        num_depths: usize,
    ) -> Result<Self, ArchError> {
        let edges = num_edges(num_depths);
        let layers = arch_code_a.len();
        let mut problems = Vec::new();
        if arch_code_c.len() != layers {
            problems.push(format!(
                "arch_code_a has {layers} rows but arch_code_c has {}",
                arch_code_c.len()
            ));
        }
        let mut code = Self::empty(layers, num_depths);
        for (layer, (row_a, row_c)) in arch_code_a.iter().zip(arch_code_c).enumerate() {
            if row_a.len() != edges || row_c.len() != edges {
                problems.push(format!(
                    "row {layer} has {} / {} entries, expected {edges} (3 x {num_depths} - 2)",
                    row_a.len(),
                    row_c.len()
                ));
                continue;
            }
            for edge in 0..edges {
                if row_a[edge] == 0 {
                    continue;
                }
                match Op::from_dints_index(row_c[edge] as usize) {
                    Some(op) => code.set(layer, edge, Some(op)),
                    None => problems.push(format!(
                        "layer {layer} edge {edge}: op index {} is not a DiNTS op (0-4)",
                        row_c[edge]
                    )),
                }
            }
        }
        if problems.is_empty() {
            Ok(code)
        } else {
            Err(ArchError::Invalid(problems))
        }
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Number of resolution levels.
    pub fn num_depths(&self) -> usize {
        self.num_depths
    }

    /// Edges per layer.
    pub fn num_edges(&self) -> usize {
        num_edges(self.num_depths)
    }

    /// The op of an edge, `None` when the edge is off.
    pub fn get(&self, layer: usize, edge: usize) -> Option<Op> {
        self.cells[layer * self.num_edges() + edge]
    }

    /// Sets the op of an edge (`None` turns it off).
    pub fn set(&mut self, layer: usize, edge: usize, op: Option<Op>) {
        let edges = self.num_edges();
        self.cells[layer * edges + edge] = op;
    }

    /// Number of active edges.
    pub fn active_edges(&self) -> usize {
        self.cells.iter().filter(|c| c.is_some()).count()
    }

    /// DiNTS's `node_a`: `(layers + 1) x D`. Row 0 marks the input levels that layer 0
    /// reads; row `l + 1` marks the levels that layer `l` writes.
    pub fn node_a(&self) -> Vec<Vec<bool>> {
        let depths = self.num_depths;
        let mut rows = vec![vec![false; depths]; self.num_layers + 1];
        for layer in 0..self.num_layers {
            for edge in 0..self.num_edges() {
                if self.get(layer, edge).is_some() {
                    let e = edge_at(edge);
                    rows[layer + 1][e.target] = true;
                    if layer == 0 {
                        rows[0][e.source] = true;
                    }
                }
            }
        }
        rows
    }

    /// MONAI's `arch_code_a` (0/1) and `arch_code_c` (op index, 0 where off).
    pub fn to_dints_matrices(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let edges = self.num_edges();
        let a = (0..self.num_layers)
            .map(|l| (0..edges).map(|e| self.get(l, e).is_some() as u8).collect())
            .collect();
        let c = (0..self.num_layers)
            .map(|l| {
                (0..edges)
                    .map(|e| self.get(l, e).map_or(0, |op| op.dints_index() as u8))
                    .collect()
            })
            .collect();
        (a, c)
    }

    /// Checks the code against a search space. Every problem is listed, each phrased so a
    /// user knows what to change.
    pub fn validate(&self, space: &SearchSpace) -> Result<(), ArchError> {
        if self.num_layers != space.num_layers || self.num_depths != space.num_depths {
            return Err(ArchError::ShapeMismatch {
                layers: space.num_layers,
                depths: space.num_depths,
                found_layers: self.num_layers,
                found_depths: self.num_depths,
            });
        }
        let problems = self.problems(space);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ArchError::Invalid(problems))
        }
    }

    /// The list behind [`ArchCode::validate`] (empty when the code is valid). Assumes the
    /// sizes match. Layers and edges are numbered from 1 in the messages (row `layer - 1`,
    /// column `edge - 1` of MONAI's matrices).
    pub fn problems(&self, space: &SearchSpace) -> Vec<String> {
        let mut problems = Vec::new();
        let edges = self.num_edges();
        let node_a = self.node_a();
        for (layer, inputs) in node_a.iter().take(self.num_layers).enumerate() {
            for edge in 0..edges {
                let Some(op) = self.get(layer, edge) else {
                    continue;
                };
                let e = edge_at(edge);
                if space.op_slot(op).is_none() {
                    problems.push(format!(
                        "layer {} edge {} ({}->{}) uses {op}, which is not in the search \
                         space's ops ({})",
                        layer + 1,
                        edge + 1,
                        e.source,
                        e.target,
                        op_list(&space.ops)
                    ));
                }
                if layer > 0 && !inputs[e.source] {
                    problems.push(format!(
                        "layer {} edge {} ({}->{}) leaves level {} which no edge of layer {} \
                         feeds: turn the edge off or activate an edge into level {}",
                        layer + 1,
                        edge + 1,
                        e.source,
                        e.target,
                        e.source,
                        layer,
                        e.source
                    ));
                }
            }
        }
        if self.num_layers > 0 && !node_a[self.num_layers].iter().any(|&a| a) {
            problems.push(format!(
                "the last layer ({}) has no active edge, so the head has no input",
                self.num_layers
            ));
        }
        problems
    }

    /// `flatten(a)` of Algorithm 1: the MAN's `l_arch`, `L * E` entries, 0 for an inactive
    /// edge and `1 + K` for the op at position `K` of the space's op set (so 1 skip, 2 conv
    /// in HyperSegNAS's space).
    pub fn flatten(&self, space: &SearchSpace) -> Vec<f32> {
        self.cells
            .iter()
            .map(|cell| match cell.and_then(|op| space.op_slot(op)) {
                Some(slot) => (slot + 1) as f32,
                None => 0.0,
            })
            .collect()
    }

    /// A compact text grid: one row per layer, one column per edge.
    pub fn to_grid_string(&self) -> String {
        let mut out = String::new();
        for layer in 0..self.num_layers {
            let row: Vec<String> = (0..self.num_edges())
                .map(|e| match self.get(layer, e) {
                    None => ".".to_string(),
                    Some(op) => op.dints_index().to_string(),
                })
                .collect();
            out.push_str(&format!("{layer:>3}: {}\n", row.join(" ")));
        }
        out
    }
}

fn op_list(ops: &[Op]) -> String {
    ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
}

mod op_names {
    //! Serialises an op set as MONAI's op names.
    use super::Op;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(ops: &[Op], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ops.iter().map(|o| o.name()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Op>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| Op::parse(n).ok_or_else(|| D::Error::custom(format!("unknown op '{n}'"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_table_matches_dints_for_four_levels() {
        let space = SearchSpace::hypersegnas(12, 4);
        let table: Vec<(usize, usize, EdgeKind)> = space
            .edges()
            .iter()
            .map(|e| (e.source, e.target, e.kind))
            .collect();
        use EdgeKind::*;
        assert_eq!(
            table,
            vec![
                (0, 0, Same),
                (1, 0, Up),
                (0, 1, Down),
                (1, 1, Same),
                (2, 1, Up),
                (1, 2, Down),
                (2, 2, Same),
                (3, 2, Up),
                (2, 3, Down),
                (3, 3, Same),
            ]
        );
    }

    #[test]
    fn edge_count_is_three_d_minus_two() {
        for depths in 1..7 {
            let space = SearchSpace::dints(3, depths);
            assert_eq!(space.num_edges(), 3 * depths - 2);
            for e in space.edges() {
                assert!(e.source < depths && e.target < depths);
            }
        }
    }

    #[test]
    fn flatten_encodes_inactive_skip_conv() {
        let space = SearchSpace::hypersegnas(2, 2);
        let mut code = ArchCode::empty(2, 2);
        code.set(0, 0, Some(Op::Skip));
        code.set(0, 2, Some(Op::Conv3x3x3));
        code.set(1, 3, Some(Op::Conv3x3x3));
        assert_eq!(
            code.flatten(&space),
            vec![1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 2.0]
        );
    }

    #[test]
    fn edge_from_inactive_node_is_reported() {
        let space = SearchSpace::hypersegnas(2, 2);
        let mut code = ArchCode::empty(2, 2);
        code.set(0, 0, Some(Op::Conv3x3x3)); // 0 -> 0
        code.set(1, 3, Some(Op::Conv3x3x3)); // 1 -> 1, but level 1 is not fed
        let problems = code.problems(&space);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("leaves level 1"), "{}", problems[0]);
    }

    #[test]
    fn empty_last_layer_is_reported() {
        let space = SearchSpace::hypersegnas(2, 2);
        let mut code = ArchCode::empty(2, 2);
        code.set(0, 0, Some(Op::Conv3x3x3));
        let err = code.validate(&space).unwrap_err().to_string();
        assert!(err.contains("head has no input"), "{err}");
    }

    #[test]
    fn op_outside_space_is_reported() {
        let space = SearchSpace::hypersegnas(1, 1);
        let mut code = ArchCode::empty(1, 1);
        code.set(0, 0, Some(Op::Conv1x3x3));
        let err = code.validate(&space).unwrap_err().to_string();
        assert!(err.contains("not in the search space"), "{err}");
    }

    #[test]
    fn node_a_marks_inputs_and_outputs() {
        let mut code = ArchCode::empty(2, 2);
        code.set(0, 2, Some(Op::Skip)); // 0 -> 1
        code.set(1, 1, Some(Op::Skip)); // 1 -> 0
        assert_eq!(
            code.node_a(),
            vec![vec![true, false], vec![false, true], vec![true, false]]
        );
    }

    #[test]
    fn dints_matrices_round_trip() {
        let code = preset("dints-paper", &SearchSpace::dints(12, 4)).unwrap();
        let (a, c) = code.to_dints_matrices();
        let back = ArchCode::from_dints_matrices(&a, &c, 4).unwrap();
        assert_eq!(back, code);
    }
}
