//! A minimal reader for the zip archives that `torch.save` writes.
//!
//! `torch.save` stores every entry uncompressed (method 0) and aligns tensor data, so a
//! stored entry is a plain byte range of the file: tensors are read straight from a memory
//! map without copying the archive. Deflated entries (an archive re-zipped by another tool)
//! are inflated into memory. Zip64 records (archives over 4 GiB) are understood.
//! Encryption, multi-disk archives and other compression methods are refused.
//!
//! Every entry is checked against the CRC-32 its central-directory record holds, so a
//! damaged file is an error rather than silently different weights. A CRC of 0 is taken as
//! "not recorded": `torch.save` writes 0 for every entry after
//! `torch.serialization.set_crc32_options(False)`, and `torch.load` reads such files.

use std::borrow::Cow;
use std::io::Read;

/// One entry of the central directory.
#[derive(Clone, Debug)]
pub struct ZipEntry {
    /// Name inside the archive.
    pub name: String,
    /// 0 stored, 8 deflate.
    method: u16,
    /// Size of the entry's bytes in the archive.
    compressed_size: u64,
    /// Size after decompression.
    pub size: u64,
    /// CRC-32 of the decompressed bytes; 0 when the writer did not record one.
    crc32: u32,
    /// Offset of the entry's local header.
    local_offset: u64,
}

/// A parsed archive over borrowed bytes.
pub struct ZipArchive<'a> {
    bytes: &'a [u8],
    entries: Vec<ZipEntry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const EOCD_SIGNATURE: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIGNATURE: u32 = 0x0606_4b50;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;

impl<'a> ZipArchive<'a> {
    /// True when `bytes` starts like a zip archive.
    pub fn looks_like_zip(bytes: &[u8]) -> bool {
        bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
    }

    /// Parses the central directory. Errors say what is wrong in words.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let eocd = find_eocd(bytes)
            .ok_or("no end-of-central-directory record: the zip archive is truncated or corrupt")?;
        let disk = u16_at(bytes, eocd + 4).unwrap_or(0);
        let mut count = u16_at(bytes, eocd + 10).unwrap_or(0) as u64;
        let mut dir_size = u32_at(bytes, eocd + 12).unwrap_or(0) as u64;
        let mut dir_offset = u32_at(bytes, eocd + 16).unwrap_or(0) as u64;
        if disk != 0 {
            return Err("multi-disk zip archives are not supported".into());
        }

        // Zip64: the locator sits right before the classic record.
        if eocd >= 20 && u32_at(bytes, eocd - 20) == Some(ZIP64_LOCATOR_SIGNATURE) {
            let record = u64_at(bytes, eocd - 20 + 8).ok_or("truncated zip64 locator")? as usize;
            if u32_at(bytes, record) != Some(ZIP64_EOCD_SIGNATURE) {
                return Err("the zip64 end-of-directory record is missing or corrupt".into());
            }
            count = u64_at(bytes, record + 32).ok_or("truncated zip64 record")?;
            dir_size = u64_at(bytes, record + 40).ok_or("truncated zip64 record")?;
            dir_offset = u64_at(bytes, record + 48).ok_or("truncated zip64 record")?;
        }
        let end = dir_offset
            .checked_add(dir_size)
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or("the central directory lies outside the file (truncated archive?)")?;
        let directory = &bytes[dir_offset as usize..end as usize];

