//! Sliding-window inference over a pre-processed volume, with MONAI's window placement
//! (`dense_patch_slices`), padding of volumes smaller than the ROI, batched windows, and
//! Gaussian or constant blending.

use std::ops::ControlFlow;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::arch::ArchCode;
use crate::model::{ModelError, Network, WeightMode};

/// How overlapping window outputs are blended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Blend {
    /// Every voxel of a window counts the same.
    Constant,
    /// A Gaussian centred on the window, sigma = 0.125 x ROI (MONAI's default), so window
    /// borders count less.
    Gaussian,
}

/// Sliding-window settings.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    /// Window size (x, y, z), one the network accepts for the architecture
    /// ([`crate::model::NetworkConfig::input_size_problem_for`]).
    pub roi: [usize; 3],
    /// Fraction of a window that overlaps its neighbour, in [0, 1).
    pub overlap: f32,
    /// Blending.
    pub blend: Blend,
    /// Windows per forward pass.
    pub batch: usize,
    /// Channel-weight mode.
    pub mode: WeightMode,
}

/// Where the softmax is taken relative to blending overlapping windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxOrder {
    /// Softmax of each window, then blend probabilities.
    PerWindow,
    /// Blend logits, then softmax (MONAI's `SlidingWindowInferer` and `Activationsd`).
    AfterBlending,
}

/// The largest sliding-window side accepted.
pub const MAX_ROI: usize = 1024;

/// Progress of a long computation.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Units done.
    pub done: usize,
    /// Units in all.
    pub total: usize,
}

/// Sliding-window errors.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The caller cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The network failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Start positions along one axis, as MONAI's `dense_patch_slices` computes them.
pub fn window_starts(size: usize, roi: usize, overlap: f32) -> Vec<usize> {
    if size <= roi {
        return vec![0];
    }
    let interval = ((roi as f32 * (1.0 - overlap)) as usize).max(1);
    let mut starts = Vec::new();
    let mut i = 0;
    loop {
        let start = i * interval;
        starts.push(start.min(size - roi));
        if start + roi >= size {
            break;
        }
        i += 1;
    }
    starts
}

/// The importance map of one window, x-major then y then z (z fastest).
pub fn importance_map(roi: [usize; 3], blend: Blend) -> Vec<f32> {
    let len = roi.iter().product();
    match blend {
        Blend::Constant => vec![1.0; len],
        Blend::Gaussian => {
            let axis = |n: usize| -> Vec<f32> {
                let centre = (n / 2) as f32;
                let sigma = 0.125 * n as f32;
                (0..n)
                    .map(|i| (-((i as f32 - centre).powi(2)) / (2.0 * sigma * sigma)).exp())
                    .collect()
            };
            let (ax, ay, az) = (axis(roi[0]), axis(roi[1]), axis(roi[2]));
            let mut map = Vec::with_capacity(len);
            for wx in &ax {
                for wy in &ay {
                    for wz in &az {
                        map.push(wx * wy * wz);
                    }
                }
            }
            // Keep every weight positive so no voxel ends up with a zero denominator.
            let floor = map
                .iter()
                .copied()
                .filter(|v| *v > 0.0)
                .fold(f32::MAX, f32::min);
            map.iter_mut().for_each(|v| *v = v.max(floor));
            map
        }
    }
}

