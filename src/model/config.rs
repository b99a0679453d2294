//! Network configuration: the search space, channel widths, the MAN's hidden widths, and
//! the two named presets (`paper` and `demo`).

use serde::{Deserialize, Serialize};

use crate::arch::{EdgeKind, SearchSpace};

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

    /// Input sides must be divisible by this, `2^(D + 1)` with `use_downsample` and `2^D`
    /// without (MONAI's rule): every level's factorized reduce needs even sizes.
    pub fn input_divisor(&self) -> usize {
        1 << (self.space.num_depths + self.use_downsample as usize)
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
        assert_eq!(c.input_divisor(), 32);
        c.use_downsample = false;
        assert_eq!(c.input_divisor(), 16);
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
