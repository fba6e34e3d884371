//! What both executors do on the host before and after the process runs, as BuildKit's
//! `runcexecutor.Run` does: resolve the user, complete the environment, create the working
//! directory, check the program exists, write `/etc/hosts` and `/etc/resolv.conf` into a
//! per-run state directory, and note the mount stubs to remove afterwards.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::rootfs::{MountStubs, RootDir, StubKind};
use super::user::{resolve_user, ExecUser};
use super::{ExecError, ExecSpec, DEFAULT_HOSTNAME, DEFAULT_PATH};

/// Paths kiln mounts over in every run (mount points it may have to create).
const MOUNT_TARGETS: &[(&str, StubKind)] = &[
    ("/proc", StubKind::Dir),
    ("/dev", StubKind::Dir),
    ("/sys", StubKind::Dir),
    ("/etc/hosts", StubKind::File),
    ("/etc/resolv.conf", StubKind::File),
];

/// A run ready to start. Dropping it removes the state directory; [`Prepared::finish`] must be
/// called after the process is gone to remove the mount stubs.
pub(crate) struct Prepared {
    pub user: ExecUser,
    pub env: Vec<String>,
    pub cwd: String,
    pub hostname: String,
    /// Per-run directory on the host: hosts, resolv.conf, and whatever the executor adds.
    pub state: TempDir,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    root: RootDir,
    stubs: MountStubs,
}

impl Prepared {
    pub fn new(spec: &ExecSpec, state_root: &Path) -> Result<Self, ExecError> {
        if !spec.mounts.is_empty() {
            return Err(ExecError::Unsupported("extra mounts"));
        }
        let program = spec.args.first().ok_or(ExecError::EmptyCommand)?;
        let root = RootDir::open(&spec.rootfs).map_err(|e| {
            ExecError::io(
                format!(
                    "failed to open the root filesystem {}",
                    spec.rootfs.display()
                ),
                e,
            )
        })?;
        let read = |path: &str| {
            root.read_to_string(path)
                .map_err(|e| ExecError::io(format!("failed to read {path} in the image"), e))
        };
        let user = resolve_user(
            &spec.user,
            read("/etc/passwd")?.as_deref(),
            read("/etc/group")?.as_deref(),
        )?;
        let env = complete_env(&spec.env, &user);
        let cwd = if spec.cwd.is_empty() {
            "/".to_string()
        } else {
            spec.cwd.clone()
        };

        root.mkdir_all(&cwd, 0o755, user.uid, user.gid)
            .map_err(|source| ExecError::WorkingDir {
                cwd: cwd.clone(),
                source,
            })?;
        check_program(&root, program, &env, &cwd)?;

        fs::create_dir_all(state_root)
            .map_err(|e| ExecError::io(format!("failed to create {}", state_root.display()), e))?;
        let state = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(state_root)
            .map_err(|e| ExecError::io("failed to create the run's state directory", e))?;
        let hostname = if spec.hostname.is_empty() {
            DEFAULT_HOSTNAME.to_string()
        } else {
            spec.hostname.clone()
        };
        let hosts = state.path().join("hosts");
        let resolv_conf = state.path().join("resolv.conf");
        write_state_file(&hosts, hosts_file(&hostname).as_bytes())?;
        write_state_file(
            &resolv_conf,
            &fs::read("/etc/resolv.conf").unwrap_or_default(),
        )?;
        // Last, so that nothing fails after the rootfs was touched.
        let stubs = MountStubs::create(&root, MOUNT_TARGETS).map_err(|e| {
            ExecError::io("failed to create mount points in the root filesystem", e)
        })?;
        Ok(Prepared {
            user,
            env,
            cwd,
            hostname,
            state,
            hosts,
            resolv_conf,
            root,
            stubs,
        })
    }

    /// Removes the mount stubs; call once no process of the run is left.
    pub fn finish(&self) {
        self.stubs.clean(&self.root);
    }
}

/// BuildKit adds `PATH` when missing (`addDefaultEnvvar`); runc adds `HOME` from passwd.
fn complete_env(env: &[String], user: &ExecUser) -> Vec<String> {
    let has = |key: &str| {
        env.iter()
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let mut env = env.to_vec();
    if !has("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        env.push(format!("HOME={}", user.home));
    }
    env
}

fn check_program(
    root: &RootDir,
    program: &str,
    env: &[String],
    cwd: &str,
) -> Result<(), ExecError> {
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    if root.find_program(program, path, cwd).is_some() {
        return Ok(());
    }
    Err(if program.contains('/') {
        ExecError::ProgramNotFound {
            program: program.to_string(),
        }
    } else {
        ExecError::ProgramNotInPath {
            program: program.to_string(),
            path: path.to_string(),
        }
    })
}

/// BuildKit's `initHostsFile`.
fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

fn write_state_file(path: &Path, contents: &[u8]) -> Result<(), ExecError> {
    fs::write(path, contents)
        .map_err(|e| ExecError::io(format!("failed to write {}", path.display()), e))
}
