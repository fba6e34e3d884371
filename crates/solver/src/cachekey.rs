//! Cache keys: each op digests its own definition and the keys of its inputs; local sources add
//! a digest of the content they select. Nothing about a key depends on when or where things
//! ran: not mtimes, inode numbers, the checkout path, or the order of a directory listing.

use kiln_patterns::PatternMatcher;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A blake3 cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Builds a key from labelled parts, each length-prefixed so that no two sequences of parts
/// hash alike.
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    pub fn new(kind: &str) -> KeyBuilder {
        let mut b = KeyBuilder {
            hasher: blake3::Hasher::new(),
        };
        b.bytes(b"kiln-cache-key-v1");
        b.bytes(kind.as_bytes());
        b
    }

    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        self.hasher.update(&(data.len() as u64).to_le_bytes());
        self.hasher.update(data);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn key(&mut self, k: &CacheKey) -> &mut Self {
        self.bytes(&k.0)
    }

    pub fn finish(&self) -> CacheKey {
        CacheKey(*self.hasher.finalize().as_bytes())
    }
}

/// The digest of a tree and how much it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeDigest {
    pub key: CacheKey,
    /// Entries (files, directories, links) counted.
    pub entries: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// Digest of a directory tree as a COPY would see it: relative paths, types, permission bits,
/// file contents and symlink targets of every entry not excluded by `ignore`, in sorted order.
pub fn tree_digest(root: &Path, ignore: Option<&PatternMatcher>) -> io::Result<TreeDigest> {
    let mut walker = Walker {
        b: KeyBuilder::new("tree"),
        ignore,
        entries: 0,
        bytes: 0,
    };
    walker.walk(root, "")?;
    Ok(TreeDigest {
        key: walker.b.finish(),
        entries: walker.entries,
        bytes: walker.bytes,
    })
}

struct Walker<'a> {
    b: KeyBuilder,
    ignore: Option<&'a PatternMatcher>,
    entries: u64,
    bytes: u64,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Path, rel: &str) -> io::Result<()> {
        let ignore = self.ignore;
        let mut names: Vec<_> = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path)?;
            let excluded = ignore.is_some_and(|m| m.matches(&rel_path));
            if excluded {
                if meta.is_dir() && ignore.is_some_and(|m| m.may_include_below(&rel_path)) {
                    self.walk(&path, &rel_path)?;
                }
                continue;
            }
            self.entries += 1;
            let b = &mut self.b;
            b.str(&rel_path);
            b.bytes(&(meta.permissions().mode()).to_le_bytes());
            let ft = meta.file_type();
            if ft.is_symlink() {
                b.str("symlink");
                b.str(&fs::read_link(&path)?.to_string_lossy());
            } else if ft.is_dir() {
                b.str("dir");
                self.walk(&path, &rel_path)?;
            } else if ft.is_file() {
                b.str("file");
                b.bytes(&file_digest(&path)?);
                self.bytes += meta.len();
            } else {
                b.str("special");
                b.bytes(&meta.rdev().to_le_bytes());
            }
        }
        Ok(())
    }
}

fn file_digest(path: &Path) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_delimited() {
        let a = KeyBuilder::new("k").str("ab").str("c").finish();
        let b = KeyBuilder::new("k").str("a").str("bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn tree_digest_ignores_mtimes_and_location_but_not_content() {
        let t1 = tempfile::tempdir().unwrap();
        let t2 = tempfile::tempdir().unwrap();
        for t in [&t1, &t2] {
            fs::create_dir(t.path().join("d")).unwrap();
            fs::write(t.path().join("d/f"), "x").unwrap();
            fs::write(t.path().join("log.tmp"), "noise").unwrap();
        }
        fs::write(t2.path().join("log.tmp"), "other noise").unwrap();
        let ignore = PatternMatcher::new(["*.tmp"]).unwrap();
        let k1 = tree_digest(t1.path(), Some(&ignore)).unwrap();
        let k2 = tree_digest(t2.path(), Some(&ignore)).unwrap();
        assert_eq!((k1.entries, k1.bytes), (2, 1));
        assert_eq!(k1, k2, "ignored files and the location don't count");
        fs::write(t2.path().join("d/f"), "y").unwrap();
        assert_ne!(k1, tree_digest(t2.path(), Some(&ignore)).unwrap());
    }
}
