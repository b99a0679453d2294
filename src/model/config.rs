//! Network configuration: the search space, channel widths, the MAN's hidden widths, and
//! the two named presets (`paper` and `demo`).

use serde::{Deserialize, Serialize};

use crate::arch::{ArchCode, EdgeKind, SearchSpace};

/// Everything needed to build the three networks of HyperSegNAS (super-net F, image encoder
/// M and meta-assistant network H) with the right tensor shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Layers, levels and op set.
    pub space: SearchSpace,
    /// DiNTS's channel multiplier: filter `i` is `trunc(32 * 2^i * channel_mul)`.
    pub channel_mul: f64,
    /// Input image channels.
    pub in_channels: usize,
    /// Output classes (background included).
    pub num_classes: usize,
    /// DiNTS's `use_downsample`: levels at 1/2 .. 1/2^D of the input (true) or 1 .. 1/2^(D-1).
    pub use_downsample: bool,
    /// Hidden widths of the MAN; empty when the network has no MAN/encoder (plain DiNTS).
    pub man_hidden: Vec<usize>,
}

/// Output width of the image encoder M (Table 4, CONV5).
pub const ENCODER_FEATURES: usize = 256;

impl NetworkConfig {
    /// The paper's network: 12 layers, 4 levels, skip/conv, channels 64-512 (channel_mul 1),
    /// MAN widths 2048-4096-8192-16384 (Table 5).
    pub fn paper(in_channels: usize, num_classes: usize) -> Self {
        Self {
            space: SearchSpace::hypersegnas(12, 4),
            channel_mul: 1.0,
            in_channels,
            num_classes,
            use_downsample: true,
            man_hidden: vec![2048, 4096, 8192, 16384],
        }
    }

    /// A CPU-sized network with the paper's topology: 12 layers x 10 edges x (skip, conv),
    /// channel_mul 0.0625 (levels carry 4, 8, 16, 32 channels), MAN widths 128-256. The image
    /// encoder is Table 4's, unchanged.
    pub fn demo(in_channels: usize, num_classes: usize) -> Self {
        Self {
            space: SearchSpace::hypersegnas(12, 4),
            channel_mul: 0.0625,
            in_channels,
            num_classes,
            use_downsample: true,
            man_hidden: vec![128, 256],
        }
    }

    /// A named preset (`paper` or `demo`).
    pub fn preset(name: &str, in_channels: usize, num_classes: usize) -> Option<Self> {
        match name {
            "paper" => Some(Self::paper(in_channels, num_classes)),
            "demo" => Some(Self::demo(in_channels, num_classes)),
            _ => None,
        }
    }

    /// DiNTS's filter list, `D + 1` entries, `trunc(32 * 2^i * channel_mul)`.
    pub fn filters(&self) -> Vec<usize> {
        (0..=self.space.num_depths)
            .map(|i| (32.0 * 2f64.powi(i as i32) * self.channel_mul) as usize)
            .collect()
    }

    /// Channels of a level-`d` node.
    pub fn level_channels(&self, level: usize) -> usize {
        let f = self.filters();
        if self.use_downsample {
            f[level + 1]
        } else {
            f[level]
        }
    }

    /// Down-sampling factor of level `level` relative to the input.
    pub fn level_stride(&self, level: usize) -> usize {
        1 << (level + self.use_downsample as usize)
    }

    /// Input sides must be multiples of this, the down-sampling factor of the deepest level
    /// (`2^D` with `use_downsample`, `2^(D - 1)` without): every other level is then even,
    /// as its factorized reduce needs, and each x2 upsampling lands on the finer level's size.
    /// MONAI recommends twice this but runs every size [`Self::input_size_problem`] accepts
    /// (the test `input_sizes_are_those_monai_runs` holds the sizes MONAI 1.6.1 ran).
    pub fn input_divisor(&self) -> usize {
        self.level_stride(self.space.num_depths.saturating_sub(1))
    }

