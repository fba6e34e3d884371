//! One tar entry as kiln writes it: a ustar header, preceded by a PAX extended header for what
//! ustar cannot hold (names or link targets over 100 bytes, sizes of 8 GiB and more, large
//! ids, xattrs as `SCHILY.xattr.*`). This is the format BuildKit and containerd write (Go's
//! `archive/tar`). Names are stored as given, byte for byte: no `./`, no rewriting.
//!
//! Headers carry numeric ids only (uname/gname empty) and only an mtime, no atime or ctime.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use tar::{EntryType, Header};

const USTAR_NAME_MAX: usize = 100;
const USTAR_ID_MAX: u64 = 0o7_777_777;
const USTAR_SIZE_MAX: u64 = 0o77_777_777_777;
/// Tar's record size: headers and data are padded to it.
const BLOCK: u64 = 512;

/// A header under construction plus the PAX records it needs.
pub(crate) struct TarEntry {
    header: Header,
    pax: BTreeMap<String, Vec<u8>>,
    size: u64,
}

impl TarEntry {
    /// An entry of `kind` named `name` (directories should end in `/`).
    pub(crate) fn new(kind: EntryType, name: &[u8]) -> TarEntry {
        let mut header = Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(0);
        let mut entry = TarEntry {
            header,
            pax: BTreeMap::new(),
            size: 0,
        };
        entry.set_name(name);
        entry
    }

    fn set_name(&mut self, name: &[u8]) {
        let field = &mut self.header.as_old_mut().name;
        let n = name.len().min(USTAR_NAME_MAX);
        field[..n].copy_from_slice(&name[..n]);
        if name.len() > USTAR_NAME_MAX {
            self.pax.insert("path".into(), name.to_vec());
        }
    }

    /// Sets the target of a symlink or hardlink.
    pub(crate) fn link(mut self, target: &[u8]) -> TarEntry {
        let field = &mut self.header.as_old_mut().linkname;
        let n = target.len().min(USTAR_NAME_MAX);
        field[..n].copy_from_slice(&target[..n]);
        if target.len() > USTAR_NAME_MAX {
            self.pax.insert("linkpath".into(), target.to_vec());
        }
        self
    }

    /// Sets permission bits (incl. setuid/setgid/sticky), owner and mtime (negative → 0).
    pub(crate) fn attrs(mut self, mode: u32, uid: u64, gid: u64, mtime: i64) -> TarEntry {
        self.header.set_mode(mode & 0o7777);
        self.header.set_mtime(mtime.max(0) as u64);
        let uid = self.numeric("uid", uid, USTAR_ID_MAX);
        self.header.set_uid(uid);
        let gid = self.numeric("gid", gid, USTAR_ID_MAX);
        self.header.set_gid(gid);
        self
    }

    /// The value for a numeric ustar field: `value` itself if it fits, else 0 plus a PAX record.
    fn numeric(&mut self, key: &str, value: u64, max: u64) -> u64 {
        if value <= max {
            return value;
        }
        self.pax.insert(key.into(), value.to_string().into_bytes());
        0
    }

    /// Sets the size of the data that follows the header.
    pub(crate) fn size(mut self, size: u64) -> TarEntry {
        let field = self.numeric("size", size, USTAR_SIZE_MAX);
        self.header.set_size(field);
        self.size = size;
        self
    }

    /// Sets the device numbers of a character or block device.
    pub(crate) fn device(mut self, major: u32, minor: u32) -> io::Result<TarEntry> {
        self.header.set_device_major(major)?;
        self.header.set_device_minor(minor)?;
        Ok(self)
    }

    /// Adds an extended attribute as a `SCHILY.xattr.NAME` PAX record.
    pub(crate) fn xattr(&mut self, name: &str, value: Vec<u8>) {
        self.pax.insert(format!("SCHILY.xattr.{name}"), value);
    }

