//! Cache mounts (`RUN --mount=type=cache`): directories that outlive builds, kept in the state
//! directory under `cache-mounts/`, never part of a layer, and never part of a key (only the
//! mount's definition is, as in BuildKit).
//!
//! A cache is named by the mount's id, the stage it is seeded from (by key, with the path in
//! it) and the mode and owner of a fresh one; it lives in `cache-mounts/<digest of that>/`,
//! with an `id` file for humans and one or more instances `<n>/`, each a `lock` file and the
//! `data` the step sees. Whoever uses an instance holds a flock on its `lock`, which serialises
//! users across kiln processes as well as threads: `shared` users hold a shared lock on
//! instance 0; `locked` users an exclusive lock on instance 0, so they wait for every other
//! user; `private` users an exclusive lock on the first instance that nobody holds, a new one
//! when all are in use. A fresh instance's `data` is made whole in `data.new` under the
//! exclusive lock, then renamed. [`prune`] empties them all; its caller holds the state
//! directory's exclusive lock, which no running build leaves free.

use crate::cachekey::KeyBuilder;
use crate::op::CacheSharing;
use crate::scheduler::Failure;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The directory of the state root that holds the caches.
const DIR: &str = "cache-mounts";

/// How often a step waiting for a cache mount looks at the cancel flag.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// What names a cache (see the module comment).
pub(crate) struct CacheName<'a> {
    pub id: &'a str,
    /// The key of the filesystem a fresh cache is seeded from, and the path in it.
    pub seed: Option<(String, &'a str)>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl CacheName<'_> {
    fn digest(&self) -> String {
        let mut b = KeyBuilder::new("cache-mount");
        b.str(self.id);
        if let Some((key, source)) = &self.seed {
            b.str(key).str(source);
        }
        b.str(&format!("{:o}:{}:{}", self.mode, self.uid, self.gid));
        b.finish().hex()
    }
}

/// The caches of one state directory.
pub(crate) struct CacheMounts {
    dir: PathBuf,
}

/// A cache instance in use: its directory, and the lock that says so.
pub(crate) struct Lease {
    pub data: PathBuf,
    _lock: Flock<File>,
}

impl CacheMounts {
    pub fn new(state_root: &Path) -> Self {
        CacheMounts {
            dir: state_root.join(DIR),
        }
    }

    /// An instance of the cache `name` for a step with the given sharing, made with `init`
    /// (which fills the empty directory it is given) when fresh. Waits for other users as the
    /// sharing mode says, saying so through `log`; a set `cancel` ends the wait.
    pub fn acquire(
        &self,
        name: &CacheName<'_>,
        sharing: CacheSharing,
        cancel: &AtomicBool,
        log: &dyn Fn(String),
        init: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<Lease, Failure> {
        let cache = self.dir.join(name.digest());
        fs::create_dir_all(&cache).map_err(|e| io_failure(&cache, e))?;
        let id_file = cache.join("id");
        if !id_file.exists() {
            fs::write(&id_file, name.id).map_err(|e| io_failure(&id_file, e))?;
        }
        let waiting = || log(format!("waiting for cache mount {} to be free", name.id));
        match sharing {
            CacheSharing::Locked => {
                let instance = Instance::open(&cache, 0)?;
                let lock = instance.wait(FlockArg::LockExclusiveNonblock, cancel, &waiting)?;
                instance.ensure(init)?;
                Ok(instance.lease(lock))
            }
            CacheSharing::Shared => {
                let instance = Instance::open(&cache, 0)?;
                loop {
                    let lock = instance.wait(FlockArg::LockSharedNonblock, cancel, &waiting)?;
                    if instance.data.is_dir() {
                        return Ok(instance.lease(lock));
                    }
                    drop(lock);
                    // A fresh cache: whoever gets the exclusive lock makes it. The others look
                    // again rather than wait for it: the maker may already be using it, under
                    // a shared lock, for as long as its step runs.
                    match Flock::lock(instance.lock_file()?, FlockArg::LockExclusiveNonblock) {
                        Ok(lock) => {
                            instance.ensure(init)?;
                            drop(lock);
                        }
                        Err((_, Errno::EWOULDBLOCK)) => {
                            if cancel.load(Ordering::SeqCst) {
                                return Err(Failure::Cancelled);
                            }
                            std::thread::sleep(WAIT_POLL);
                        }
                        Err((_, e)) => return Err(io_failure(&instance.lock, e.into())),
                    }
                }
            }
            CacheSharing::Private => {
                for n in 0.. {
                    let instance = Instance::open(&cache, n)?;
                    match Flock::lock(instance.lock_file()?, FlockArg::LockExclusiveNonblock) {
                        Ok(lock) => {
                            instance.ensure(init)?;
                            return Ok(instance.lease(lock));
                        }
                        Err((_, Errno::EWOULDBLOCK)) => continue,
                        Err((_, e)) => return Err(io_failure(&instance.lock, e.into())),
                    }
                }
                unreachable!("the instances are unbounded")
            }
        }
    }
}

/// One instance of a cache.
struct Instance {
    lock: PathBuf,
    data: PathBuf,
}

impl Instance {
    fn open(cache: &Path, n: usize) -> Result<Self, Failure> {
        let dir = cache.join(n.to_string());
        fs::create_dir_all(&dir).map_err(|e| io_failure(&dir, e))?;
        Ok(Instance {
            lock: dir.join("lock"),
            data: dir.join("data"),
        })
    }

    fn lock_file(&self) -> Result<File, Failure> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| io_failure(&self.lock, e))
    }

    /// Takes the (non-blocking) lock `arg`, retrying until it is free or `cancel` is set.
    fn wait(
        &self,
        arg: FlockArg,
        cancel: &AtomicBool,
        waiting: &dyn Fn(),
    ) -> Result<Flock<File>, Failure> {
        let mut file = self.lock_file()?;
        let mut said = false;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EWOULDBLOCK)) => file = f,
                Err((_, e)) => return Err(io_failure(&self.lock, e.into())),
            }
            if !said {
                waiting();
                said = true;
            }
            if cancel.load(Ordering::SeqCst) {
                return Err(Failure::Cancelled);
            }
            std::thread::sleep(WAIT_POLL);
        }
    }

    /// Makes `data` with `init` when missing; the caller holds the exclusive lock.
    fn ensure(&self, init: &dyn Fn(&Path) -> Result<(), String>) -> Result<(), Failure> {
        if self.data.is_dir() {
            return Ok(());
        }
        let new = self.data.with_file_name("data.new");
        if new.exists() {
            // Left by a build that stopped half-way.
            fs::remove_dir_all(&new).map_err(|e| io_failure(&new, e))?;
        }
        init(&new).map_err(|e| format!("preparing the cache mount: {e}"))?;
        fs::rename(&new, &self.data).map_err(|e| io_failure(&self.data, e))?;
        Ok(())
    }

    fn lease(self, lock: Flock<File>) -> Lease {
        Lease {
            data: self.data,
            _lock: lock,
        }
    }
}

