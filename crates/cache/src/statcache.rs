//! The stat cache of a local context, like git's index: for each file already hashed, the
//! stat fields it had (size, mtime, ctime, inode, device, mode) and the blake3 hash of its
//! content. A file whose stat fields all match is not read again; anything else is re-read.
//! The cache only saves reads: hashes are content hashes, so a key computed with it is the key
//! computed without it.
//!
//! Racy entries: a file changed within the file system's timestamp granularity of being hashed
//! can change again without its stat fields changing (git's "racily clean" entries). An entry
//! is therefore only recorded when its mtime and ctime are older than `racy_window` (1 s by
//! default) at the moment its content has been read, and on load entries whose mtime or ctime
//! falls in (or after) the second the cache file was written are dropped, as git does with its
//! index's own mtime.
//!
//! One file per context: `<state root>/statcache/<blake3(absolute context path)>.bin`, written
//! to a temporary file and renamed over the old one, so concurrent kiln processes never see a
//! torn file; the last writer wins (the loser's new entries are only lost work). A file that
//! fails its checksum, names another context or has another version is ignored.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"KILNSTC2";
const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(1);

/// The stat fields an entry is trusted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFields {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
}

impl StatFields {
    pub fn of(meta: &Metadata) -> StatFields {
        StatFields {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
            mode: meta.mode(),
        }
    }

    /// The later of mtime and ctime.
    fn changed_ns(&self) -> i64 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    stat: StatFields,
    hash: [u8; 32],
    /// The caller's digest of the file's xattrs, once asked for ([`StatCache::xattrs_digest`]):
    /// setting an xattr changes the ctime, so the same stat fields mean the same xattrs.
    xattrs: Option<[u8; 32]>,
    /// Looked up or recorded by this process.
    used: bool,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Vec<u8>, Entry>,
    dirty: bool,
    /// Directory listings seen by this process (never saved), by directory relative to the
    /// context: the walk that keys the context records them, so the walks that select what a
    /// COPY reads don't list and stat the same directories again.
    listings: HashMap<PathBuf, Arc<Listing>>,
}

/// The entries of one directory, sorted by name, each with its `symlink_metadata`.
pub type Listing = Vec<(OsString, Metadata)>;

/// How much work the cache saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCacheStats {
    /// Files whose hash came from the cache.
    pub hits: u64,
    /// Files that were read and hashed.
    pub reads: u64,
    /// Bytes read to hash them.
    pub bytes_read: u64,
}

/// The directory of the stat caches under the state root.
pub(crate) const DIR: &str = "statcache";

/// The stat cache of one context directory. Shareable between threads (`&self` everywhere).
pub struct StatCache {
    /// Where it is saved; `None` keeps it in memory.
    file: Option<PathBuf>,
    context: PathBuf,
    racy_window: Duration,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    reads: AtomicU64,
    bytes_read: AtomicU64,
}

