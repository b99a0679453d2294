//! Writing MONAI's architecture file: what MONAI's search script saves with `torch.save`, a
//! dict of int64 numpy arrays `node_a`, `arch_code_a` and `arch_code_c`, in a `torch.save`
//! zip archive (pickle protocol 2, as torch writes it). Load it in Python with
//! `torch.load(path, weights_only=False)`, as MONAI's own files need.

use std::io::Write;
use std::path::Path;

use crate::arch::ArchCode;

/// Serialises a pickle protocol-2 stream of `{name: int64 array}`.
struct Pickler {
    out: Vec<u8>,
    memo: u32,
}

impl Pickler {
    fn new() -> Self {
        Self {
            out: vec![0x80, 2],
            memo: 0,
        }
    }

    fn put(&mut self) {
        // BINPUT / LONG_BINPUT: torch's pickler memoises everything; readers tolerate it.
        if self.memo < 256 {
            self.out.extend([b'q', self.memo as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend(self.memo.to_le_bytes());
        }
        self.memo += 1;
    }

    fn text(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
        self.put();
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=255 => self.out.extend([b'K', v as u8]),
            _ => {
                self.out.push(b'J');
                self.out.extend((v as i32).to_le_bytes());
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend(format!("{module}\n{name}\n").as_bytes());
        self.put();
    }

    /// Protocol 2 has no bytes opcode: `_codecs.encode(latin1 text, 'latin1')`.
    fn bytes(&mut self, data: &[u8]) {
        self.global("_codecs", "encode");
        let text: String = data.iter().map(|&b| b as char).collect();
        self.text(&text);
        self.text("latin1");
        self.out.push(0x86); // TUPLE2
        self.put();
        self.out.push(b'R');
        self.put();
    }

    /// `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')` then `BUILD` with
    /// `(1, shape, dtype('<i8'), False, data)`.
    fn array(&mut self, shape: &[usize], values: &[i64]) {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.int(0);
        self.out.push(0x85); // TUPLE1
        self.put();
        self.bytes(b"b");
        self.out.push(0x87); // TUPLE3
        self.put();
        self.out.push(b'R');
        self.put();

        self.out.push(b'(');
        self.int(1);
        self.out.push(b'(');
        for &d in shape {
            self.int(d as i64);
        }
        self.out.push(b't');
        self.put();
        self.global("numpy", "dtype");
        self.text("i8");
        self.out.extend([0x89, 0x88, 0x87]); // False, True, TUPLE3
        self.put();
        self.out.push(b'R');
        self.put();
        self.out.push(b'(');
        self.int(3);
        self.text("<");
        self.out.extend([b'N', b'N', b'N']);
        self.int(-1);
        self.int(-1);
        self.int(0);
        self.out.push(b't');
        self.put();
        self.out.push(b'b');
        self.out.push(0x89); // not Fortran order
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(&data);
        self.out.push(b't');
        self.put();
        self.out.push(b'b');
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }
}

/// The pickle of MONAI's architecture dict for `code`.
fn arch_pickle(code: &ArchCode) -> Vec<u8> {
    let (a, c) = code.to_dints_matrices();
    let node_a = code.node_a();
    let layers = code.num_layers();
    let edges = code.num_edges();
    let flat = |m: &[Vec<u8>]| -> Vec<i64> { m.iter().flatten().map(|&v| v as i64).collect() };
    let node: Vec<i64> = node_a.iter().flatten().map(|&b| b as i64).collect();

    let mut p = Pickler::new();
    p.out.push(b'}');
    p.put();
    p.out.push(b'(');
    p.text("node_a");
    p.array(&[layers + 1, code.num_depths()], &node);
    p.text("arch_code_a");
    p.array(&[layers, edges], &flat(&a));
    p.text("arch_code_c");
    p.array(&[layers, edges], &flat(&c));
    p.out.push(b'u');
    p.finish()
}

/// A stored (uncompressed) zip archive, as `torch.save` writes one.
fn zip_stored(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let crc = crc.sum();
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes()); // version made by
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend([0u8; 8]); // flags, method 0, time, date
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                // Comment length, start disk, internal and external attributes.
                h.extend([0u8; 10]);
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(*data);
        central.extend(header(0x0201_4b50, true));
    }
    let dir_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(dir_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// The bytes of MONAI's architecture file for `code`.
pub fn arch_pth_bytes(code: &ArchCode) -> Vec<u8> {
    let pickle = arch_pickle(code);
    zip_stored(&[
        ("arch/data.pkl", &pickle),
        ("arch/byteorder", b"little"),
        ("arch/version", b"3\n"),
    ])
}

/// Writes MONAI's architecture file for `code` atomically.
pub fn write_arch_pth(path: &Path, code: &ArchCode) -> std::io::Result<()> {
    let mut file = crate::fsutil::AtomicFile::create(path)?;
    file.write_all(&arch_pth_bytes(code))?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{SearchSpace, preset};

    #[test]
    fn written_arch_file_reads_back() {
        let code = preset("dints-paper", &SearchSpace::dints(12, 4)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arch.pth");
        write_arch_pth(&path, &code).unwrap();
        let back = super::super::read_arch_pth(&path).unwrap();
        assert_eq!(back, code);
    }
}