fn io_failure(path: &Path, e: io::Error) -> Failure {
    Failure::Failed(format!("cache mount {}: {e}", path.display()))
}

/// A cache [`prune`] removed.
#[derive(Debug)]
pub struct PrunedCache {
    /// The mount's id (its target when the Dockerfile gave none).
    pub id: String,
    /// Bytes of the regular files its instances held.
    pub bytes: u64,
}

/// Removes every cache mount of the state directory `state_root` and says what it removed.
/// The caller must hold the state directory's exclusive lock, so that no build is using them.
pub fn prune(state_root: &Path) -> io::Result<Vec<PrunedCache>> {
    let dir = state_root.join(DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut pruned = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let id = fs::read_to_string(path.join("id")).unwrap_or_default();
        let mut bytes = 0;
        for instance in fs::read_dir(&path)? {
            let data = instance?.path().join("data");
            if data.is_dir() {
                bytes += kiln_cache::file_bytes(&data)?;
            }
        }
        fs::remove_dir_all(&path)?;
        pruned.push(PrunedCache { id, bytes });
    }
    pruned.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn name(id: &str) -> CacheName<'_> {
        CacheName {
            id,
            seed: None,
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }

    fn mkdir(p: &Path) -> Result<(), String> {
        fs::create_dir(p).map_err(|e| e.to_string())
    }

    #[test]
    fn shared_users_share_an_instance_private_ones_get_their_own() {
        let root = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(root.path());
        let no = AtomicBool::new(false);
        let a = caches
            .acquire(&name("c"), CacheSharing::Shared, &no, &|_| {}, &mkdir)
            .unwrap();
        let b = caches
            .acquire(&name("c"), CacheSharing::Shared, &no, &|_| {}, &mkdir)
            .unwrap();
        assert_eq!(a.data, b.data);
        let p = caches
            .acquire(&name("c"), CacheSharing::Private, &no, &|_| {}, &mkdir)
            .unwrap();
        assert_ne!(p.data, a.data, "instance 0 is in use");
        drop((a, b));
        let q = caches
            .acquire(&name("c"), CacheSharing::Private, &no, &|_| {}, &mkdir)
            .unwrap();
        assert_ne!(q.data, p.data);
        let other = caches
            .acquire(&name("d"), CacheSharing::Shared, &no, &|_| {}, &mkdir)
            .unwrap();
        assert_ne!(other.data.parent(), q.data.parent());
    }

    #[test]
    fn locked_waits_for_the_holder_and_cancel_ends_the_wait() {
        let root = tempfile::tempdir().unwrap();
        let caches = Arc::new(CacheMounts::new(root.path()));
        let no = AtomicBool::new(false);
        let held = caches
            .acquire(&name("c"), CacheSharing::Shared, &no, &|_| {}, &mkdir)
            .unwrap();
        let yes = AtomicBool::new(true);
        let waited = std::sync::Mutex::new(false);
        let r = caches.acquire(
            &name("c"),
            CacheSharing::Locked,
            &yes,
            &|_| *waited.lock().unwrap() = true,
            &mkdir,
        );
        assert!(matches!(r, Err(Failure::Cancelled)));
        assert!(*waited.lock().unwrap(), "the wait is reported");
        let t = {
            let caches = caches.clone();
            std::thread::spawn(move || {
                let no = AtomicBool::new(false);
                caches
                    .acquire(&name("c"), CacheSharing::Locked, &no, &|_| {}, &mkdir)
                    .map(|l| l.data)
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !t.is_finished(),
            "locked waits while a shared user holds it"
        );
        drop(held);
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn a_failed_init_leaves_no_data_and_prune_removes_everything() {
        let root = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(root.path());
        let no = AtomicBool::new(false);
        let fail = |p: &Path| {
            fs::create_dir(p).unwrap();
            Err("no".to_string())
        };
        assert!(caches
            .acquire(&name("c"), CacheSharing::Locked, &no, &|_| {}, &fail)
            .is_err());
        let lease = caches
            .acquire(&name("c"), CacheSharing::Locked, &no, &|_| {}, &mkdir)
            .unwrap();
        fs::write(lease.data.join("f"), "12345").unwrap();
        drop(lease);
        let pruned = prune(root.path()).unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!((pruned[0].id.as_str(), pruned[0].bytes), ("c", 5));
        assert!(fs::read_dir(root.path().join(DIR))
            .unwrap()
            .next()
            .is_none());
    }
}
