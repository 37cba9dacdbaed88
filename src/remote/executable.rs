//! This process's own executable: what the bootstrap uploads to a host
//! that lacks it, and what names it there (its blake3).
//!
//! It is read through `/proc/self/exe`, the inode this process runs, not
//! the path it was started from: a tack replaced on disk while this one
//! runs still uploads and names the binary that is running. The kernel
//! refuses writes to a running executable, so the bytes hashed are the
//! bytes sent.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

/// The running executable's path in procfs.
pub const SELF_EXE: &str = "/proc/self/exe";

/// What identifies the running executable, computed once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    /// blake3 of its bytes, lowercase hex: the name of its directory in a
    /// remote cache.
    pub hash: String,
    pub size: u64,
    /// Its first four bytes in lowercase hex (`7f454c46` for ELF): the
    /// bootstrap script compares them, so a cached file that is not an
    /// executable of this kind is replaced rather than handed to `sh`.
    pub magic: String,
}

/// The running executable, hashed on first use.
pub fn own() -> Result<&'static Executable, String> {
    static OWN: OnceLock<Result<Executable, String>> = OnceLock::new();
    OWN.get_or_init(|| {
        describe(Path::new(SELF_EXE)).map_err(|error| format!("cannot read `{SELF_EXE}`: {error}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Hash, size and magic bytes of the file at `path`, from one open file.
pub fn describe(path: &Path) -> std::io::Result<Executable> {
    let mut file = File::open(path)?;
    let mut magic = Vec::with_capacity(4);
    (&mut file).take(4).read_to_end(&mut magic)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&magic);
    let rest = std::io::copy(&mut file, &mut hasher)?;
    Ok(Executable {
        hash: hasher.finalize().to_hex().to_string(),
        size: magic.len() as u64 + rest,
        magic: magic.iter().map(|byte| format!("{byte:02x}")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_described_by_its_blake3_size_and_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary");
        std::fs::write(&path, b"\x7fELF and the rest").unwrap();
        let described = describe(&path).unwrap();
        assert_eq!(
            described.hash,
            blake3::hash(b"\x7fELF and the rest").to_hex().to_string()
        );
        assert_eq!(described.size, 17);
        assert_eq!(described.magic, "7f454c46");
    }

    #[test]
    fn the_running_executable_is_described_once() {
        let first = own().unwrap();
        assert!(std::ptr::eq(first, own().unwrap()));
        assert_eq!(first.hash.len(), 64);
    }
}
