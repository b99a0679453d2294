//! HyperSegNAS Explorer: the engine behind the `hypersegnas` command-line tool.
//!
//! HyperSegNAS (Peng et al., CVPR 2022) searches the DiNTS multi-path space for 3D
//! segmentation networks. A meta-assistant network (MAN) generates per-channel weights for
//! the super-net from the architecture code and an encoding of the image patch.
//!
//! - [`volume`]: NIfTI reading and writing, orientation, resampling.
//! - [`arch`]: search spaces and architecture codes (validation, presets, files).
//! - [`model`]: the super-net, the image encoder and the MAN in Burn.
//! - [`checkpoint`]: the native `.safetensors` checkpoint.
//! - [`monai`]: reading PyTorch files and importing MONAI DiNTS checkpoints.
//! - [`inference`]: pre-processing, sliding-window prediction, mapping results back.
//! - [`train`]: Algorithm 1 (super-net training, annealing) and fine-tuning.
//! - [`device`]: choosing between the wgpu and CPU backends.
//! - [`alloc`]: allocator tuning for tensor-sized buffers.
//! - [`app`]: the desktop explorer (eframe/egui); nothing else depends on it.

pub mod alloc;
pub mod app;
pub mod arch;
pub mod checkpoint;
pub mod device;
pub mod fsutil;
pub mod inference;
pub mod model;
pub mod monai;
pub mod train;
pub mod volume;
