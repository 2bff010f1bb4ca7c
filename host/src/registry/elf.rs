//! A structural check of a module file before `dlopen` sees it.
//!
//! `dlopen` maps a library's segments straight from the file; when the file
//! is cut short, touching the missing pages kills the process with SIGBUS
//! instead of failing the load. So the loader first checks that every
//! loadable segment and the section header table lie inside the file, and
//! measures what the library will map.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PT_LOAD: u32 = 1;
const PAGE: u64 = 4096;

/// Why a file is not a loadable library. The texts are what `ERR` lines
/// show after the file's name.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot open: {0}")]
    Open(io::Error),
    #[error("cannot stat: {0}")]
    Stat(io::Error),
    #[error("cannot read: {0}")]
    Read(io::Error),
    /// A read ran past the end of the file.
    #[error("truncated file")]
    ShortRead,
    #[error("not a shared library: only {0} bytes")]
    TooShort(u64),
    #[error("not a shared library: no ELF header")]
    NoElfHeader,
    #[error("not a 64-bit little-endian ELF library")]
    NotElf64Le,
    #[error("not a shared library (ELF type is not DYN)")]
    NotDyn,
    /// A segment or the section header table lies past the file's end
    /// (its length in bytes).
    #[error(
        "truncated or corrupt library ({0} bytes): its segments extend past the end of the file"
    )]
    Truncated(u64),
    #[error("not a shared library: nothing to load")]
    NothingToLoad,
}

/// What the check learned about a valid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Bytes the loadable segments occupy in memory (page-rounded).
    pub mapped: u64,
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks that `path` is a complete 64-bit little-endian ELF shared object.
pub fn check(path: &Path) -> Result<Image, ElfError> {
    let file = File::open(path).map_err(ElfError::Open)?;
    let len = file.metadata().map_err(ElfError::Stat)?.len();
    check_file(&file, len)
}

fn read(file: &File, at: u64, n: usize) -> Result<Vec<u8>, ElfError> {
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, at)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ElfError::ShortRead,
            _ => ElfError::Read(e),
        })?;
    Ok(buf)
}

fn check_file(file: &File, len: u64) -> Result<Image, ElfError> {
    if len < 64 {
        return Err(ElfError::TooShort(len));
    }
    let h = read(file, 0, 64)?;
    if &h[..4] != b"\x7fELF" {
        return Err(ElfError::NoElfHeader);
    }
    if h[4] != 2 || h[5] != 1 {
        return Err(ElfError::NotElf64Le);
    }
    if u16_at(&h, 0x10) != 3 {
        return Err(ElfError::NotDyn);
    }
    let (phoff, shoff) = (u64_at(&h, 0x20), u64_at(&h, 0x28));
    let (phentsize, phnum) = (u16_at(&h, 0x36), u16_at(&h, 0x38));
    let (shentsize, shnum) = (u16_at(&h, 0x3a), u16_at(&h, 0x3c));
    let within = |off: u64, size: u64| off.checked_add(size).is_some_and(|end| end <= len);
    if phentsize < 56 || !within(phoff, phentsize * phnum) {
        return Err(ElfError::Truncated(len));
    }
    if shnum > 0 && !within(shoff, shentsize * shnum) {
        return Err(ElfError::Truncated(len));
    }
    let ph = read(file, phoff, (phentsize * phnum) as usize)?;
    let mut mapped = 0u64;
    for i in 0..phnum as usize {
        let p = &ph[i * phentsize as usize..];
        if u32_at(p, 0) != PT_LOAD {
            continue;
        }
        let (offset, filesz, memsz) = (u64_at(p, 8), u64_at(p, 32), u64_at(p, 40));
        if !within(offset, filesz) {
            return Err(ElfError::Truncated(len));
        }
        mapped += memsz.div_ceil(PAGE) * PAGE;
    }
    if mapped == 0 {
        return Err(ElfError::NothingToLoad);
    }
    Ok(Image { mapped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("sy-elf-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn refuses_non_elf_and_truncated() {
        let p = tmp(
            "text",
            b"hello, this is not a library at all, not even close......................",
        );
        assert!(check(&p).unwrap_err().to_string().contains("no ELF header"));
        // A real shared object of this machine, cut short.
        let lib = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|l| Path::new(l).exists());
        if let Some(lib) = lib {
            let bytes = std::fs::read(lib).unwrap();
            assert!(check(Path::new(lib)).unwrap().mapped > 0);
            let cut = tmp("cut", &bytes[..bytes.len() / 2]);
            assert!(check(&cut).unwrap_err().to_string().contains("truncated"));
            let head = tmp("head", &bytes[..65536]);
            assert!(check(&head).unwrap_err().to_string().contains("truncated"));
            let _ = std::fs::remove_file(cut);
            let _ = std::fs::remove_file(head);
        }
        assert_eq!(
            ElfError::Truncated(10).to_string(),
            "truncated or corrupt library (10 bytes): its segments extend past the end of the file"
        );
        let _ = std::fs::remove_file(p);
    }
}
