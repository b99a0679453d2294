//! Whole-volume inference: pre-processing from the checkpoint's configuration (RAS,
//! target spacing, intensity), sliding-window prediction, and mapping the result back onto
//! the input's own grid (resampling, then undoing the reorientation).

mod window;

pub use window::{
    Blend, MAX_ROI, Progress, SoftmaxOrder, WindowError, WindowOptions, importance_map,
    sliding_window, sliding_window_with, window_starts,
};

use std::ops::ControlFlow;

use burn::tensor::Device;

use crate::arch::ArchCode;
use crate::checkpoint::{GridRule, Intensity, Preprocess};
use crate::model::Network;
use crate::volume::{Interp, Orientation, Volume, resample, spacing_map};

/// A volume on the network's processing grid.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Normalised intensities, x-major with z fastest (the network's `[x, y, z]` order).
    pub data: Vec<f32>,
    /// Size of the processing grid.
    pub dims: [usize; 3],
    /// Voxel size of the processing grid (mm).
    pub spacing: [f64; 3],
    /// How the stored volume maps to RAS.
    pub orientation: Orientation,
    /// Size of the RAS grid before resampling.
    pub ras_dims: [usize; 3],
    /// For every processing-grid axis: RAS voxel position = scale * index + offset.
    pub scale: [f64; 3],
    /// See `scale`.
    pub offset: [f64; 3],
    /// The inverse: processing-grid position = back_scale * RAS index + back_offset.
    pub back_scale: [f64; 3],
    /// See `back_scale`.
    pub back_offset: [f64; 3],
}

/// Reorders x-fastest data (NIfTI order) into z-fastest (network order), or back.
pub fn x_fastest_to_z_fastest(data: &[f32], dims: [usize; 3]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let mut out = vec![0.0; data.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                out[(x * ny + y) * nz + z] = data[(z * ny + y) * nx + x];
            }
        }
    }
    out
}

/// The inverse of [`x_fastest_to_z_fastest`].
pub fn z_fastest_to_x_fastest(data: &[f32], dims: [usize; 3]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let mut out = vec![0.0; data.len()];
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                out[(z * ny + y) * nx + x] = data[(x * ny + y) * nz + z];
            }
        }
    }
    out
}

/// Applies the intensity normalisation in place. NaN voxels become 0 afterwards, so a
/// single missing value cannot spread through every convolution.
pub fn normalise(data: &mut [f32], intensity: &Intensity) {
    match intensity {
        Intensity::CtWindow { a_min, a_max, clip } => {
            let range = (a_max - a_min).max(f32::EPSILON);
            for v in data.iter_mut() {
                let mut t = (*v - a_min) / range;
                if *clip {
                    t = t.clamp(0.0, 1.0);
                }
                *v = t;
            }
        }
        Intensity::ZScore { nonzero } => {
            let used = |v: f32| v.is_finite() && (!nonzero || v != 0.0);
            let (mut n, mut sum, mut sq) = (0usize, 0f64, 0f64);
            for &v in data.iter().filter(|v| used(**v)) {
                n += 1;
                sum += v as f64;
                sq += (v as f64) * (v as f64);
            }
            let mean = if n > 0 { sum / n as f64 } else { 0.0 };
            let var = if n > 0 {
                sq / n as f64 - mean * mean
            } else {
                1.0
            };
            let std = var.max(0.0).sqrt().max(1e-8);
            for v in data.iter_mut() {
                if used(*v) {
                    *v = ((*v as f64 - mean) / std) as f32;
                } else if *nonzero && *v == 0.0 {
                    *v = 0.0;
                }
            }
        }
        Intensity::None => {}
    }
    for v in data.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
}

/// The largest processing grid [`prepare`] builds (2^29 voxels, 2 GiB per f32 channel).
pub const MAX_GRID_VOXELS: usize = 1 << 29;

/// Reorients to RAS, resamples to the target spacing (trilinear) and normalises. Refuses a
/// processing grid larger than [`MAX_GRID_VOXELS`] (an absurd voxel size in the header or
/// target spacing in the checkpoint) instead of trying to allocate it.
pub fn prepare(volume: &Volume, pre: &Preprocess) -> Result<Prepared, WindowError> {
    let (ras, orientation) = volume.to_ras();
    let target = pre.spacing.unwrap_or(ras.spacing);
    if target.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(WindowError::Options(format!(
            "target spacing {target:?} mm must be positive"
        )));
    }
    let extent: Vec<f64> = (0..3)
        .map(|a| ras.dims[a] as f64 * ras.spacing[a] / target[a])
        .collect();
    let voxels: f64 = extent.iter().map(|e| e.round().max(1.0)).product();
    if !voxels.is_finite() || voxels > MAX_GRID_VOXELS as f64 {
        return Err(WindowError::Options(format!(
            "{}: resampling {:?} voxels of {:.4?} mm to {target:?} mm gives about {voxels:.3e} \
             voxels, more than the limit of {MAX_GRID_VOXELS}",
            volume.path.display(),
            ras.dims,
            ras.spacing
        )));
    }
    let mut map = spacing_map(ras.dims, ras.spacing, target);
    if pre.grid == GridRule::Corners {
        // MONAI's Spacingd: from the first to the last voxel centre.
        for a in 0..3 {
            let span = (ras.dims[a].max(1) - 1) as f64 * map.in_spacing[a] / map.out_spacing[a];
            map.out_dims[a] = span.round() as usize + 1;
        }
    }
    let mut data = resample(
        &ras.data,
        ras.dims,
        map.out_dims,
        map.scale,
        map.offset,
        Interp::Linear,
    );
    normalise(&mut data, &pre.intensity);
    Ok(Prepared {
        data: x_fastest_to_z_fastest(&data, map.out_dims),
        dims: map.out_dims,
        spacing: target,
        orientation,
        ras_dims: ras.dims,
        scale: map.scale,
        offset: map.offset,
        back_scale: map.inverse_scale,
        back_offset: map.inverse_offset,
    })
}

