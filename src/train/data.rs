//! Training data: image/label pairs on the processing grid, and random patches with
//! foreground/background centring and augmentation.

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Preprocess;
use crate::inference::{Prepared, prepare, x_fastest_to_z_fastest};
use crate::volume::{self, Volume};

/// One image with its label map.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pair {
    /// Image volume.
    pub image: PathBuf,
    /// Label volume on the same grid.
    pub label: PathBuf,
}

/// A class and the label values that make it up in the label files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassSpec {
    /// Class name.
    pub name: String,
    /// Label values (in the label files) that belong to this class.
    pub values: Vec<u32>,
}

/// Errors loading training data; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A volume could not be read.
    #[error(transparent)]
    Volume(#[from] volume::VolumeError),
    /// Pre-processing refused the volume.
    #[error("{0}")]
    Prepare(String),
    /// Image and label are placed differently in the world.
    #[error(
        "{label}: its voxel-to-world affine differs from that of {image} by up to {difference:.4} (mm); a label must share its image's grid"
    )]
    Affine {
        /// The image.
        image: String,
        /// The label.
        label: String,
        /// Largest difference of an affine entry.
        difference: f64,
    },
    /// Image and label disagree.
    #[error("{label}: label grid {label_dims:?} does not match image {image} grid {image_dims:?}")]
    Grid {
        /// The image.
        image: String,
        /// The label.
        label: String,
        /// Image dims.
        image_dims: [usize; 3],
        /// Label dims.
        label_dims: [usize; 3],
    },
}

/// A pair on the processing grid: normalised image and class indices, both x-major with z
/// fastest.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Image values.
    pub image: Vec<f32>,
    /// Class index per voxel.
    pub label: Vec<u8>,
    /// Grid size.
    pub dims: [usize; 3],
    /// Indices of foreground voxels (class > 0).
    pub foreground: Vec<u32>,
    /// Indices of background voxels.
    pub background: Vec<u32>,
    /// Where it came from.
    pub name: String,
}

/// Maps raw label values to class indices (0 = background).
pub fn class_indices(raw: &[f32], classes: &[ClassSpec]) -> Vec<u8> {
    raw.iter()
        .map(|&v| {
            if !(v.is_finite() && v >= 0.0) {
                return 0;
            }
            let v = v.round() as u32;
            classes
                .iter()
                .position(|c| c.values.contains(&v))
                .map_or(0, |i| (i + 1) as u8)
        })
        .collect()
}

/// Puts a label volume through the same reorientation and resampling (nearest) as its
/// image went through in [`prepare`].
fn prepare_label(label: &Volume, prepared: &Prepared, classes: &[ClassSpec]) -> Vec<u8> {
    let (ras, _) = label.to_ras();
    let indices: Vec<f32> = class_indices(&ras.data, classes)
        .into_iter()
        .map(f32::from)
        .collect();
    let resampled = volume::resample(
        &indices,
        ras.dims,
        prepared.dims,
        prepared.scale,
        prepared.offset,
        volume::Interp::Nearest,
    );
    x_fastest_to_z_fastest(&resampled, prepared.dims)
        .into_iter()
        .map(|v| v as u8)
        .collect()
}

/// Reads a pair and checks that the label shares the image's grid: same size and the same
/// voxel-to-world affine (within 1e-3).
pub fn read_pair(pair: &Pair) -> Result<(Volume, Volume), DataError> {
    let image = volume::read_volume(&pair.image)?;
    let label = volume::read_volume(&pair.label)?;
    if image.dims != label.dims {
        return Err(DataError::Grid {
            image: pair.image.display().to_string(),
            label: pair.label.display().to_string(),
            image_dims: image.dims,
            label_dims: label.dims,
        });
    }
    let difference = image
        .world_from_voxel
        .iter()
        .flatten()
        .zip(label.world_from_voxel.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    if difference > 1e-3 {
        return Err(DataError::Affine {
            image: pair.image.display().to_string(),
            label: pair.label.display().to_string(),
            difference,
        });
    }
    Ok((image, label))
}

/// Loads a pair onto the processing grid.
pub fn load_sample(
    pair: &Pair,
    pre: &Preprocess,
    classes: &[ClassSpec],
) -> Result<Sample, DataError> {
    let (image, label) = read_pair(pair)?;
    let prepared = prepare(&image, pre).map_err(|e| DataError::Prepare(e.to_string()))?;
    let label = prepare_label(&label, &prepared, classes);
    let (mut foreground, mut background) = (Vec::new(), Vec::new());
    for (i, &l) in label.iter().enumerate() {
        if l > 0 {
            foreground.push(i as u32);
        } else {
            background.push(i as u32);
        }
    }
    Ok(Sample {
        image: prepared.data,
        label,
        dims: prepared.dims,
        foreground,
        background,
        name: pair.image.display().to_string(),
    })
}

/// How patches are drawn.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatchOptions {
    /// Patch size (x, y, z).
    pub size: [usize; 3],
    /// Probability that a patch is centred on a foreground voxel (1:1 by default).
    pub foreground_ratio: f64,
    /// Axes that may be flipped (each with probability 0.5). Axis 0 is left-right in RAS;
    /// flipping axis 1 (anterior-posterior) too also covers data whose in-plane axes are
    /// stored flipped against their header, as some MSD images are.
    pub flip_axes: Vec<usize>,
    /// Flip all of `flip_axes` together (one coin per patch) instead of each on its own. With
    /// axes 0 and 1 this is a rotation by 180 degrees about the body axis (a patient lying
    /// prone instead of supine, or left-right and anterior-posterior both stored flipped),
    /// which keeps the body's handedness: independent flips also make mirror images, in
    /// which the liver sits where the spleen belongs.
    pub flip_jointly: bool,
    /// Intensity shift: a uniform offset in [-shift, shift] added to the normalised image.
    pub intensity_shift: f32,
    /// Probability that a patch shows only a random box of the volume (each side between
    /// half the patch and the whole patch, always holding the patch centre), with zeros and
    /// background outside it. Sliding-window inference zero-pads scans that are smaller
    /// than the ROI; this shows the network such padded, cropped fields of view in
    /// training too.
    pub crop_probability: f64,
}