    /// Why an input of spatial `size` cannot go through this network, or `None` when it can:
    /// every side must be a positive multiple of [`Self::input_divisor`], and the deepest
    /// level must hold more than one voxel (MONAI's instance norm refuses a single one, and
    /// its output would not depend on the input).
    pub fn input_size_problem(&self, size: [usize; 3]) -> Option<String> {
        let m = self.input_divisor();
        if size.iter().any(|s| *s == 0 || s % m != 0) {
            Some(format!(
                "must be a positive multiple of {m} in every dimension"
            ))
        } else if size.iter().all(|s| *s == m) {
            Some(format!(
                "leaves a single voxel at the network's deepest level (1/{m}); one side at \
                 least must be {} or more",
                2 * m
            ))
        } else {
            None
        }
    }

    /// Why an input of spatial `size` cannot go through architecture `arch` (already
    /// validated), or `None` when it can. Sizes that [`Self::input_size_problem`] accepts
    /// fit every architecture; one that leaves the deeper levels unused also fits others,
    /// as in MONAI, which runs only the active cells and head stems. The shapes are followed
    /// as MONAI computes them:
    /// - level `d`'s stem resizes each side to `floor(side / 2^d)`, then, with
    ///   `use_downsample`, halves it with a stride-2 convolution (rounding up);
    /// - a factorized reduce needs even sides, a factorized increase doubles them, and all
    ///   edges into a node must agree;
    /// - the head doubles from the deepest node of the last layer up to the input size,
    ///   matching every active node on the way;
    /// - every active node holds more than one voxel (instance norm).
    pub fn input_size_problem_for(&self, size: [usize; 3], arch: &ArchCode) -> Option<String> {
        if size.contains(&0) {
            return Some("must be positive in every dimension".into());
        }
        let depths = self.space.num_depths;
        if arch.num_depths() != depths || arch.num_edges() != self.space.num_edges() {
            // Not this network's architecture: `ArchCode::validate` says so.
            return None;
        }
        let node_a = arch.node_a();
        let deepest = (0..depths)
            .filter(|&d| node_a.iter().any(|row| row[d]))
            .max()
            .unwrap_or(0);
        let factor = self.level_stride(deepest);
        let hint = format!(
            "; sides that are multiples of {factor}, one of them {} or more, fit this \
             architecture",
            2 * factor
        );
        let fail = |what: String| Some(format!("{what}{hint}"));
        let volume = |v: [usize; 3]| v.iter().fold(1usize, |n, s| n.saturating_mul(*s));
        let ds = self.use_downsample;

        let mut nodes: Vec<Option<[usize; 3]>> = (0..depths)
            .map(|d| {
                node_a[0][d].then(|| size.map(|s| if ds { (s >> d).div_ceil(2) } else { s >> d }))
            })
            .collect();
        for (d, node) in nodes.iter().enumerate() {
            if let Some(v) = node.filter(|v| volume(*v) <= 1) {
                return fail(format!("leaves {v:?} voxels at level {d} after its stem"));
            }
        }
        for layer in 0..arch.num_layers() {
            let mut next: Vec<Option<[usize; 3]>> = vec![None; depths];
            for edge in 0..arch.num_edges() {
                let e = self.space.edge(edge);
                let (Some(_), Some(v)) = (arch.get(layer, edge), nodes[e.source]) else {
                    continue;
                };
                let out = match e.kind {
                    EdgeKind::Same => v,
                    EdgeKind::Up => v.map(|s| 2 * s),
                    EdgeKind::Down => {
                        if v.iter().any(|s| s % 2 == 1) {
                            return fail(format!(
                                "leaves {v:?} voxels at level {} where layer {layer}, edge \
                                 {edge} halves them (a factorized reduce needs even sides)",
                                e.source
                            ));
                        }
                        v.map(|s| s / 2)
                    }
                };
                match next[e.target] {
                    Some(other) if other != out => {
                        return fail(format!(
                            "gives level {} of layer {layer} inputs of {other:?} and {out:?} \
                             voxels",
                            e.target
                        ));
                    }
                    _ => next[e.target] = Some(out),
                }
            }
            for (d, node) in next.iter().enumerate() {
                if let Some(v) = node.filter(|v| volume(*v) <= 1) {
                    return fail(format!("leaves {v:?} voxels at level {d} of layer {layer}"));
                }
            }
            nodes = next;
        }
        // The head, as the super-net's forward pass runs it.
        let start = (0..depths).rev().find(|&d| nodes[d].is_some()).unwrap_or(0);
        let up = |level: usize, v: [usize; 3]| {
            if ds || level > 0 { v.map(|s| 2 * s) } else { v }
        };
        let mut t = up(start, nodes[start]?);
        for level in (0..start).rev() {
            if let Some(v) = nodes[level].filter(|v| *v != t) {
                return fail(format!(
                    "gives the head {t:?} voxels from level {} but {v:?} at level {level}",
                    level + 1
                ));
            }
            t = up(level, t);
        }
        if t != size {
            return fail(format!("comes back from the head as {t:?} voxels"));
        }
        None
    }

