//! The error type of the volume module.
//!
//! Every variant carries the path of the file it is about, and its message starts with that
//! path, so a message can be shown to a user as it is.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading or writing a volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// An operating-system I/O error (open, read, write, rename...).
    #[error("{}: cannot {op}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What was being attempted, e.g. "open", "read", "write".
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file looks gzip-compressed but cannot be decompressed.
    #[error("{}: unreadable gzip data: {source}", .path.display())]
    Gzip {
        /// The file concerned.
        path: PathBuf,
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },

    /// The file (after decompression) is shorter than a NIfTI-1 header.
    #[error(
        "{}: only {len} bytes, too short for a NIfTI-1 header (348 bytes)",
        .path.display()
    )]
    TooShort {
        /// The file concerned.
        path: PathBuf,
        /// Number of bytes available.
        len: u64,
    },

    /// A NIfTI-2 file (540-byte header), which this reader does not handle.
    #[error(
        "{}: NIfTI-2 file (540-byte header); only NIfTI-1 is supported, convert it first \
         (e.g. with nibabel or fslchfiletype)",
        .path.display()
    )]
    Nifti2 {
        /// The file concerned.
        path: PathBuf,
    },

    /// A plain Analyze 7.5 header without the NIfTI-1 magic: its orientation is undefined.
    #[error(
        "{}: Analyze 7.5 header without NIfTI magic; its orientation is ambiguous, \
         convert it to NIfTI-1 first",
        .path.display()
    )]
    Analyze {
        /// The file concerned.
        path: PathBuf,
    },

    /// Not a NIfTI file at all (e.g. `sizeof_hdr` is not 348 in either byte order).
    #[error("{}: not a NIfTI-1 file: {detail}", .path.display())]
    NotNifti {
        /// The file concerned.
        path: PathBuf,
        /// What was found.
        detail: String,
    },

    /// A NIfTI-1 header with invalid fields (dimensions, offsets...).
    #[error("{}: invalid NIfTI header: {detail}", .path.display())]
    BadHeader {
        /// The file concerned.
        path: PathBuf,
        /// The offending field and value.
        detail: String,
    },

    /// The image has more voxels than this program accepts.
    #[error(
        "{}: image of {voxels} voxels per volume exceeds the limit of {limit}",
        .path.display()
    )]
    TooLarge {
        /// The file concerned.
        path: PathBuf,
        /// Voxels per 3-D volume according to the header.
        voxels: u128,
        /// The limit ([`super::MAX_VOXELS`]).
        limit: u64,
    },

    /// A colour datatype (RGB24, RGBA32).
    #[error(
        "{}: colour datatype {name} (code {code}) is not supported; a scalar image is needed",
        .path.display()
    )]
    Rgb {
        /// The file concerned.
        path: PathBuf,
        /// The NIfTI datatype code.
        code: i16,
        /// Its name.
        name: &'static str,
    },

    /// A complex datatype.
    #[error(
        "{}: complex datatype {name} (code {code}) is not supported; a real-valued image is needed",
        .path.display()
    )]
    Complex {
        /// The file concerned.
        path: PathBuf,
        /// The NIfTI datatype code.
        code: i16,
        /// Its name.
        name: &'static str,
    },

    /// A known NIfTI datatype that this reader does not convert (binary, float128).
    #[error("{}: datatype {name} (code {code}) is not supported", .path.display())]
    UnsupportedDatatype {
        /// The file concerned.
        path: PathBuf,
        /// The NIfTI datatype code.
        code: i16,
        /// Its name.
        name: &'static str,
    },

    /// A datatype code that NIfTI-1 does not define.
    #[error("{}: unknown datatype code {code}", .path.display())]
    UnknownDatatype {
        /// The file concerned.
        path: PathBuf,
        /// The code found in the header.
        code: i16,
    },

    /// The header of a `.hdr`/`.img` pair was found but not its image file.
    #[error(
        "{}: header of a .hdr/.img pair, but its image file is missing (looked for {})",
        .path.display(),
        list_paths(.tried)
    )]
    MissingImage {
        /// The header file.
        path: PathBuf,
        /// The image file names tried.
        tried: Vec<PathBuf>,
    },

    /// An `.img` file was given but no header next to it.
    #[error(
        "{}: image file of a .hdr/.img pair, but its header is missing (looked for {})",
        .path.display(),
        list_paths(.tried)
    )]
    MissingHeader {
        /// The image file.
        path: PathBuf,
        /// The header file names tried.
        tried: Vec<PathBuf>,
    },

    /// The file ends before all voxel data could be read.
    #[error(
        "{}: truncated: the image needs {expected} bytes of voxel data from byte {offset}, \
         but only {got} are there",
        .path.display()
    )]
    Truncated {
        /// The file holding the voxel data.
        path: PathBuf,
        /// Where the voxel data starts (in the decompressed stream).
        offset: u64,
        /// Bytes needed for the first volume.
        expected: u64,
        /// Bytes actually available.
        got: u64,
    },

    /// Memory for the voxel data could not be reserved.
    #[error("{}: cannot allocate {bytes} bytes for the voxel data", .path.display())]
    OutOfMemory {
        /// The file concerned.
        path: PathBuf,
        /// The size requested.
        bytes: u64,
    },

    /// A bug in this module was caught while reading (a panic turned into an error).
    #[error("{}: internal error while reading (please report this): {message}", .path.display())]
    Internal {
        /// The file concerned.
        path: PathBuf,
        /// The panic message.
        message: String,
    },

    /// Writing would overwrite (one of the files of) the input image.
    #[error(
        "{}: refusing to overwrite the input image {}",
        .path.display(),
        .input.display()
    )]
    SameAsInput {
        /// The requested output path.
        path: PathBuf,
        /// The input file it resolves to.
        input: PathBuf,
    },

    /// The output name does not end in `.nii` or `.nii.gz`.
    #[error("{}: output file name must end in .nii or .nii.gz", .path.display())]
    OutputExtension {
        /// The requested output path.
        path: PathBuf,
    },

    /// A writer was called with arguments that cannot be written (e.g. zero channels, or
    /// sizes beyond what NIfTI-1 can store).
    #[error("{}: cannot write: {detail}", .path.display())]
    InvalidArgument {
        /// The requested output path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// The array handed to a writer does not fit the grid.
    #[error(
        "{}: {what} has {got} values but the grid needs {expected}",
        .path.display()
    )]
    DataLength {
        /// The requested output path.
        path: PathBuf,
        /// Which array.
        what: &'static str,
        /// Values the grid needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
}

impl VolumeError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::Gzip { path, .. }
            | Self::TooShort { path, .. }
            | Self::Nifti2 { path }
            | Self::Analyze { path }
            | Self::NotNifti { path, .. }
            | Self::BadHeader { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Rgb { path, .. }
            | Self::Complex { path, .. }
            | Self::UnsupportedDatatype { path, .. }
            | Self::UnknownDatatype { path, .. }
            | Self::MissingImage { path, .. }
            | Self::MissingHeader { path, .. }
            | Self::Truncated { path, .. }
            | Self::OutOfMemory { path, .. }
            | Self::Internal { path, .. }
            | Self::SameAsInput { path, .. }
            | Self::OutputExtension { path }
            | Self::InvalidArgument { path, .. }
            | Self::DataLength { path, .. } => path,
        }
    }

    /// Shorthand for an [`VolumeError::Io`] error.
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    /// Shorthand for a [`VolumeError::BadHeader`] error.
    pub(crate) fn bad_header(path: &Path, detail: impl Into<String>) -> Self {
        Self::BadHeader {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

/// Joins paths for an error message: "a, b".
fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
