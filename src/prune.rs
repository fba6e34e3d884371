//! `kiln prune`: removes the build cache of the state directory, as `docker builder prune -a`
//! does — the cache mounts (`RUN --mount=type=cache`), every step result, the step records and
//! stat caches, and the blobs and unpacked layers no image of the local image store needs —
//! and says what it removed. Local images stay whole (see `kiln_cache::prune`). Builds hold a
//! shared lock on the state directory for as long as they run, so prune takes it exclusively
//! (as a crash clean-up in [`crate::state`] does) and waits for running builds to finish
//! first; builds that start meanwhile wait for prune.

use anyhow::{Context, Result};
use kiln_cache::{ContentStore, SnapshotStore};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;

pub fn run(root: &Path) -> Result<()> {
    if !root.is_dir() {
        println!("nothing to prune: {} does not exist", root.display());
        return Ok(());
    }
    crate::state::claim(root)?;
    let _lock = lock_exclusive(root)?;
    // Alone on the root: what crashed builds left goes too.
    kiln_solver::executor::clean_up_after_crash(&root.join("executor"))
        .context("clearing what a crashed build left in the executor's state")?;
    let content = ContentStore::open(&root.join("content"))?;
    let snapshots = SnapshotStore::open(root)?;
    snapshots.clear_tmp()?;
    content.clear_ingest()?;
    let cache = kiln_cache::prune_build_cache(root, &content, &snapshots)
        .with_context(|| format!("removing the build cache of {}", root.display()))?;
    let pruned = kiln_solver::cachemount::prune(root)
        .with_context(|| format!("removing the cache mounts of {}", root.display()))?;
    for cache in &pruned {
        println!(
            "removed cache mount {}\t{}",
            cache.id,
            kiln_solver::human_bytes(cache.bytes)
        );
    }
    println!(
        "removed {} snapshot{} (step results, and unpacked layers no local image has)",
        cache.snapshots,
        if cache.snapshots == 1 { "" } else { "s" }
    );
    println!(
        "removed {} blob{} no local image needs, the step records and the stat caches",
        cache.blobs,
        if cache.blobs == 1 { "" } else { "s" }
    );
    let total: u64 = pruned.iter().map(|c| c.bytes).sum::<u64>() + cache.bytes;
    println!(
        "Total: {} cache mount{} removed, {} reclaimed",
        pruned.len(),
        if pruned.len() == 1 { "" } else { "s" },
        kiln_solver::human_bytes(total)
    );
    Ok(())
}

/// The state directory's lock, held exclusively: no build is running on it.
fn lock_exclusive(root: &Path) -> Result<Flock<File>> {
    let path = root.join("lock");
    let open = || {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    };
    match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, Errno::EWOULDBLOCK)) => {
            eprintln!(
                "waiting for the builds running on {} to finish",
                root.display()
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("locking {}", path.display()))
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}