impl std::fmt::Debug for StatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatCache")
            .field("context", &self.context)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StatCache {
    /// The stat cache of the context directory `context` kept under the state root `root`.
    /// A missing, unreadable or damaged cache file gives an empty cache: it only costs reads.
    pub fn open(root: &Path, context: &Path) -> StatCache {
        let context = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let name = blake3::hash(context.as_os_str().as_bytes()).to_hex();
        let file = root.join(DIR).join(format!("{name}.bin"));
        let entries = fs::read(&file)
            .ok()
            .and_then(|data| decode(&data, &context))
            .unwrap_or_default();
        let mut cache = StatCache::in_memory(&context);
        cache.file = Some(file);
        cache.inner.get_mut().expect("not poisoned").entries = entries;
        cache
    }

    /// A cache that is never saved (`save` does nothing).
    pub fn in_memory(context: &Path) -> StatCache {
        StatCache {
            file: None,
            context: context.to_path_buf(),
            racy_window: DEFAULT_RACY_WINDOW,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// How long after its last change a file's stat fields are trusted (1 s by default; tests
    /// may shorten it).
    pub fn with_racy_window(mut self, window: Duration) -> StatCache {
        self.racy_window = window;
        self
    }

    /// Where the cache is saved, if anywhere.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The blake3 hash of the content of the regular file `abs`, known as `rel` (relative to
    /// the context) and whose `symlink_metadata` is `meta` (taken before this call). Comes
    /// from the cache when every stat field matches the entry of `rel`, else the file is
    /// read and the entry recorded (unless racy).
    pub fn hash_file(&self, rel: &Path, abs: &Path, meta: &Metadata) -> io::Result<[u8; 32]> {
        let stat = StatFields::of(meta);
        let key = rel.as_os_str().as_bytes();
        {
            let mut inner = self.lock();
            if let Some(entry) = inner.entries.get_mut(key) {
                if entry.stat == stat {
                    entry.used = true;
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(entry.hash);
                }
            }
        }
        let (hash, n) = read_hash(abs)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        let now = now_ns();
        let racy = stat.changed_ns() >= now - self.racy_window.as_nanos() as i64;
        let mut inner = self.lock();
        if racy {
            if inner.entries.remove(key).is_some() {
                inner.dirty = true;
            }
        } else {
            let entry = Entry {
                stat,
                hash,
                xattrs: None,
                used: true,
            };
            inner.entries.insert(key.to_vec(), entry);
            inner.dirty = true;
        }
        Ok(hash)
    }

    /// A digest of the xattrs of the file known as `rel` whose `symlink_metadata` is `meta`:
    /// remembered with the file's entry (made by [`StatCache::hash_file`]) while its stat
    /// fields stay the same, else `compute`d. Saves one `listxattr` per unchanged file.
    pub fn xattrs_digest(
        &self,
        rel: &Path,
        meta: &Metadata,
        compute: impl FnOnce() -> [u8; 32],
    ) -> [u8; 32] {
        let stat = StatFields::of(meta);
        let key = rel.as_os_str().as_bytes();
        if let Some(digest) = self
            .lock()
            .entries
            .get(key)
            .filter(|e| e.stat == stat)
            .and_then(|e| e.xattrs)
        {
            return digest;
        }
        let digest = compute();
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(key).filter(|e| e.stat == stat) {
            entry.xattrs = Some(digest);
            inner.dirty = true;
        }
        digest
    }

    /// Remembers, for this process, the listing of the context directory `rel`; returns it.
    pub fn record_listing(&self, rel: &Path, listing: Listing) -> Arc<Listing> {
        let listing = Arc::new(listing);
        self.lock().listings.insert(normal(rel), listing.clone());
        listing
    }

    /// The listing of the context directory `rel` that this process recorded, if any.
    pub fn listing(&self, rel: &Path) -> Option<Arc<Listing>> {
        self.lock().listings.get(&normal(rel)).cloned()
    }

    /// Reads and hits so far.
    pub fn stats(&self) -> StatCacheStats {
        StatCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache if anything changed (temporary file + rename; last writer wins).
    /// Entries this process did not use are kept only while their file still has the same
    /// stat fields, so deleted and changed files leave the cache.
    pub fn save(&self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(());
        }
        let context = &self.context;
        inner.entries.retain(|rel, e| {
            e.used
                || fs::symlink_metadata(context.join(std::ffi::OsStr::from_bytes(rel)))
                    .is_ok_and(|m| StatFields::of(&m) == e.stat)
        });
        let data = encode(&inner.entries, context, now_ns());
        let dir = file.parent().expect("the cache file has a directory");
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&data)?;
        tmp.persist(file).map_err(|e| e.error)?;
        inner.dirty = false;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `rel` without `.` components, so `./a`, `a/.` and `a` name one directory.
fn normal(rel: &Path) -> PathBuf {
    rel.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// The blake3 hash of a file's content, and its length.
pub fn read_hash(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((*h.finalize().as_bytes(), total))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn encode(entries: &HashMap<Vec<u8>, Entry>, context: &Path, saved_at_ns: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 100);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&saved_at_ns.to_le_bytes());
    let ctx = context.as_os_str().as_bytes();
    out.extend_from_slice(&(ctx.len() as u32).to_le_bytes());
    out.extend_from_slice(ctx);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (rel, e) in entries {
        out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        out.extend_from_slice(rel);
        out.extend_from_slice(&e.stat.size.to_le_bytes());
        out.extend_from_slice(&e.stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.ino.to_le_bytes());
        out.extend_from_slice(&e.stat.dev.to_le_bytes());
        out.extend_from_slice(&e.stat.mode.to_le_bytes());
        out.extend_from_slice(&e.hash);
        match &e.xattrs {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(d);
            }
            None => out.push(0),
        }
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Parses a cache file; `None` when it is damaged or belongs to another context.
fn decode(data: &[u8], context: &Path) -> Option<HashMap<Vec<u8>, Entry>> {
    let body = data.get(..data.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != &data[body.len()..] {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC {
        return None;
    }
    let saved_at_ns = r.i64()?;
    let ctx_len = r.u32()? as usize;
    if r.take(ctx_len)? != context.as_os_str().as_bytes() {
        return None;
    }
    // git's racy check against the index's mtime: whatever changed in the second the file
    // was written (or later) is not trusted.
    let saved_sec = saved_at_ns.div_euclid(1_000_000_000);
    let count = r.u64()?;
    let mut entries = HashMap::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let rel_len = r.u32()? as usize;
        let rel = r.take(rel_len)?.to_vec();
        let stat = StatFields {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            ino: r.u64()?,
            dev: r.u64()?,
            mode: r.u32()?,
        };
        let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
        let xattrs = match r.take(1)?[0] {
            0 => None,
            1 => Some(r.take(32)?.try_into().ok()?),
            _ => return None,
        };
        if stat.changed_ns().div_euclid(1_000_000_000) >= saved_sec {
            continue;
        }
        let used = false;
        entries.insert(
            rel,
            Entry {
                stat,
                hash,
                xattrs,
                used,
            },
        );
    }
    r.0.is_empty().then_some(entries)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;

    /// A cache that trusts files changed more than 0 s ago, so tests need not wait.
    fn quick(root: &Path, ctx: &Path) -> StatCache {
        StatCache::open(root, ctx).with_racy_window(Duration::ZERO)
    }

    fn hash(c: &StatCache, ctx: &Path, rel: &str) -> [u8; 32] {
        let abs = ctx.join(rel);
        let meta = fs::symlink_metadata(&abs).unwrap();
        c.hash_file(Path::new(rel), &abs, &meta).unwrap()
    }

    fn content(data: &str) -> [u8; 32] {
        *blake3::hash(data.as_bytes()).as_bytes()
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let (root, ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(ctx.path().join("a"), "hello").unwrap();
        let c = quick(root.path(), ctx.path());
        assert_eq!(hash(&c, ctx.path(), "a"), content("hello"));
        assert_eq!(hash(&c, ctx.path(), "a"), content("hello"));
        assert_eq!((c.stats().reads, c.stats().hits), (1, 1));
        c.save().unwrap();
        // Another process: the saved entry is trusted once the file is older than the save.
        std::thread::sleep(Duration::from_millis(1100));
        c.lock().dirty = true;
        c.save().unwrap();
        let c2 = quick(root.path(), ctx.path());
        assert_eq!(c2.len(), 1);
        assert_eq!(hash(&c2, ctx.path(), "a"), content("hello"));
        assert_eq!((c2.stats().reads, c2.stats().hits), (0, 1));
        // Nothing changed: save doesn't rewrite the file.
        let file = c2.file().unwrap().to_path_buf();
        let before = fs::metadata(&file).unwrap().modified().unwrap();
        c2.save().unwrap();
        assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), before);
    }

    #[test]
    fn xattr_digests_are_kept_until_the_file_changes() {
        let (root, ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let path = ctx.path().join("a");
        fs::write(&path, "x").unwrap();
        let c = quick(root.path(), ctx.path());
        let digest = |c: &StatCache, value: u8, calls: &mut u32| {
            let meta = fs::symlink_metadata(&path).unwrap();
            c.xattrs_digest(Path::new("a"), &meta, || {
                *calls += 1;
                [value; 32]
            })
        };
        let mut calls = 0;
        // No entry yet: computed every time, nothing remembered.
        assert_eq!(digest(&c, 1, &mut calls), [1; 32]);
        hash(&c, ctx.path(), "a");
        assert_eq!(digest(&c, 2, &mut calls), [2; 32]);
        assert_eq!(digest(&c, 3, &mut calls), [2; 32]);
        assert_eq!(calls, 2);
        // Saved and loaded with the entry.
        std::thread::sleep(Duration::from_millis(1100));
        c.lock().dirty = true;
        c.save().unwrap();
        let c2 = quick(root.path(), ctx.path());
        assert_eq!(digest(&c2, 4, &mut calls), [2; 32]);
        // Setting an xattr changes the ctime: computed again.
        std::thread::sleep(Duration::from_millis(20));
        rustix::fs::setxattr(&path, "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
        hash(&c2, ctx.path(), "a");
        assert_eq!(digest(&c2, 5, &mut calls), [5; 32]);
    }

    #[test]
    fn same_size_and_mtime_but_new_ctime_is_read_again() {
        let ctx = tempfile::tempdir().unwrap();
        let path = ctx.path().join("a");
        fs::write(&path, "aaaa").unwrap();
        let c = StatCache::in_memory(ctx.path()).with_racy_window(Duration::ZERO);
        assert_eq!(hash(&c, ctx.path(), "a"), content("aaaa"));
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // Same size, mtime put back: only ctime (and the content) differ.
        fs::write(&path, "bbbb").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(hash(&c, ctx.path(), "a"), content("bbbb"));
        assert_eq!((c.stats().reads, c.stats().hits), (2, 0));
        // A chmod and back changes only ctime: read again too.
        std::thread::sleep(Duration::from_millis(20));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        hash(&c, ctx.path(), "a");
        assert_eq!(c.stats().reads, 3);
    }

    #[test]
    fn racy_files_are_not_trusted() {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("a"), "x").unwrap();
        // Default window: a file changed just now is hashed but not recorded.
        let c = StatCache::in_memory(ctx.path());
        hash(&c, ctx.path(), "a");
        hash(&c, ctx.path(), "a");
        assert_eq!((c.stats().reads, c.stats().hits, c.len()), (2, 0, 0));
        std::thread::sleep(Duration::from_millis(1100));
        hash(&c, ctx.path(), "a");
        hash(&c, ctx.path(), "a");
        assert_eq!((c.stats().reads, c.stats().hits, c.len()), (3, 1, 1));
    }

    #[test]
    fn entries_changed_in_the_second_of_the_save_are_dropped_on_load() {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("a"), "x").unwrap();
        let c = StatCache::in_memory(ctx.path()).with_racy_window(Duration::ZERO);
        hash(&c, ctx.path(), "a");
        let entries = c.lock().entries.clone();
        let changed = entries.values().next().unwrap().stat.changed_ns();
        let second = changed.div_euclid(1_000_000_000) * 1_000_000_000;
        // Written in the same second as the file changed (or before): git's racy rule drops it.
        for saved_at in [second, second + 999_999_999, changed - 5_000_000_000] {
            let data = encode(&entries, ctx.path(), saved_at);
            assert!(decode(&data, ctx.path()).unwrap().is_empty(), "{saved_at}");
        }
        let data = encode(&entries, ctx.path(), second + 1_000_000_000);
        assert_eq!(decode(&data, ctx.path()).unwrap().len(), 1);
    }

    #[test]
    fn damaged_or_foreign_files_give_an_empty_cache() {
        let (root, ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(ctx.path().join("a"), "x").unwrap();
        let c = quick(root.path(), ctx.path());
        hash(&c, ctx.path(), "a");
        let mut entries = c.lock().entries.clone();
        for e in entries.values_mut() {
            e.stat.ctime_ns = 0;
            e.stat.mtime_ns = 0;
        }
        let canon = fs::canonicalize(ctx.path()).unwrap();
        let good = encode(&entries, &canon, now_ns());
        assert_eq!(decode(&good, &canon).unwrap().len(), 1);
        assert!(decode(&good, Path::new("/elsewhere")).is_none());
        for cut in [0, 1, 8, good.len() / 2, good.len() - 1] {
            assert!(decode(&good[..cut], &canon).is_none(), "{cut}");
        }
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        assert!(decode(&flipped, &canon).is_none());
        let file = c.file().unwrap();
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, b"garbage").unwrap();
        assert!(quick(root.path(), ctx.path()).is_empty());
    }

    #[test]
    fn save_drops_entries_of_deleted_files() {
        let (root, ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(ctx.path().join("a"), "x").unwrap();
        fs::write(ctx.path().join("b"), "y").unwrap();
        let c = quick(root.path(), ctx.path());
        hash(&c, ctx.path(), "a");
        hash(&c, ctx.path(), "b");
        for e in c.lock().entries.values_mut() {
            e.used = false;
        }
        fs::remove_file(ctx.path().join("b")).unwrap();
        c.lock().dirty = true;
        c.save().unwrap();
        assert_eq!(c.len(), 1);
    }
}