/// Runs `arch` over `image` (`channels` x `dims`, each channel x-major with z fastest) and
/// returns class probabilities (softmax) in the same layout. `progress` is called after each
/// batch of windows; returning `Break` cancels.
#[allow(clippy::too_many_arguments)]
pub fn sliding_window(
    network: &Network,
    device: &Device,
    image: &[f32],
    channels: usize,
    dims: [usize; 3],
    arch: &ArchCode,
    options: &WindowOptions,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Vec<f32>, WindowError> {
    sliding_window_with(
        network,
        device,
        image,
        channels,
        dims,
        arch,
        options,
        SoftmaxOrder::PerWindow,
        progress,
    )
}

/// [`sliding_window`] with a choice of where the softmax happens.
#[allow(clippy::too_many_arguments)]
pub fn sliding_window_with(
    network: &Network,
    device: &Device,
    image: &[f32],
    channels: usize,
    dims: [usize; 3],
    arch: &ArchCode,
    options: &WindowOptions,
    order: SoftmaxOrder,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Vec<f32>, WindowError> {
    let roi = options.roi;
    if roi.iter().any(|r| *r > MAX_ROI) {
        return Err(WindowError::Options(format!(
            "ROI {roi:?} is larger than {MAX_ROI} voxels per side"
        )));
    }
    if let Some(problem) = network.config.input_size_problem_for(roi, arch) {
        return Err(WindowError::Options(format!("ROI {roi:?} {problem}")));
    }
    let uses_man = matches!(options.mode, WeightMode::Man | WeightMode::Blend(_));
    let min_roi = crate::checkpoint::MIN_MAN_ROI;
    if uses_man && roi.iter().any(|r| *r < min_roi) {
        return Err(WindowError::Options(format!(
            "ROI {roi:?} is too small for the image encoder in MAN mode: each side needs at \
             least {min_roi} voxels"
        )));
    }
    if !(0.0..1.0).contains(&options.overlap) {
        return Err(WindowError::Options(format!(
            "overlap must be in [0, 1), got {}",
            options.overlap
        )));
    }
    let classes = network.config.num_classes;

    // Pad each axis that is smaller than the ROI, half before and half after (MONAI).
    let padded: [usize; 3] = std::array::from_fn(|a| dims[a].max(roi[a]));
    let before: [usize; 3] = std::array::from_fn(|a| (padded[a] - dims[a]) / 2);
    let plen = padded.iter().product::<usize>();
    let mut input = vec![0.0f32; channels * plen];
    for c in 0..channels {
        for x in 0..dims[0] {
            for y in 0..dims[1] {
                let src = ((c * dims[0] + x) * dims[1] + y) * dims[2];
                let dst = ((c * padded[0] + x + before[0]) * padded[1] + y + before[1]) * padded[2]
                    + before[2];
                input[dst..dst + dims[2]].copy_from_slice(&image[src..src + dims[2]]);
            }
        }
    }

    let starts: Vec<[usize; 3]> = {
        let sx = window_starts(padded[0], roi[0], options.overlap);
        let sy = window_starts(padded[1], roi[1], options.overlap);
        let sz = window_starts(padded[2], roi[2], options.overlap);
        let mut all = Vec::new();
        for &x in &sx {
            for &y in &sy {
                for &z in &sz {
                    all.push([x, y, z]);
                }
            }
        }
        all
    };
    let weight_map = importance_map(roi, options.blend);
    let wlen = roi.iter().product::<usize>();
    let mut sum = vec![0.0f32; classes * plen];
    let mut count = vec![0.0f32; plen];

    let batch_size = options.batch.max(1);
    for (done, chunk) in starts.chunks(batch_size).enumerate() {
        let mut patch = Vec::with_capacity(chunk.len() * channels * wlen);
        for start in chunk {
            for c in 0..channels {
                for x in 0..roi[0] {
                    for y in 0..roi[1] {
                        let src = ((c * padded[0] + start[0] + x) * padded[1] + start[1] + y)
                            * padded[2]
                            + start[2];
                        patch.extend_from_slice(&input[src..src + roi[2]]);
                    }
                }
            }
        }
        let shape = [chunk.len(), channels, roi[0], roi[1], roi[2]];
        let x = Tensor::<5>::from_data(TensorData::new(patch, shape), device);
        let logits = network.forward(x, arch, options.mode)?;
        let scores = match order {
            SoftmaxOrder::PerWindow => softmax(logits, 1),
            SoftmaxOrder::AfterBlending => logits,
        };
        let probs: Vec<f32> = scores
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| WindowError::Options(format!("reading the output failed: {e:?}")))?;

        for (w, start) in chunk.iter().enumerate() {
            for k in 0..classes {
                let out = &probs[(w * classes + k) * wlen..(w * classes + k + 1) * wlen];
                let mut i = 0;
                for x in 0..roi[0] {
                    for y in 0..roi[1] {
                        let dst = ((k * padded[0] + start[0] + x) * padded[1] + start[1] + y)
                            * padded[2]
                            + start[2];
                        for z in 0..roi[2] {
                            sum[dst + z] += out[i] * weight_map[i];
                            i += 1;
                        }
                    }
                }
            }
            let mut i = 0;
            for x in 0..roi[0] {
                for y in 0..roi[1] {
                    let dst = ((start[0] + x) * padded[1] + start[1] + y) * padded[2] + start[2];
                    for z in 0..roi[2] {
                        count[dst + z] += weight_map[i];
                        i += 1;
                    }
                }
            }
        }
        let done_windows = (done * batch_size + chunk.len()).min(starts.len());
        if progress(Progress {
            done: done_windows,
            total: starts.len(),
        })
        .is_break()
        {
            return Err(WindowError::Cancelled);
        }
    }

    // Normalise and crop the padding away.
    let len = dims.iter().product::<usize>();
    let mut result = vec![0.0f32; classes * len];
    for k in 0..classes {
        for x in 0..dims[0] {
            for y in 0..dims[1] {
                let src = ((x + before[0]) * padded[1] + y + before[1]) * padded[2] + before[2];
                let dst = ((k * dims[0] + x) * dims[1] + y) * dims[2];
                for z in 0..dims[2] {
                    result[dst + z] = sum[k * plen + src + z] / count[src + z];
                }
            }
        }
    }
    if order == SoftmaxOrder::AfterBlending {
        softmax_channels(&mut result, classes, len);
    }
    Ok(result)
}

/// Softmax over `classes` channel-major planes of `len` voxels, in place.
fn softmax_channels(values: &mut [f32], classes: usize, len: usize) {
    for i in 0..len {
        let max = (0..classes)
            .map(|k| values[k * len + i])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for k in 0..classes {
            let e = (values[k * len + i] - max).exp();
            values[k * len + i] = e;
            total += e;
        }
        for k in 0..classes {
            values[k * len + i] /= total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_follow_monai() {
        // MONAI: interval = int(96 * 0.5) = 48; windows until one reaches the end; the last
        // start is pulled back to size - roi.
        assert_eq!(window_starts(200, 96, 0.5), vec![0, 48, 96, 104]);
        assert_eq!(window_starts(96, 96, 0.5), vec![0]);
        assert_eq!(window_starts(50, 96, 0.5), vec![0]);
        // overlap 0.625 gives MONAI's step 36 for a 96 ROI.
        assert_eq!(window_starts(150, 96, 0.625), vec![0, 36, 54]);
    }

    #[test]
    fn gaussian_map_peaks_at_the_centre() {
        let map = importance_map([8, 8, 8], Blend::Gaussian);
        let centre = (4 * 8 + 4) * 8 + 4;
        let max = map.iter().copied().fold(0.0, f32::max);
        assert_eq!(map[centre], max);
        assert!(map.iter().all(|v| *v > 0.0));
        assert!(map[0] < 0.01);
    }
}