impl Default for PatchOptions {
    fn default() -> Self {
        Self {
            size: [96; 3],
            foreground_ratio: 0.5,
            flip_axes: vec![0, 1],
            flip_jointly: false,
            intensity_shift: 0.1,
            crop_probability: 0.0,
        }
    }
}

/// One patch: image values and class indices, x-major with z fastest.
pub struct Patch {
    /// Image values.
    pub image: Vec<f32>,
    /// Class indices.
    pub label: Vec<u8>,
}

/// Draws a patch from `sample`: centre on a foreground voxel with probability
/// `foreground_ratio` (a background voxel otherwise), crop (zero-padding where the volume is
/// smaller), limit the field of view (with `crop_probability`), flip and shift.
pub fn random_patch<R: Rng>(sample: &Sample, options: &PatchOptions, rng: &mut R) -> Patch {
    let dims = sample.dims;
    let size = options.size;
    let pick_from = |list: &Vec<u32>, rng: &mut R| list[rng.random_range(0..list.len())] as usize;
    let want_foreground = rng.random::<f64>() < options.foreground_ratio;
    let centre = match (
        want_foreground,
        sample.foreground.is_empty(),
        sample.background.is_empty(),
    ) {
        (true, false, _) | (false, false, true) => pick_from(&sample.foreground, rng),
        (_, _, false) => pick_from(&sample.background, rng),
        _ => 0,
    };
    let c = [
        centre / (dims[1] * dims[2]),
        (centre / dims[2]) % dims[1],
        centre % dims[2],
    ];
    // Start so the centre sits in the middle, kept inside the volume where it is large
    // enough; smaller volumes are centred in the patch and padded.
    let start: [isize; 3] = std::array::from_fn(|a| {
        if dims[a] >= size[a] {
            (c[a] as isize - (size[a] / 2) as isize).clamp(0, (dims[a] - size[a]) as isize)
        } else {
            -(((size[a] - dims[a]) / 2) as isize)
        }
    });
    let joint_flip = options.flip_jointly && rng.random::<bool>();
    let flip: [bool; 3] = std::array::from_fn(|a| {
        options.flip_axes.contains(&a)
            && if options.flip_jointly {
                joint_flip
            } else {
                rng.random::<bool>()
            }
    });
    let shift = if options.intensity_shift > 0.0 {
        rng.random_range(-options.intensity_shift..=options.intensity_shift)
    } else {
        0.0
    };
    // The visible box in patch coordinates before flipping: the whole patch, or a random
    // box of at least half the patch per side that keeps the patch centre.
    let crop = options.crop_probability > 0.0 && rng.random::<f64>() < options.crop_probability;
    let visible: [std::ops::Range<usize>; 3] = std::array::from_fn(|a| {
        if !crop {
            return 0..size[a];
        }
        let centre = size[a] / 2;
        let len = rng.random_range(size[a].div_ceil(2)..=size[a]);
        let first = (centre + 1).saturating_sub(len);
        let last = centre.min(size[a] - len);
        let begin = rng.random_range(first..=last);
        begin..begin + len
    });

    let len = size.iter().product();
    let mut image = vec![0.0f32; len];
    let mut label = vec![0u8; len];
    let mut i = 0;
    for px in 0..size[0] {
        for py in 0..size[1] {
            for pz in 0..size[2] {
                let p = [px, py, pz];
                let q: [usize; 3] =
                    std::array::from_fn(|a| if flip[a] { size[a] - 1 - p[a] } else { p[a] });
                let src: [isize; 3] = std::array::from_fn(|a| start[a] + q[a] as isize);
                let inside = (0..3).all(|a| {
                    src[a] >= 0 && (src[a] as usize) < dims[a] && visible[a].contains(&q[a])
                });
                if inside {
                    let j =
                        (src[0] as usize * dims[1] + src[1] as usize) * dims[2] + src[2] as usize;
                    image[i] = sample.image[j] + shift;
                    label[i] = sample.label[j];
                }
                i += 1;
            }
        }
    }
    Patch { image, label }
}

