//! Small file-system helpers shared by every writer: atomic writes and input protection.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A temporary file next to its destination that becomes the destination only when
/// [`AtomicFile::commit`] is called. Dropped without commit, it removes itself, so a failed
/// writer never leaves a partial output behind. A process killed by a signal (Ctrl-C) runs
/// no drop: the destination is still never partial, but the hidden temporary file stays.
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file in the destination's directory.
    pub fn create(dest: &Path) -> io::Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&temp)?;
        Ok(Self {
            file: Some(file),
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// The temporary file's path (for writers that open the path themselves).
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// Flushes the data to disk and renames the temporary file over the destination.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        std::fs::rename(&self.temp, &self.dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(dest)?;
    file.write_all(bytes)?;
    file.commit()
}

/// True when `a` and `b` name the same file: one existing file (after resolving symbolic
/// links; hard links too, on Unix), or, while one of them does not exist yet, the same name
/// in the same folder once the folders are resolved (`x.nii` and `./x.nii`).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y || same_inode(&x, &y),
        _ => resolved_name(a).is_some_and(|x| resolved_name(b) == Some(x)),
    }
}

/// `path` with its folder resolved (for a file that need not exist).
fn resolved_name(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(folder.canonicalize().ok()?.join(name))
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// True when something is at `path`, a dangling symbolic link included: an output that
/// would replace it needs the user's leave (`--force`).
pub fn occupied(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn same_file_sees_through_spellings_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.nii");
        let dotted = dir.path().join(".").join("a.nii");
        // Neither exists yet: the same name in the same folder.
        assert!(same_file(&a, &dotted));
        assert!(!same_file(&a, &dir.path().join("b.nii")));
        std::fs::write(&a, b"x").unwrap();
        assert!(same_file(&a, &dotted));
        #[cfg(unix)]
        {
            let hard = dir.path().join("hard.nii");
            std::fs::hard_link(&a, &hard).unwrap();
            assert!(same_file(&a, &hard));
            let soft = dir.path().join("soft.nii");
            std::os::unix::fs::symlink(&a, &soft).unwrap();
            assert!(same_file(&soft, &a));
            let dangling = dir.path().join("dangling.nii");
            std::os::unix::fs::symlink(dir.path().join("missing.nii"), &dangling).unwrap();
            assert!(occupied(&dangling) && !dangling.exists());
        }
        assert!(!occupied(&dir.path().join("b.nii")));
    }

    #[test]
    fn committed_atomic_file_replaces_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::write(&dest, b"old").unwrap();
        write_atomic(&dest, b"new").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    }
}
