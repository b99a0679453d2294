//! MONAI interoperability: reading PyTorch files in pure Rust and importing MONAI's DiNTS
//! networks (weights and architecture files) into our [`crate::model::Network`].
//!
//! - [`zip`] and [`pickle`]: the two layers of a `torch.save` file, read safely (nothing is
//!   imported or executed).
//! - [`torch_file`]: state dicts from `.pt`/`.pth` archives and `safetensors.torch` files,
//!   and numpy arrays inside MONAI's architecture files.
//! - [`import`]: shape inference, the three key layouts, loading into our network.
//! - [`decode`]: MONAI's decoding of a search-space checkpoint's `log_alpha` parameters.
//! - [`export`]: writing MONAI's architecture file.
//! - [`npy`]: raw `.npy` patches and logits for `hypersegnas forward`.

pub mod decode;
pub mod export;
pub mod import;
pub mod npy;
pub mod open;
pub mod pickle;
pub mod torch_file;
pub mod zip;

pub use import::{ImportError, Imported, Inferred, KeyScheme, infer, load, read_arch_pth};
pub use torch_file::{StateDict, TorchFileError};