        let mut entries = Vec::new();
        let mut at = 0usize;
        for _ in 0..count {
            let entry = parse_central_entry(directory, &mut at)
                .ok_or("a central-directory entry is truncated or corrupt")?;
            entries.push(entry);
        }
        Ok(Self { bytes, entries })
    }

    /// Every entry.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&ZipEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Byte range of a stored entry's data within the archive (`None` for compressed ones),
    /// after checking those bytes against the entry's CRC-32.
    pub fn stored_range(&self, entry: &ZipEntry) -> Result<Option<(usize, usize)>, String> {
        let start = self.data_start(entry)?;
        if entry.method != 0 {
            return Ok(None);
        }
        let end = start
            .checked_add(entry.compressed_size as usize)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("entry '{}' runs past the end of the file", entry.name))?;
        check_crc(entry, &self.bytes[start..end])?;
        Ok(Some((start, end)))
    }

    /// The (decompressed) bytes of an entry.
    pub fn read(&self, entry: &ZipEntry) -> Result<Cow<'a, [u8]>, String> {
        let start = self.data_start(entry)?;
        let end = start
            .checked_add(entry.compressed_size as usize)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("entry '{}' runs past the end of the file", entry.name))?;
        let raw = &self.bytes[start..end];
        let data = match entry.method {
            0 => Cow::Borrowed(raw),
            8 => {
                // Bound the output by the declared size so a corrupt archive cannot balloon.
                let mut out = Vec::new();
                let limit = entry.size.min(1 << 34);
                flate2::read::DeflateDecoder::new(raw)
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("entry '{}': corrupt deflate data: {e}", entry.name))?;
                if out.len() as u64 != entry.size {
                    return Err(format!(
                        "entry '{}': inflated to {} bytes, the directory says {}",
                        entry.name,
                        out.len(),
                        entry.size
                    ));
                }
                Cow::Owned(out)
            }
            m => {
                return Err(format!(
                    "entry '{}' uses compression method {m}; only stored (0) and deflate (8) \
                     are supported",
                    entry.name
                ));
            }
        };
        check_crc(entry, &data)?;
        Ok(data)
    }

    fn data_start(&self, entry: &ZipEntry) -> Result<usize, String> {
        let at = entry.local_offset as usize;
        if u32_at(self.bytes, at) != Some(LOCAL_SIGNATURE) {
            return Err(format!(
                "entry '{}': local header missing (corrupt or truncated archive)",
                entry.name
            ));
        }
        let name_len = u16_at(self.bytes, at + 26).unwrap_or(0) as usize;
        let extra_len = u16_at(self.bytes, at + 28).unwrap_or(0) as usize;
        Ok(at + 30 + name_len + extra_len)
    }
}