    /// Does this network have the HyperSegNAS parts (encoder M and MAN H)?
    pub fn has_man(&self) -> bool {
        !self.man_hidden.is_empty()
    }

    /// Channel-weight offsets: entry `layer * E + edge` is where that edge's weights start
    /// in the MAN's output, which is ordered layer, then edge (DiNTS order, so grouped by
    /// target level as Figure 7 plots it), then channel. The last entry is the total.
    pub fn channel_weight_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(self.space.num_layers * self.space.num_edges() + 1);
        let mut at = 0;
        for _ in 0..self.space.num_layers {
            for edge in self.space.edges() {
                offsets.push(at);
                at += self.level_channels(edge.target);
            }
        }
        offsets.push(at);
        offsets
    }

    /// Length of the MAN's output: the sum over layers and edges of the target level's
    /// channel count (27648 for the paper's network).
    pub fn man_output_len(&self) -> usize {
        self.space.num_layers
            * self
                .space
                .edges()
                .iter()
                .map(|e| self.level_channels(e.target))
                .sum::<usize>()
    }

    /// Width of the MAN's input, `l_arch ++ l_image`: `L * E + 256`.
    ///
    /// Table 5 of the supplement lists 378 input features, but with L = 12 layers, E = 10
    /// edges and the encoder's 256 features the concatenation has 12 * 10 + 256 = 376. We
    /// derive the width from the configuration, and a checkpoint whose first MAN layer has
    /// another width is refused with both numbers in the message.
    pub fn man_input_len(&self) -> usize {
        self.space.num_layers * self.space.num_edges() + ENCODER_FEATURES
    }

    /// Checks the configuration, with messages a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        self.space.validate().map_err(|e| e.to_string())?;
        if self.in_channels == 0 || self.num_classes == 0 {
            return Err("in_channels and num_classes must be at least 1".into());
        }
        if !(self.channel_mul.is_finite() && self.channel_mul > 0.0) {
            return Err(format!(
                "channel_mul must be positive, got {}",
                self.channel_mul
            ));
        }
        if let Some((i, _)) = self.filters().iter().enumerate().find(|(_, f)| **f == 0) {
            return Err(format!(
                "channel_mul {} makes filter {i} zero channels (32 * 2^{i} * channel_mul < 1)",
                self.channel_mul
            ));
        }
        if self.man_hidden.contains(&0) {
            return Err("MAN hidden widths must be at least 1".into());
        }
        Ok(())
    }

    /// Parameter count of the super-net when it holds every op of the space.
    pub fn supernet_params(&self) -> usize {
        let mut n = self.stem_and_head_params();
        for edge in self.space.edges() {
            let c = self.level_channels(edge.target);
            let c_prev = self.level_channels(edge.source);
            let pre = match edge.kind {
                EdgeKind::Same => 0,
                _ => c_prev * c + 2 * c,
            };
            let ops: usize = self
                .space
                .ops
                .iter()
                .map(|op| super::blocks::op_params(*op, c))
                .sum();
            n += self.space.num_layers * (pre + ops);
        }
        n
    }

    /// Parameter count of the stems and the head (present in every DiNTS network).
    pub fn stem_and_head_params(&self) -> usize {
        let f = self.filters();
        let depths = self.space.num_depths;
        let mut n = 0;
        for d in 0..depths {
            let (c_mid, c_out) = if self.use_downsample {
                (f[d], f[d + 1])
            } else {
                (f[d], f[d])
            };
            n += self.in_channels * c_mid * 27 + 2 * c_mid;
            if self.use_downsample {
                n += c_mid * c_out * 27 + 2 * c_out;
            }
            let up_out = if self.use_downsample {
                f[d]
            } else {
                f[d.saturating_sub(1)]
            };
            n += self.level_channels(d) * up_out * 27 + 2 * up_out;
        }
        n + f[0] * f[0] * 27 + 2 * f[0] + f[0] * self.num_classes + self.num_classes
    }

    /// Parameter count of the image encoder (Table 4).
    pub fn encoder_params(&self) -> usize {
        let widths = super::encoder::encoder_widths(self.in_channels);
        widths.windows(2).map(|w| w[0] * w[1] * 27 + w[1]).sum()
    }

    /// Parameter count of the MAN (Table 5 with this configuration's widths).
    pub fn man_params(&self) -> usize {
        let mut widths = vec![self.man_input_len()];
        widths.extend(&self.man_hidden);
        widths.push(self.man_output_len());
        widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_channels_and_man_width() {
        let c = NetworkConfig::paper(1, 2);
        assert_eq!(c.filters(), vec![32, 64, 128, 256, 512]);
        assert_eq!(
            (0..4).map(|d| c.level_channels(d)).collect::<Vec<_>>(),
            vec![64, 128, 256, 512]
        );
        // 2 x 64 + 3 x 128 + 3 x 256 + 2 x 512 = 2304 per layer.
        assert_eq!(c.man_output_len(), 12 * 2304);
        assert_eq!(c.man_output_len(), 27648);
        assert_eq!(c.man_input_len(), 376);
        let offsets = c.channel_weight_offsets();
        assert_eq!(offsets.len(), 121);
        assert_eq!(offsets[1], 64);
        assert_eq!(offsets[10], 2304);
        assert_eq!(*offsets.last().unwrap(), 27648);
    }

    #[test]
    fn paper_man_is_about_630_million_parameters() {
        // Table 5: 376 -> 2048 -> 4096 -> 8192 -> 16384 -> 27648, with biases.
        let c = NetworkConfig::paper(1, 2);
        let expected = 376 * 2048
            + 2048
            + 2048 * 4096
            + 4096
            + 4096 * 8192
            + 8192
            + 8192 * 16384
            + 16384
            + 16384 * 27648
            + 27648;
        assert_eq!(c.man_params(), expected);
        assert!((620_000_000..640_000_000).contains(&expected), "{expected}");
    }

    #[test]
    fn input_divisor_follows_use_downsample() {
        let mut c = NetworkConfig::paper(1, 2);
        assert_eq!(c.input_divisor(), 16);
        c.use_downsample = false;
        assert_eq!(c.input_divisor(), 8);
        c.space.num_depths = 1;
        assert_eq!(c.input_divisor(), 1);
    }

    #[test]
    fn input_sizes_are_those_monai_runs() {
        // The sizes MONAI 1.6.1's DiNTS ran (output size equal to the input's) among 1..=48
        // for cubes, 4 levels with use_downsample: 32 and 48; without: 16, 24, 32, 40, 48.
        let mut c = NetworkConfig::paper(1, 2);
        let cubes = |c: &NetworkConfig| -> Vec<usize> {
            (1..=48)
                .filter(|&s| c.input_size_problem([s; 3]).is_none())
                .collect()
        };
        assert_eq!(cubes(&c), vec![32, 48]);
        c.use_downsample = false;
        assert_eq!(cubes(&c), vec![16, 24, 32, 40, 48]);
        c.space.num_depths = 2;
        assert_eq!(cubes(&c), (2..=24).map(|k| 2 * k).collect::<Vec<_>>());
        // One side of the divisor is fine when another gives the deepest level two voxels.
        c.use_downsample = true;
        c.space.num_depths = 4;
        assert_eq!(c.input_size_problem([48, 32, 16]), None);
        let single = c.input_size_problem([16, 16, 16]).unwrap();
        assert!(single.contains("single voxel"), "{single}");
        let odd = c.input_size_problem([48, 40, 24]).unwrap();
        assert!(odd.contains("multiple of 16"), "{odd}");
    }

    /// The code with every edge on (a 3x3x3 convolution everywhere).
    fn all_edges(c: &NetworkConfig) -> ArchCode {
        let mut code = ArchCode::empty(c.space.num_layers, c.space.num_depths);
        for layer in 0..c.space.num_layers {
            for edge in 0..c.space.num_edges() {
                code.set(layer, edge, Some(crate::arch::Op::Conv3x3x3));
            }
        }
        code
    }

    #[test]
    fn following_the_shapes_of_every_edge_gives_the_closed_form_rule() {
        let mut c = NetworkConfig::paper(1, 2);
        c.space.num_layers = 3;
        for depths in 1..=5 {
            for ds in [true, false] {
                c.space.num_depths = depths;
                c.use_downsample = ds;
                let code = all_edges(&c);
                for a in 1..=40 {
                    for b in [a, 16, 24, 40] {
                        let size = [a, b, 32];
                        assert_eq!(
                            c.input_size_problem_for(size, &code).is_none(),
                            c.input_size_problem(size).is_none(),
                            "{depths} levels, use_downsample {ds}, {size:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_architecture_on_the_upper_levels_takes_finer_sizes() {
        // 3 levels; every edge among levels 0 and 1 on, level 2 unused (MONAI runs such a
        // network on 12^3, which the all-level rule refuses).
        let mut c = NetworkConfig::paper(1, 2);
        c.space.num_layers = 3;
        c.space.num_depths = 3;
        let mut code = ArchCode::empty(3, 3);
        for layer in 0..3 {
            for edge in 0..c.space.num_edges() {
                let e = c.space.edge(edge);
                if e.source <= 1 && e.target <= 1 {
                    code.set(layer, edge, Some(crate::arch::Op::Conv3x3x3));
                }
            }
        }
        assert!(c.input_size_problem([12, 12, 12]).is_some());
        assert_eq!(c.input_size_problem_for([12, 12, 12], &code), None);
        assert_eq!(c.input_size_problem_for([12, 20, 4], &code), None);
        // 14 leaves 7 voxels at level 0 and 4 at level 1, which doubles to 8.
        let odd = c.input_size_problem_for([14, 12, 12], &code).unwrap();
        assert!(
            odd.contains("inputs of [7, 6, 6] and [8, 6, 6] voxels")
                && odd.contains("multiples of 4"),
            "{odd}"
        );
        // Without the up edges, the reduce from level 0 meets the odd side first.
        for layer in 0..3 {
            code.set(layer, 1, None);
            code.set(layer, 4, None);
        }
        let odd = c.input_size_problem_for([14, 12, 12], &code).unwrap();
        assert!(
            odd.contains("[7, 6, 6] voxels at level 0 where layer 0, edge 2 halves them"),
            "{odd}"
        );
        // 2 leaves one voxel at level 0 (1/2) in every dimension.
        let single = c.input_size_problem_for([2, 2, 2], &code).unwrap();
        assert!(single.contains("[1, 1, 1] voxels at level 0"), "{single}");
        // Level 0 alone takes any even side; 7 becomes 4 after the stem and 8 in the head.
        let mut shallow = ArchCode::empty(3, 3);
        for layer in 0..3 {
            shallow.set(layer, 0, Some(crate::arch::Op::Conv3x3x3));
        }
        assert_eq!(c.input_size_problem_for([6, 10, 14], &shallow), None);
        let odd = c.input_size_problem_for([7, 10, 14], &shallow).unwrap();
        assert!(
            odd.contains("comes back from the head as [8, 10, 14]"),
            "{odd}"
        );
    }

    #[test]
    fn channel_mul_truncates_like_dints() {
        let mut c = NetworkConfig::paper(1, 2);
        c.channel_mul = 0.2;
        assert_eq!(c.filters(), vec![6, 12, 25, 51, 102]);
    }

    #[test]
    fn dints_paper_network_is_about_152_million_parameters() {
        // DINTS-REFERENCE: channel_mul 1, 1 input channel, 3 classes, the searched code:
        // about 152.4 M parameters. Count the instance's parameters from the super-net rule.
        let c = NetworkConfig::paper(1, 3);
        let space = crate::arch::SearchSpace::dints(12, 4);
        let code = crate::arch::preset("dints-paper", &space).unwrap();
        let n = super::super::supernet::instance_params(&c, &code);
        assert!((152_300_000..152_500_000).contains(&n), "{n}");
    }
}