    /// Writes the PAX header, if any, and the ustar header.
    fn write_header<W: Write>(&mut self, tar: &mut tar::Builder<W>) -> io::Result<()> {
        if !self.pax.is_empty() {
            tar.append_pax_extensions(self.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        self.header.set_cksum();
        tar.get_mut().write_all(self.header.as_bytes())
    }

    /// Writes the entry followed by its data: exactly [`TarEntry::size`] bytes read from `data`.
    pub(crate) fn write<W: CopyFrom>(
        mut self,
        tar: &mut tar::Builder<W>,
        mut data: impl Read,
    ) -> io::Result<()> {
        self.write_header(tar)?;
        let out = tar.get_mut();
        out.copy_from(&mut data, self.size)?;
        let padding = (BLOCK - self.size % BLOCK) % BLOCK;
        out.write_all(&[0; BLOCK as usize][..padding as usize])
    }
}

/// A tar destination that takes an entry's data from a reader itself, so it can read a file
/// straight into its own buffer rather than through an intermediate one.
pub(crate) trait CopyFrom: Write {
    /// Copies exactly `len` bytes of `src` (see [`read_data`]).
    fn copy_from(&mut self, src: &mut dyn Read, len: u64) -> io::Result<()> {
        let mut buf = vec![0; len.min(1 << 16) as usize];
        let mut remaining = len;
        while remaining > 0 {
            let n = read_data(src, &mut buf, remaining)?;
            self.write_all(&buf[..n])?;
            remaining -= n as u64;
        }
        Ok(())
    }
}

impl CopyFrom for Vec<u8> {}
impl<W: Write + ?Sized> CopyFrom for &mut W {}

fn ended_early(remaining: u64) -> io::Error {
    let message =
        format!("the file ended {remaining} bytes early; was it changed while being archived?");
    io::Error::new(io::ErrorKind::UnexpectedEof, message)
}

/// Reads some of the `remaining` bytes of an entry's data into `buf`: fails if the source ends
/// early (a file that shrank while being archived); never reads past `remaining`, so a file
/// that grew is cut at its archived size and the tar stays well formed.
pub(crate) fn read_data(src: &mut dyn Read, buf: &mut [u8], remaining: u64) -> io::Result<usize> {
    let max = buf.len().min(remaining.try_into().unwrap_or(usize::MAX));
    loop {
        match src.read(&mut buf[..max]) {
            Ok(0) if max > 0 => return Err(ended_early(remaining)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_one(entry: TarEntry, data: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        entry.size(data.len() as u64).write(&mut tar, data).unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn long_names_go_to_pax_records() {
        let long = format!("{}/file", "d".repeat(150));
        let target = format!("{}/target", "t".repeat(120));
        let entry = TarEntry::new(EntryType::Symlink, long.as_bytes())
            .link(target.as_bytes())
            .attrs(0o777, 3_000_000, 7, 5);
        let bytes = write_one(entry, b"");
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), long.as_bytes());
        assert_eq!(e.link_name_bytes().unwrap().as_ref(), target.as_bytes());
        assert_eq!(e.header().uid().unwrap(), 3_000_000);
        assert_eq!(e.header().gid().unwrap(), 7);
        let keys: Vec<String> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| r.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["linkpath", "path", "uid"]);
    }

    #[test]
    fn short_entries_are_plain_ustar() {
        let entry = TarEntry::new(EntryType::Regular, b"etc/passwd").attrs(0o4755, 0, 0, 1);
        let bytes = write_one(entry, b"root:x:0:0\n");
        assert_eq!(&bytes[257..265], b"ustar\x0000");
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        assert!(e.pax_extensions().unwrap().is_none());
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "root:x:0:0\n");
    }

    #[test]
    fn sizes_of_8_gib_and_more_go_to_a_pax_record() {
        let size = 9 << 30;
        let mut tar = tar::Builder::new(Vec::new());
        let mut entry = TarEntry::new(EntryType::Regular, b"big").size(size);
        entry.write_header(&mut tar).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.size(), size);
        let pax: Vec<(String, String)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().into(), r.value().unwrap().into())
            })
            .collect();
        assert_eq!(pax, [("size".to_string(), size.to_string())]);
        // Just under the limit is plain ustar.
        let small = TarEntry::new(EntryType::Regular, b"f").size(USTAR_SIZE_MAX);
        assert!(small.pax.is_empty());
    }

    #[test]
    fn data_is_padded_to_the_record_size() {
        for len in [0, 1, 511, 512, 513] {
            let entry = TarEntry::new(EntryType::Regular, b"f").attrs(0o644, 0, 0, 0);
            let data = vec![b'x'; len];
            let bytes = write_one(entry, &data);
            // Header, padded data, end of archive.
            assert_eq!(bytes.len(), 512 + len.div_ceil(512) * 512 + 1024, "{len}");
            let mut ar = tar::Archive::new(&bytes[..]);
            let mut e = ar.entries().unwrap().next().unwrap().unwrap();
            let mut back = Vec::new();
            e.read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn a_growing_source_is_cut_at_its_size() {
        let mut tar = tar::Builder::new(Vec::new());
        let entry = TarEntry::new(EntryType::Regular, b"f").size(3);
        entry.write(&mut tar, &b"abcdef"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        assert_eq!(bytes.len(), 512 + 512 + 1024);
        assert_eq!(&bytes[512..516], b"abc\0");
    }

    #[test]
    fn a_short_source_is_an_error() {
        let mut tar = tar::Builder::new(Vec::new());
        let entry = TarEntry::new(EntryType::Regular, b"f").size(10);
        let err = entry.write(&mut tar, &b"abc"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
