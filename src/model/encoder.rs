//! The image encoder M of HyperSegNAS (supplement, Table 4): five stride-2 3x3x3
//! convolutions (16, 32, 64, 128, 256 channels), each followed by instance norm and ReLU,
//! then a valid 3x3x3 convolution to 256 channels and ReLU. On a 96^3 patch the last map is
//! 1x1x1; on other patch sizes it is averaged to one 256-vector.
//!
//! Patches need at least 64 voxels per side: below that, the fifth stride-2 convolution
//! leaves a single voxel, its instance norm outputs zero, and the encoding no longer depends
//! on the patch. Checkpoint configurations with a MAN refuse smaller ROIs.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool3d;

use super::blocks::{Conv, Norm};
use super::config::ENCODER_FEATURES;
use super::weights::ParamBuilder;

/// Channel widths from the input through CONV0..CONV5.
pub fn encoder_widths(in_channels: usize) -> Vec<usize> {
    vec![in_channels, 16, 32, 64, 128, 256, ENCODER_FEATURES]
}

/// The image encoder M.
#[derive(Module, Debug)]
pub struct ImageEncoder {
    convs: Vec<Conv>,
    norm: Norm,
}

impl ImageEncoder {
    /// Keys `encoder.conv{i}.weight` / `.bias`, i = 0..5. The convolutions carry a bias
    /// (PyTorch's default, which Table 4 does not override); the instance norms have no
    /// affine parameters (`InstanceNorm3d`'s default).
    pub fn new(b: &mut ParamBuilder, in_channels: usize) -> Self {
        let w = encoder_widths(in_channels);
        let mut convs = Vec::new();
        for i in 0..5 {
            let key = format!("encoder.conv{i}");
            convs.push(Conv::new(b, &key, w[i], w[i + 1], [3; 3], 2, [1; 3], true));
        }
        convs.push(Conv::new(
            b,
            "encoder.conv5",
            w[5],
            w[6],
            [3; 3],
            1,
            [0; 3],
            true,
        ));
        Self {
            convs,
            norm: Norm::plain(),
        }
    }

    /// # Shapes
    /// - input: `[batch, in_channels, x, y, z]`
    /// - output: `[batch, 256]` (`l_image`)
    pub fn forward(&self, x: Tensor<5>) -> Tensor<2> {
        let mut y = x;
        for conv in &self.convs[..5] {
            y = relu(self.norm.forward(conv.forward(y)));
        }
        // CONV5 has no padding; a patch smaller than 65 voxels leaves a map under 3 voxels
        // wide, which is zero-padded to 3 so the layer still applies (documented extension:
        // Table 4 assumes 96^3 patches).
        let [batch, channels, sx, sy, sz] = y.dims();
        if sx < 3 || sy < 3 || sz < 3 {
            let size = [sx.max(3), sy.max(3), sz.max(3)];
            let mut padded =
                Tensor::zeros([batch, channels, size[0], size[1], size[2]], &y.device());
            let (ox, oy, oz) = ((size[0] - sx) / 2, (size[1] - sy) / 2, (size[2] - sz) / 2);
            padded = padded.slice_assign(
                [0..batch, 0..channels, ox..ox + sx, oy..oy + sy, oz..oz + sz],
                y,
            );
            y = padded;
        }
        let y = relu(self.convs[5].forward(y));
        let pooled = adaptive_avg_pool3d(y, [1, 1, 1]);
        pooled.reshape([batch, ENCODER_FEATURES])
    }
}
