//! Medical volumes: NIfTI-1 input and output, geometry, reorientation and resampling.
//!
//! * [`read_volume`] reads `.nii`, `.nii.gz` and `.hdr`/`.img` pairs (plain or gzipped) of any
//!   scalar datatype and byte order into an `f32` [`Volume`], applying `scl_slope`/`scl_inter`.
//!   Unsupported or broken files (RGB, complex, NIfTI-2, Analyze, garbage headers, truncated
//!   data, bad gzip) give a [`VolumeError`] naming the file; nothing here panics on file
//!   contents.
//! * [`Volume::to_ras`] reorders voxels into the closest canonical RAS order for processing,
//!   and [`Orientation::from_ras`] maps results back to the stored order, bit-exactly.
//! * [`resample`], [`GridMap`] and [`spacing_map`] resample along the grid axes (separable
//!   linear or nearest), e.g. to a target voxel size and back.
//! * [`write_label_map`] and [`write_float_channels`] write results on the grid of the input,
//!   copying its sform/qform exactly, atomically, and never over the input.
//!
//! Voxel arrays are always in NIfTI order: x fastest, `index = x + nx * (y + ny * z)`.
//! Transforms are named `target_from_source`, e.g. `world_from_voxel`.

#![warn(missing_docs)]

mod error;
mod geometry;
mod header;
mod orientation;
mod read;
mod resample;
mod write;

use std::fmt;
use std::path::PathBuf;

pub use error::VolumeError;
pub use geometry::{
    GeometrySource, HeaderGeometry, IDENTITY_AFFINE, affine_apply, affine_inverse, affine_mul,
    column_norms, header_geometry, pixdim_affine, qform_affine, sform_affine,
};
pub use header::{DataType, HEADER_SIZE, MAX_VOXELS, datatype_name};
pub use orientation::{Orientation, closest_ras};
pub use read::{read_header, read_volume};
pub use resample::{GridMap, Interp, SpacingMap, resample, resample_nearest, spacing_map};
pub use write::{check_output_path, write_float_channels, write_label_map};

/// 4x4 affine, row-major, f64.
pub type Affine = [[f64; 4]; 4];

/// A 3-D scalar volume as read from disk (first volume of 4-D files), in stored voxel order.
#[derive(Clone)]
pub struct Volume {
    /// Voxel values as f32, NIfTI order: x fastest, index = x + nx * (y + ny * z).
    pub data: Vec<f32>,
    /// Number of voxels along x, y, z.
    pub dims: [usize; 3],
    /// Voxel size in mm taken from the columns of world_from_voxel (norms).
    pub spacing: [f64; 3],
    /// Maps voxel indices (x, y, z, 1) to world (scanner/template) millimetres.
    pub world_from_voxel: Affine,
    /// The original header, kept so outputs can copy sform/qform exactly.
    pub header: nifti::NiftiHeader,
    /// The path the volume was read from (as given).
    pub path: PathBuf,
    /// Human-readable notes such as "x.nii: 4-D input has 2 volumes; using the first".
    pub warnings: Vec<String>,
}

/// A volume reordered to the closest canonical RAS voxel order (see [`Volume::to_ras`]).
#[derive(Clone)]
pub struct RasVolume {
    /// Voxel values, x fastest, x running towards R, y towards A, z towards S (approximately,
    /// for oblique grids).
    pub data: Vec<f32>,
    /// Number of voxels along the RAS-ordered axes.
    pub dims: [usize; 3],
    /// Voxel size in mm along the RAS-ordered axes.
    pub spacing: [f64; 3],
    /// Maps RAS-grid voxel indices to the same world millimetres as the stored grid.
    pub world_from_voxel: Affine,
}

impl Volume {
    /// Builds a volume from an array (x fastest) and its geometry, with a synthetic header
    /// (float32, sform code 2 "aligned" holding `world_from_voxel`, no qform) and an empty
    /// path. Useful for tests and generated data.
    ///
    /// # Panics
    ///
    /// If `data.len()` is not the product of `dims`.
    pub fn from_array(data: Vec<f32>, dims: [usize; 3], world_from_voxel: Affine) -> Self {
        let total = dims[0] * dims[1] * dims[2];
        assert_eq!(
            data.len(),
            total,
            "Volume::from_array: {} values for dims {dims:?}",
            data.len()
        );
        let spacing = column_norms(&world_from_voxel);
        let row = |r: usize| world_from_voxel[r].map(|v| v as f32);
        let clamp = |n: usize| n.min(i16::MAX as usize) as u16;
        let header = nifti::NiftiHeader {
            dim: [
                3,
                clamp(dims[0]),
                clamp(dims[1]),
                clamp(dims[2]),
                1,
                1,
                1,
                1,
            ],
            datatype: DataType::F32.code(),
            bitpix: 32,
            pixdim: [
                1.0,
                spacing[0] as f32,
                spacing[1] as f32,
                spacing[2] as f32,
                1.0,
                1.0,
                1.0,
                1.0,
            ],
            vox_offset: 352.0,
            scl_slope: 1.0,
            scl_inter: 0.0,
            xyzt_units: 2, // millimetres
            qform_code: 0,
            sform_code: 2,
            srow_x: row(0),
            srow_y: row(1),
            srow_z: row(2),
            magic: *b"n+1\0",
            endianness: nifti::Endianness::Little,
            ..nifti::NiftiHeader::default()
        };
        Self {
            data,
            dims,
            spacing,
            world_from_voxel,
            header,
            path: PathBuf::new(),
            warnings: Vec::new(),
        }
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.dims.iter().product()
    }

    /// The orientation of this volume's grid relative to the closest canonical RAS order.
    pub fn orientation(&self) -> Orientation {
        closest_ras(&self.world_from_voxel)
    }

    /// Reorders the voxels into the closest canonical RAS order (no interpolation). Every
    /// voxel keeps its world position: the returned `world_from_voxel` is
    /// `self.world_from_voxel * stored_from_ras`. Use the returned [`Orientation`] to bring
    /// results back with [`Orientation::from_ras`].
    pub fn to_ras(&self) -> (RasVolume, Orientation) {
        let o = self.orientation();
        let (data, dims) = o.to_ras(&self.data, self.dims);
        let world_from_voxel = affine_mul(&self.world_from_voxel, &o.stored_from_ras(self.dims));
        let ras = RasVolume {
            data,
            dims,
            spacing: column_norms(&world_from_voxel),
            world_from_voxel,
        };
        (ras, o)
    }
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("path", &self.path)
            .field("dims", &self.dims)
            .field("spacing", &self.spacing)
            .field("world_from_voxel", &self.world_from_voxel)
            .field("datatype", &datatype_name(self.header.datatype))
            .field("values", &self.data.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl fmt::Debug for RasVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RasVolume")
            .field("dims", &self.dims)
            .field("spacing", &self.spacing)
            .field("world_from_voxel", &self.world_from_voxel)
            .field("values", &self.data.len())
            .finish()
    }
}
