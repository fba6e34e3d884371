//! The state directory (`--root`): content store and snapshot store, shared by every build
//! that uses the same root. A shared lock is held for the whole build; temporary files of
//! crashed builds are cleared when no other build holds it.

use anyhow::{bail, Context, Result};
use kiln_cache::{ContentStore, SnapshotStore, SnapshotterMode};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct State {
    pub content: ContentStore,
    pub snapshots: SnapshotStore,
    _lock: Flock<File>,
}

/// The file that marks a directory as a kiln state directory.
const MARKER: &str = "kiln-state";

/// Makes sure `root` is a kiln state directory, and marks it one: it must be new, empty,
/// marked, or laid out by an earlier kiln (`lock` and `content/`). kiln empties parts of its
/// state directory (what a crash left in `tmp/`, pruning), so a directory holding anything else
/// — a `--root` pointed at a project by mistake — is refused before anything is touched.
pub fn claim(root: &Path) -> Result<()> {
    let marker = root.join(MARKER);
    if marker.is_file() {
        return Ok(());
    }
    let foreign = match std::fs::read_dir(root) {
        Ok(mut entries) => {
            entries.next().is_some()
                && !(root.join("lock").is_file() && root.join("content").is_dir())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the state directory {}", root.display()))
        }
    };
    if foreign {
        bail!(
            "{} is not a kiln state directory: it holds files kiln did not make, and kiln clears parts of its state directory; give --root (or KILN_ROOT) a new or empty directory",
            root.display()
        );
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the state directory {}", root.display()))?;
    std::fs::write(&marker, "kiln state directory\n")
        .with_context(|| format!("writing {}", marker.display()))
}

impl State {
    pub fn open(root: &Path) -> Result<State> {
        claim(root)?;
        let lock_path = root.join("lock");
        let open_lock = || {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("opening {}", lock_path.display()))
        };
        let content = ContentStore::open(&root.join("content"))?;
        // Alone on this root: what is in the temporary area was left by a crash.
        let lock = match Flock::lock(open_lock()?, FlockArg::LockExclusiveNonblock) {
            Ok(exclusive) => {
                kiln_solver::executor::clean_up_after_crash(&root.join("executor"))
                    .context("clearing what a crashed build left in the executor's state")?;
                SnapshotStore::open_with_mode(root, SnapshotterMode::Overlay)?.clear_tmp()?;
                content.clear_ingest()?;
                drop(exclusive);
                Flock::lock(open_lock()?, FlockArg::LockShared)
            }
            Err((file, _)) => Flock::lock(file, FlockArg::LockShared),
        }
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", lock_path.display()))?;
        // Only now, under the lock: opening the store tries an overlay mount in the temporary
        // area, which a process clearing it after a crash would pull from under it.
        let snapshots = SnapshotStore::open(root)?;
        Ok(State {
            content,
            snapshots,
            _lock: lock,
        })
    }
}

/// The default state directory: /var/lib/kiln as root, else under the user's data dir.
pub fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/kiln");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data.join("kiln")
}
