//! Executors run the process of one exec op (a Dockerfile RUN) in a root filesystem the solver
//! has already mounted writable, and leave that filesystem exactly as the process left it, so the
//! solver can commit it as the step's layer. Like BuildKit's `executor/runcexecutor` they give the
//! process its own mount, pid, ipc and uts namespaces (and a network namespace with only `lo`
//! for `NetworkMode::None`), fresh `/proc`, `/dev` and `/sys`, and read-only binds of generated
//! `/etc/hosts` and `/etc/resolv.conf`, then the step's own bind and tmpfs mounts; mount points
//! they had to create are removed afterwards (BuildKit's `MountStubsCleaner`).
//!
//! Two implementations: [`OciRuntimeExecutor`] writes an OCI bundle and drives `runc` or `crun`;
//! [`BuiltinExecutor`] does the same work itself with `nix`, in a re-executed copy of the current
//! binary (see [`init_hook`]) so that no namespace work happens in a multi-threaded process.

mod builtin;
mod forward;
mod oci;
mod prepare;
mod pump;
mod rootfs;
mod user;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::op::NetworkMode;

pub use builtin::{init_hook, init_hook_from, BuiltinExecutor, HELPER_ARG};
pub use oci::OciRuntimeExecutor;

/// `PATH` given to processes whose environment has none (BuildKit's `DefaultPathEnvUnix`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Hostname when the spec has none (BuildKit's `defaultHostname`).
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// What to run, and where.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The step's root filesystem, mounted read-write by the caller.
    pub rootfs: PathBuf,
    /// `args[0]` is the program, looked up in the `PATH` of `env` inside the rootfs.
    pub args: Vec<String>,
    /// `KEY=value` pairs; `PATH` and `HOME` get defaults when missing.
    pub env: Vec<String>,
    /// Working directory inside the rootfs; created (0755, owned by the user) when missing.
    pub cwd: String,
    /// `""` (root), `name`, `uid`, `name:group` or `uid:gid`, resolved in the rootfs.
    pub user: String,
    pub network: NetworkMode,
    /// Empty means [`DEFAULT_HOSTNAME`].
    pub hostname: String,
    /// Extra mounts, made in this order after the standard ones.
    pub mounts: Vec<ExecMount>,
    /// Environment variables whose values are secrets (`RUN --mount=type=secret,env=…`): added
    /// to `env` for the process only, kept off disks, never serialised.
    #[serde(skip)]
    pub secret_env: Vec<(String, SecretBytes)>,
}