/// Resolves `path` against `base` unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The one foreground voxel, (3, 2, 1) of a 6 x 5 x 4 grid; its image value is its index.
    const FG: usize = (3 * 5 + 2) * 4 + 1;

    fn sample() -> Sample {
        let dims = [6, 5, 4];
        let n = 120;
        let image: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut label = vec![0u8; n];
        label[FG] = 1;
        Sample {
            foreground: vec![FG as u32],
            background: (0..n as u32).filter(|&i| i != FG as u32).collect(),
            image,
            label,
            dims,
            name: "synthetic".into(),
        }
    }

    #[test]
    fn foreground_patches_contain_the_foreground_voxel() {
        let s = sample();
        let options = PatchOptions {
            size: [4, 4, 4],
            foreground_ratio: 1.0,
            flip_axes: vec![],
            flip_jointly: false,
            intensity_shift: 0.0,
            crop_probability: 0.0,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for _ in 0..10 {
            let p = random_patch(&s, &options, &mut rng);
            assert_eq!(p.label.iter().filter(|&&l| l == 1).count(), 1);
            // The image and label stay aligned: the labelled voxel carries its own index.
            let at = p.label.iter().position(|&l| l == 1).unwrap();
            assert_eq!(p.image[at], FG as f32);
        }
    }

    #[test]
    fn small_volumes_are_padded_and_flips_keep_alignment() {
        let s = sample();
        let options = PatchOptions {
            size: [8, 8, 8],
            foreground_ratio: 1.0,
            flip_axes: vec![0, 1, 2],
            flip_jointly: false,
            intensity_shift: 0.0,
            crop_probability: 0.0,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..10 {
            let p = random_patch(&s, &options, &mut rng);
            assert_eq!(p.image.len(), 512);
            let at = p.label.iter().position(|&l| l == 1).unwrap();
            assert_eq!(p.image[at], FG as f32);
            // 120 real voxels (one of them, voxel 0, has value 0), the rest padding.
            assert_eq!(p.image.iter().filter(|&&v| v != 0.0).count(), 119);
        }
    }

    #[test]
    fn cropped_fields_of_view_keep_the_centre_and_blank_the_rest() {
        // A 10^3 volume of ones, foreground everywhere: every patch voxel outside the
        // visible box must be 0 in the image and background in the label.
        let dims = [10, 10, 10];
        let n = 1000;
        let s = Sample {
            image: vec![1.0; n],
            label: vec![1; n],
            dims,
            foreground: (0..n as u32).collect(),
            background: Vec::new(),
            name: "ones".into(),
        };
        let options = PatchOptions {
            size: [8, 8, 8],
            foreground_ratio: 1.0,
            flip_axes: vec![0, 1, 2],
            flip_jointly: false,
            intensity_shift: 0.0,
            crop_probability: 1.0,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut smallest = 512;
        for _ in 0..50 {
            let p = random_patch(&s, &options, &mut rng);
            let visible = p.image.iter().filter(|&&v| v == 1.0).count();
            let labelled = p.label.iter().filter(|&&l| l == 1).count();
            assert_eq!(visible, labelled, "image and label blanked alike");
            // At least half of every side stays visible, the centre region included.
            assert!(visible >= 64, "{visible}");
            let centre = [3usize, 4];
            let any_centre = centre.iter().any(|&x| {
                centre
                    .iter()
                    .any(|&y| centre.iter().any(|&z| p.label[(x * 8 + y) * 8 + z] == 1))
            });
            assert!(any_centre);
            smallest = smallest.min(visible);
        }
        assert!(smallest < 512, "no patch was cropped");
    }

    #[test]
    fn joint_flips_rotate_and_never_mirror() {
        // The image value of a voxel is its index: decode where the patch's first voxel
        // came from. With joint flips of axes 0 and 1, either both are flipped or neither.
        let s = sample();
        let options = PatchOptions {
            size: [6, 5, 4],
            foreground_ratio: 1.0,
            flip_axes: vec![0, 1],
            flip_jointly: true,
            intensity_shift: 0.0,
            crop_probability: 0.0,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let p = random_patch(&s, &options, &mut rng);
            let first = p.image[0] as usize;
            let (x, y) = (first / 20, (first / 4) % 5);
            seen.insert((x == 5, y == 4));
        }
        let both: std::collections::BTreeSet<_> = [(false, false), (true, true)].into();
        assert_eq!(seen, both);
    }

    #[test]
    fn class_indices_map_label_values() {
        let classes = vec![
            ClassSpec {
                name: "spleen".into(),
                values: vec![1],
            },
            ClassSpec {
                name: "liver".into(),
                values: vec![5, 6],
            },
        ];
        let raw = [0.0, 1.0, 5.0, 6.0, 7.0, f32::NAN];
        assert_eq!(class_indices(&raw, &classes), vec![0, 1, 2, 2, 0, 0]);
    }
}