/// Compares `data` (an entry's decompressed bytes) with the CRC-32 the directory records.
fn check_crc(entry: &ZipEntry, data: &[u8]) -> Result<(), String> {
    if entry.crc32 == 0 {
        return Ok(());
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    if crc.sum() == entry.crc32 {
        Ok(())
    } else {
        Err(format!(
            "entry '{}' fails its CRC-32 check (recorded {:08x}, computed {:08x}): the file is \
             damaged",
            entry.name,
            entry.crc32,
            crc.sum()
        ))
    }
}

fn find_eocd(bytes: &[u8]) -> Option<usize> {
    // The record is 22 bytes plus a comment of at most 65535 bytes at the very end.
    let lowest = bytes.len().saturating_sub(22 + 65535);
    let mut at = bytes.len().checked_sub(22)?;
    loop {
        if u32_at(bytes, at) == Some(EOCD_SIGNATURE) {
            return Some(at);
        }
        if at == lowest {
            return None;
        }
        at -= 1;
    }
}

fn parse_central_entry(dir: &[u8], at: &mut usize) -> Option<ZipEntry> {
    let base = *at;
    if u32_at(dir, base)? != CENTRAL_SIGNATURE {
        return None;
    }
    let flags = u16_at(dir, base + 8)?;
    let method = u16_at(dir, base + 10)?;
    let crc32 = u32_at(dir, base + 16)?;
    let mut compressed_size = u32_at(dir, base + 20)? as u64;
    let mut size = u32_at(dir, base + 24)? as u64;
    let name_len = u16_at(dir, base + 28)? as usize;
    let extra_len = u16_at(dir, base + 30)? as usize;
    let comment_len = u16_at(dir, base + 32)? as usize;
    let mut local_offset = u32_at(dir, base + 42)? as u64;
    let name_start = base + 46;
    let name = dir.get(name_start..name_start + name_len)?;
    let name = String::from_utf8_lossy(name).into_owned();
    let extra = dir.get(name_start + name_len..name_start + name_len + extra_len)?;
    if flags & 1 != 0 {
        // Encrypted entries can never be read; make them unreadable by size.
        return None;
    }

    // Zip64 extended information: the 0xffffffff fields, in this order.
    let mut e = 0;
    while e + 4 <= extra.len() {
        let id = u16_at(extra, e)?;
        let len = u16_at(extra, e + 2)? as usize;
        let body = extra.get(e + 4..e + 4 + len)?;
        if id == 1 {
            let mut f = 0;
            let mut next = || {
                let v = u64_at(body, f);
                f += 8;
                v
            };
            if size == 0xffff_ffff {
                size = next()?;
            }
            if compressed_size == 0xffff_ffff {
                compressed_size = next()?;
            }
            if local_offset == 0xffff_ffff {
                local_offset = next()?;
            }
        }
        e += 4 + len;
    }
    *at = name_start + name_len + extra_len + comment_len;
    Some(ZipEntry {
        name,
        method,
        compressed_size,
        size,
        crc32,
        local_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        write_zip(entries, false, true)
    }

    /// An archive with the given entries, written by hand (the layout of APPNOTE 4.3),
    /// stored or deflated, with CRC-32s or with 0 in their place.
    fn write_zip(entries: &[(&str, &[u8])], deflate: bool, with_crc: bool) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut central = Vec::new();
        let method: u8 = if deflate { 8 } else { 0 };
        for (name, data) in entries {
            let packed = if deflate {
                let mut enc =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            } else {
                data.to_vec()
            };
            let offset = out.len() as u32;
            let crc = if with_crc {
                let mut crc = flate2::Crc::new();
                crc.update(data);
                crc.sum()
            } else {
                0
            };
            out.extend(LOCAL_SIGNATURE.to_le_bytes());
            out.extend([20, 0, 0, 0, method, 0, 0, 0, 0, 0]);
            out.extend(crc.to_le_bytes());
            out.extend((packed.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(&packed);

            central.extend(CENTRAL_SIGNATURE.to_le_bytes());
            central.extend([20, 0, 20, 0, 0, 0, method, 0, 0, 0, 0, 0]);
            central.extend(crc.to_le_bytes());
            central.extend((packed.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let dir_offset = out.len() as u32;
        out.extend(&central);
        out.extend(EOCD_SIGNATURE.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(dir_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_stored_entries() {
        let bytes = stored_zip(&[("a/data.pkl", b"hello"), ("a/data/0", b"\x01\x02")]);
        let zip = ZipArchive::parse(&bytes).unwrap();
        assert_eq!(zip.entries().len(), 2);
        let e = zip.entry("a/data/0").unwrap();
        assert_eq!(&*zip.read(e).unwrap(), b"\x01\x02");
    }

    #[test]
    fn reads_deflated_entries() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let bytes = write_zip(&[("a/data.pkl", b"x"), ("a/data/0", &data)], true, true);
        let zip = ZipArchive::parse(&bytes).unwrap();
        let e = zip.entry("a/data/0").unwrap();
        assert_eq!(zip.stored_range(e).unwrap(), None);
        assert_eq!(&*zip.read(e).unwrap(), &data[..]);
        // A corrupt deflate stream is an error.
        let mut broken = bytes.clone();
        let at = broken.len() / 2;
        broken[at] ^= 0xff;
        if let Ok(zip) = ZipArchive::parse(&broken) {
            for e in zip.entries() {
                let _ = zip.read(e);
            }
        }
    }

    #[test]
    fn damaged_entries_fail_their_crc_unless_none_was_recorded() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for deflate in [false, true] {
            let bytes = write_zip(&[("a/data/0", &data)], deflate, true);
            let zip = ZipArchive::parse(&bytes).unwrap();
            let e = zip.entry("a/data/0").unwrap();
            assert_eq!(&*zip.read(e).unwrap(), &data[..]);
        }
        // One flipped bit in the stored tensor bytes (the local header is 30 + 8 bytes).
        let mut bytes = write_zip(&[("a/data/0", &data)], false, true);
        bytes[38 + 100] ^= 0x04;
        let zip = ZipArchive::parse(&bytes).unwrap();
        let e = zip.entry("a/data/0").unwrap();
        let err = zip.stored_range(e).unwrap_err();
        assert!(
            err.contains("'a/data/0'") && err.contains("CRC-32"),
            "{err}"
        );
        assert!(zip.read(e).unwrap_err().contains("CRC-32"));
        // Written without CRCs (torch.serialization.set_crc32_options(False)): not checked.
        let mut bytes = write_zip(&[("a/data/0", &data)], false, false);
        bytes[38 + 100] ^= 0x04;
        let zip = ZipArchive::parse(&bytes).unwrap();
        let e = zip.entry("a/data/0").unwrap();
        assert_eq!(zip.stored_range(e).unwrap(), Some((38, 338)));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = stored_zip(&[("a/data.pkl", b"hello world"), ("a/data/0", &[7; 40])]);
        for len in 0..bytes.len() {
            if let Ok(zip) = ZipArchive::parse(&bytes[..len]) {
                for e in zip.entries() {
                    let _ = zip.read(e);
                }
            }
        }
    }
}