/// An extra mount for the process. Its target is created in the rootfs when missing (a
/// directory, or an empty file for the bind of a file) and removed again afterwards; a target
/// that existed is left as it was. Targets under `/dev` live on the container's own `/dev`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecMount {
    /// For [`ExecMountKind::Bind`]: the host file or directory to bind (recursively); for
    /// [`ExecMountKind::Socket`]: the host socket connections are forwarded to. Ignored
    /// otherwise.
    pub source: PathBuf,
    /// Absolute path inside the rootfs; must not be `/` or climb out of the rootfs.
    pub target: String,
    pub readonly: bool,
    pub kind: ExecMountKind,
    /// tmpfs size limit in bytes; `None` is the kernel's default (half the RAM).
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecMountKind {
    Bind,
    Tmpfs,
    /// A file with these contents, mode and owner, made on the run's tmpfs and bound (read-only
    /// unless `readonly` is false) onto the target: a build secret.
    File {
        #[serde(skip)]
        contents: SecretBytes,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A unix socket with this mode and owner, made on the run's tmpfs and bound onto the
    /// target, that forwards every connection to the host socket `source`: an SSH agent.
    Socket {
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl ExecMountKind {
    /// Whether the run must keep its state on a tmpfs and run a helper for this mount.
    fn is_made_for_the_run(&self) -> bool {
        matches!(
            self,
            ExecMountKind::File { .. } | ExecMountKind::Socket { .. }
        )
    }
}

/// Bytes that must reach neither a disk, a log nor a cache key: a build secret's value. Debug
/// output never shows them, and serde skips every field that holds them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<hidden>)")
    }
}

impl ExecSpec {
    /// Whether the run handles secrets or forwarded sockets (see the module comment).
    pub(crate) fn is_sensitive(&self) -> bool {
        !self.secret_env.is_empty() || self.mounts.iter().any(|m| m.kind.is_made_for_the_run())
    }
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Why a process could not be run. A process that ran and failed is not an error: its exit code
/// is returned.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    UnknownGroup { group: String },
    #[error("{program}: no such file or directory in the image")]
    ProgramNotFound { program: String },
    #[error("\"{program}\": executable file not found in $PATH of the image (PATH={path})")]
    ProgramNotInPath { program: String, path: String },
    #[error("no command to run")]
    EmptyCommand,
    #[error("failed to create working directory {cwd}: {source}")]
    WorkingDir { cwd: String, source: io::Error },
    #[error("{0} are not supported by the executors yet")]
    Unsupported(&'static str),
    #[error("invalid mount target {target:?}: {reason}")]
    MountTarget { target: String, reason: String },
    #[error("mount source {}: {source}", path.display())]
    MountSource { path: PathBuf, source: io::Error },
    #[error("unknown executor {0:?}: expected builtin, runc or crun")]
    UnknownExecutor(String),
    #[error("the OCI runtime {0} was not found in PATH")]
    RuntimeNotFound(String),
    #[error("failed to start {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
    #[error("failed to set up the container: {0}")]
    Setup(String),
    #[error("{action}: {source}")]
    Io { action: String, source: io::Error },
    #[error("the process was cancelled")]
    Cancelled,
}

impl ExecError {
    fn io(action: impl Into<String>, source: impl Into<io::Error>) -> Self {
        ExecError::Io {
            action: action.into(),
            source: source.into(),
        }
    }
}

/// Runs processes for exec ops.
pub trait Executor: Send + Sync {
    /// `builtin`, `runc` or `crun`.
    fn name(&self) -> &'static str;

    /// Runs the process, handing each chunk of its output to `output` as it arrives, and returns
    /// its exit code (128 + signal when killed). Setting `cancel` kills every process of the
    /// step and returns [`ExecError::Cancelled`]. No process, mount or temporary file is left
    /// behind in any case.
    fn run(
        &self,
        spec: &ExecSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &AtomicBool,
    ) -> Result<i32, ExecError>;
}

/// Paths both executors hide from a step, as containerd's defaults (which BuildKit uses) do.
/// containerd's default masked paths: hidden behind /dev/null or an empty read-only tmpfs.
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Clears what executors of a kiln process that died (kill -9, power loss) left under
/// `state_dir` (the directory given to [`executor_for`]): containers still running under runc
/// or crun are killed and deleted, and per-run directories removed. Only safe when no other
/// kiln process uses this state directory.
pub fn clean_up_after_crash(state_dir: &Path) -> std::io::Result<()> {
    for runtime in ["runc", "crun"] {
        let runtime_root = state_dir.join(runtime).join("state");
        if !runtime_root.is_dir() {
            continue;
        }
        if let Some(binary) = find_in_path(runtime) {
            let list = std::process::Command::new(&binary)
                .arg("--root")
                .arg(&runtime_root)
                .args(["list", "-q"])
                .output()?;
            for id in String::from_utf8_lossy(&list.stdout)
                .lines()
                .filter(|l| !l.is_empty())
            {
                let _ = std::process::Command::new(&binary)
                    .arg("--root")
                    .arg(&runtime_root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
    }
    for runtime in ["builtin", "runc", "crun"] {
        let Ok(entries) = std::fs::read_dir(state_dir.join(runtime)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("run-") {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
    }
    Ok(())
}

/// The executor called `name` (`builtin`, `runc` or `crun`), keeping its state under `state_dir`.
pub fn executor_for(name: &str, state_dir: &Path) -> Result<Box<dyn Executor>, ExecError> {
    let state = state_dir.join(name);
    match name {
        "builtin" => Ok(Box::new(BuiltinExecutor::new(state))),
        "runc" | "crun" => {
            let binary =
                find_in_path(name).ok_or_else(|| ExecError::RuntimeNotFound(name.to_string()))?;
            Ok(Box::new(OciRuntimeExecutor::new(binary, state)))
        }
        other => Err(ExecError::UnknownExecutor(other.to_string())),
    }
}

/// Resolves `path` inside `root` as the process would see it (`..` and symlinks, absolute ones
/// included, never leave `root`) and returns the host path of what it names, which must exist.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let dir = rootfs::RootDir::open(root)?;
    let fd = dir.open_path(path)?;
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