/// The result of [`segment`], on the input volume's own grid (stored voxel order).
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Label per voxel, x fastest.
    pub labels: Vec<u16>,
    /// Class probabilities, channel-major, each channel x fastest (when requested).
    pub probabilities: Option<Vec<f32>>,
    /// Voxel counts per class.
    pub counts: Vec<usize>,
}

/// Errors of whole-volume inference.
pub type InferenceError = WindowError;

/// Segments `volume` with `network` and architecture `arch`.
///
/// Probabilities are resampled back to the RAS grid (trilinear, per class) before the
/// argmax, as MONAI's bundles do, then the RAS reorientation is undone exactly.
#[allow(clippy::too_many_arguments)]
pub fn segment(
    network: &Network,
    device: &Device,
    volume: &Volume,
    pre: &Preprocess,
    arch: &ArchCode,
    options: &WindowOptions,
    keep_probabilities: bool,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Segmentation, InferenceError> {
    segment_with(
        network,
        device,
        volume,
        pre,
        arch,
        options,
        SoftmaxOrder::PerWindow,
        keep_probabilities,
        progress,
    )
}

/// [`segment`] with a choice of where the softmax happens ([`SoftmaxOrder::AfterBlending`]
/// is what MONAI's `SlidingWindowInferer` followed by `Activationsd(softmax=True)` does).
#[allow(clippy::too_many_arguments)]
pub fn segment_with(
    network: &Network,
    device: &Device,
    volume: &Volume,
    pre: &Preprocess,
    arch: &ArchCode,
    options: &WindowOptions,
    order: SoftmaxOrder,
    keep_probabilities: bool,
    progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<Segmentation, InferenceError> {
    if network.config.in_channels != 1 {
        return Err(WindowError::Options(format!(
            "the network expects {} input channels; segmenting a single volume needs 1",
            network.config.in_channels
        )));
    }
    let prepared = prepare(volume, pre)?;
    tracing::debug!(
        "processing grid {:?} at {:?} mm (RAS grid {:?})",
        prepared.dims,
        prepared.spacing,
        prepared.ras_dims
    );
    let probs = sliding_window_with(
        network,
        device,
        &prepared.data,
        1,
        prepared.dims,
        arch,
        options,
        order,
        progress,
    )?;
    Ok(restore(
        &probs,
        &prepared,
        volume.dims,
        network.config.num_classes,
        keep_probabilities,
    ))
}

/// Maps class probabilities from the processing grid (z fastest) back to the stored grid,
/// and takes the argmax.
pub fn restore(
    probs: &[f32],
    prepared: &Prepared,
    stored_dims: [usize; 3],
    classes: usize,
    keep_probabilities: bool,
) -> Segmentation {
    let len = prepared.dims.iter().product::<usize>();
    let ras_len = prepared.ras_dims.iter().product::<usize>();
    let mut ras_probs = Vec::with_capacity(classes * ras_len);
    for k in 0..classes {
        let channel = z_fastest_to_x_fastest(&probs[k * len..(k + 1) * len], prepared.dims);
        ras_probs.extend(resample(
            &channel,
            prepared.dims,
            prepared.ras_dims,
            prepared.back_scale,
            prepared.back_offset,
            Interp::Linear,
        ));
    }
    let mut labels = vec![0u16; ras_len];
    for (i, label) in labels.iter_mut().enumerate() {
        let mut best = 0;
        for k in 1..classes {
            if ras_probs[k * ras_len + i] > ras_probs[best * ras_len + i] {
                best = k;
            }
        }
        *label = best as u16;
    }
    let labels = prepared.orientation.from_ras(&labels, stored_dims);
    let mut counts = vec![0usize; classes];
    for &l in &labels {
        counts[l as usize] += 1;
    }
    let probabilities = keep_probabilities.then(|| {
        (0..classes)
            .flat_map(|k| {
                prepared
                    .orientation
                    .from_ras(&ras_probs[k * ras_len..(k + 1) * ras_len], stored_dims)
            })
            .collect()
    });
    Segmentation {
        labels,
        probabilities,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_order_round_trip() {
        let dims = [3, 4, 5];
        let data: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let z = x_fastest_to_z_fastest(&data, dims);
        // Voxel (x=1, y=2, z=3): x-fastest index 1 + 3*(2 + 4*3) = 43.
        assert_eq!(z[(4 + 2) * 5 + 3], 43.0);
        assert_eq!(z_fastest_to_x_fastest(&z, dims), data);
    }

    #[test]
    fn ct_window_clips_to_unit_range() {
        let mut v = vec![-1000.0, -87.0, 56.0, 199.0, 3000.0, f32::NAN];
        normalise(
            &mut v,
            &Intensity::CtWindow {
                a_min: -87.0,
                a_max: 199.0,
                clip: true,
            },
        );
        assert_eq!(v, vec![0.0, 0.0, 0.5, 1.0, 1.0, 0.0]);
    }
}
