//! Cache keys: each op digests its own definition and the keys of its inputs; local sources add
//! a digest of the content they select. Nothing about a key depends on when or where things
//! ran: not mtimes, inode numbers, the checkout path, or the order of a directory listing.

use kiln_cache::statcache::{read_hash, Listing, StatCache};
use kiln_patterns::PatternMatcher;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

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
    tree_digest_cached(root, ignore, None)
}

/// [`tree_digest`], taking file hashes from `cache` (the stat cache of `root`) when their stat
/// fields haven't changed. The digest is the same with or without it.
pub fn tree_digest_cached(
    root: &Path,
    ignore: Option<&PatternMatcher>,
    cache: Option<&StatCache>,
) -> io::Result<TreeDigest> {
    let mut walker = Walker {
        b: KeyBuilder::new("tree"),
        ignore,
        cache,
        entries: 0,
        bytes: 0,
    };
    if let Some(cache) = cache {
        prefetch_listings(root, ignore, cache);
    }
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
    cache: Option<&'a StatCache>,
    entries: u64,
    bytes: u64,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Path, rel: &str) -> io::Result<()> {
        let ignore = self.ignore;
        let entries = match self.cache.and_then(|c| c.listing(Path::new(rel))) {
            Some(listing) => listing,
            None => match self.cache {
                Some(cache) => cache.record_listing(Path::new(rel), list(dir)?),
                None => Arc::new(list(dir)?),
            },
        };
        for (name, meta) in entries.iter() {
            let name = name.to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = dir.join(&name);
            let excluded = ignore.is_some_and(|m| m.excludes(&rel_path, meta.is_dir()));
            if excluded {
                if descends(ignore, &rel_path, meta, excluded) {
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
                let hash = match self.cache {
                    Some(cache) => cache.hash_file(Path::new(&rel_path), &path, meta)?,
                    None => read_hash(&path)?.0,
                };
                b.bytes(&hash);
                self.bytes += meta.len();
            } else {
                b.str("special");
                b.bytes(&meta.rdev().to_le_bytes());
            }
        }
        Ok(())
    }
}

/// The entries of `dir`, sorted by name, each with its metadata from the directory entry (a
/// stat relative to `dir`, not of a whole path), or why that stat failed (the entry went away
/// meanwhile, say).
pub(crate) fn read_dir_with_meta(dir: &Path) -> io::Result<Vec<(OsString, io::Result<Metadata>)>> {
    let mut entries = fs::read_dir(dir)?
        .map(|e| e.map(|e| (e.file_name(), e.metadata())))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// [`read_dir_with_meta`], failing if any entry can't be stat'ed.
fn list(dir: &Path) -> io::Result<Listing> {
    read_dir_with_meta(dir)?
        .into_iter()
        .map(|(name, meta)| Ok((name, meta?)))
        .collect()
}

/// Whether the walk goes into the entry `rel_path` (`excluded`: `.dockerignore` drops it).
fn descends(
    ignore: Option<&PatternMatcher>,
    rel_path: &str,
    meta: &Metadata,
    excluded: bool,
) -> bool {
    meta.is_dir() && (!excluded || ignore.is_some_and(|m| m.may_include_below(rel_path)))
}

/// Lists the directories the walk will enter into `cache`, several at a time (a stat per entry
/// is most of a warm walk's time). The walk then only reads the listings; whatever fails here
/// is left for the walk to list, and report, itself.
fn prefetch_listings(root: &Path, ignore: Option<&PatternMatcher>, cache: &StatCache) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let Ok(top) = list(root) else {
        return;
    };
    let subdirs = |rel: &str, entries: &Listing| -> Vec<String> {
        entries
            .iter()
            .filter_map(|(name, meta)| {
                let name = name.to_string_lossy();
                let rel_path = if rel.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel}/{name}")
                };
                let excluded = ignore.is_some_and(|m| m.excludes(&rel_path, meta.is_dir()));
                descends(ignore, &rel_path, meta, excluded).then_some(rel_path)
            })
            .collect()
    };
    let queue = std::sync::Mutex::new(subdirs("", &top));
    cache.record_listing(Path::new(""), top);
    if threads < 2 {
        return;
    }
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                // Depth-first per thread; a thread that runs dry takes another's queued work.
                let Some(rel) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    return;
                };
                let Ok(entries) = list(&root.join(&rel)) else {
                    continue;
                };
                let below = subdirs(&rel, &entries);
                cache.record_listing(Path::new(&rel), entries);
                queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(below);
            });
        }
    });
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
