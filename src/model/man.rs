//! The meta-assistant network H of HyperSegNAS (supplement, Table 5): fully connected
//! layers with ReLU between them and a sigmoid at the end, from `l_arch ++ l_image` to one
//! channel weight per output channel of every edge of every layer.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid};

use super::config::NetworkConfig;
use super::weights::{Init, Layout, ParamBuilder};

/// A fully connected layer; weight `[in, out]` in memory, PyTorch's `[out, in]` on disk.
#[derive(Module, Debug)]
pub struct Linear {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
}

impl Linear {
    fn new(b: &mut ParamBuilder, key: &str, c_in: usize, c_out: usize) -> Self {
        Self {
            weight: b.param(
                &format!("{key}.weight"),
                [c_in, c_out],
                Init::FanIn(c_in),
                Layout::LinearWeight,
            ),
            bias: b.param(
                &format!("{key}.bias"),
                [c_out],
                Init::FanIn(c_in),
                Layout::Plain,
            ),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [_, c_out] = self.weight.dims();
        x.matmul(self.weight.val()) + self.bias.val().reshape([1, c_out])
    }
}

/// The MAN.
#[derive(Module, Debug)]
pub struct Man {
    layers: Vec<Linear>,
}

impl Man {
    /// Keys `man.fc{i}.weight` / `.bias`: input `L * E + 256`, then `cfg.man_hidden`, then
    /// [`NetworkConfig::man_output_len`].
    pub fn new(b: &mut ParamBuilder, cfg: &NetworkConfig) -> Self {
        let mut widths = vec![cfg.man_input_len()];
        widths.extend(&cfg.man_hidden);
        widths.push(cfg.man_output_len());
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(b, &format!("man.fc{i}"), w[0], w[1]))
            .collect();
        Self { layers }
    }

    /// # Shapes
    /// - input: `[batch, L * E + 256]` (`l_arch ++ l_image`)
    /// - output: `[batch, man_output_len]`, values in (0, 1)
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut y = x;
        for (i, layer) in self.layers.iter().enumerate() {
            y = layer.forward(y);
            if i < last {
                y = relu(y);
            }
        }
        sigmoid(y)
    }
}
