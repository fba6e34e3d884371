//! What both executors do on the host before and after the process runs, as BuildKit's
//! `runcexecutor.Run` does: resolve the user, complete the environment, create the working
//! directory, check the program exists, write `/etc/hosts` and `/etc/resolv.conf` into a
//! per-run state directory, make the step's secret files and forwarding sockets there (on a
//! tmpfs), check the step's own mounts, and note the mount stubs to remove afterwards.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{fchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tempfile::TempDir;

use super::forward::SocketProxy;
use super::rootfs::{MountStubs, RootDir, StubKind};
use super::user::{resolve_user, ExecUser};
use super::{ExecError, ExecMount, ExecMountKind, ExecSpec, DEFAULT_HOSTNAME, DEFAULT_PATH};

/// Paths kiln mounts over in every run (mount points it may have to create).
const MOUNT_TARGETS: &[(&str, StubKind)] = &[
    ("/proc", StubKind::Dir),
    ("/dev", StubKind::Dir),
    ("/sys", StubKind::Dir),
    ("/etc/hosts", StubKind::File),
    ("/etc/resolv.conf", StubKind::File),
];

/// A run ready to start. Dropping it stops the socket proxies and removes the state directory
/// (unmounting its tmpfs first); [`Prepared::finish`] must be called after the process is gone
/// to remove the mount stubs.
pub(crate) struct Prepared {
    pub user: ExecUser,
    pub env: Vec<String>,
    pub cwd: String,
    pub hostname: String,
    /// Forwarding proxies of the step's sockets. Fields drop in order: these stop first.
    _proxies: Vec<SocketProxy>,
    /// The tmpfs over `state` when the run handles secrets; unmounted before `state` goes.
    _tmpfs: Option<StateTmpfs>,
    /// Per-run directory on the host: hosts, resolv.conf, and whatever the executor adds.
    pub state: TempDir,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The step's own mounts, checked, in the order they are made. A file or socket mount's
    /// source is what was made for it in the state directory.
    pub mounts: Vec<StepMount>,
    root: RootDir,
    stubs: MountStubs,
}

impl Prepared {
    pub fn new(spec: &ExecSpec, state_root: &Path) -> Result<Self, ExecError> {
        let targets = spec
            .mounts
            .iter()
            .map(|m| clean_target(&m.target))
            .collect::<Result<Vec<_>, _>>()?;
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
        let mut env = complete_env(&spec.env, &user);
        add_secret_env(&mut env, spec)?;
        let cwd = if spec.cwd.is_empty() {
            "/".to_string()
        } else {
            spec.cwd.clone()
        };

        fs::create_dir_all(state_root)
            .map_err(|e| ExecError::io(format!("failed to create {}", state_root.display()), e))?;
        let state = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(state_root)
            .map_err(|e| ExecError::io("failed to create the run's state directory", e))?;
        let tmpfs = if spec.is_sensitive() {
            Some(StateTmpfs::mount(state.path())?)
        } else {
            None
        };
        let mut proxies = Vec::new();
        let mut mounts = Vec::new();
        for (index, (m, target)) in spec.mounts.iter().zip(targets).enumerate() {
            let mount = make_for_the_run(m, index, state.path(), &mut proxies)?;
            mounts.push(StepMount::check(mount, target)?);
        }

        root.mkdir_all(&cwd, 0o755, user.uid, user.gid)
            .map_err(|source| ExecError::WorkingDir {
                cwd: cwd.clone(),
                source,
            })?;
        check_program(&root, program, &env, &cwd, &mounts)?;

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
        let mut targets: Vec<(&str, StubKind)> = MOUNT_TARGETS.to_vec();
        targets.extend(
            mounts
                .iter()
                .filter(|m| m.needs_stub(&mounts))
                .map(|m| (m.target.as_str(), m.stub_kind())),
        );
        let stubs = MountStubs::create(&root, &targets).map_err(|e| {
            ExecError::io("failed to create mount points in the root filesystem", e)
        })?;
        Ok(Prepared {
            user,
            env,
            cwd,
            hostname,
            _proxies: proxies,
            _tmpfs: tmpfs,
            state,
            hosts,
            resolv_conf,
            mounts,
            root,
            stubs,
        })
    }

    /// Removes the mount stubs; call once no process of the run is left.
    pub fn finish(&self) {
        self.stubs.clean(&self.root);
    }
}

/// A tmpfs mounted over a run's state directory, so that what is written there for the run
/// (secret files, the process's environment in `request.json` or `config.json`) stays in
/// memory. kiln runs in a mount namespace of its own, so the host never sees it, and it
/// vanishes with the process however that ends.
struct StateTmpfs {
    path: PathBuf,
}

impl StateTmpfs {
    fn mount(path: &Path) -> Result<Self, ExecError> {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| ExecError::io("failed to mount a tmpfs for the run's secrets", e))?;
        Ok(StateTmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for StateTmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// Adds the secret environment variables, replacing variables of the same name.
fn add_secret_env(env: &mut Vec<String>, spec: &ExecSpec) -> Result<(), ExecError> {
    for (name, value) in &spec.secret_env {
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ExecError::Setup(format!(
                "the secret for the environment variable {name} is not valid UTF-8"
            ))
        })?;
        env.retain(|kv| kv.split_once('=').is_none_or(|(k, _)| k != name));
        env.push(format!("{name}={value}"));
    }
    Ok(())
}

/// The mount as the executors make it: a file or socket mount gets its file or proxy socket
/// made in the state directory (`dir`, a tmpfs) as its source; other mounts are as given.
fn make_for_the_run(
    m: &ExecMount,
    index: usize,
    dir: &Path,
    proxies: &mut Vec<SocketProxy>,
) -> Result<ExecMount, ExecError> {
    let mut made = m.clone();
    match &m.kind {
        ExecMountKind::Bind | ExecMountKind::Tmpfs => {}
        ExecMountKind::File {
            contents,
            mode,
            uid,
            gid,
        } => {
            let path = dir.join(format!("secret-{index}"));
            let action = || format!("failed to write the secret file for {}", m.target);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| ExecError::io(action(), e))?;
            file.write_all(contents.as_bytes())
                .and_then(|()| fchown(&file, Some(*uid), Some(*gid)))
                .and_then(|()| file.set_permissions(fs::Permissions::from_mode(*mode & 0o7777)))
                .map_err(|e| ExecError::io(action(), e))?;
            made.source = path;
            made.kind = ExecMountKind::File {
                contents: Default::default(),
                mode: *mode,
                uid: *uid,
                gid: *gid,
            };
        }
        ExecMountKind::Socket { mode, uid, gid } => {
            let path = dir.join(format!("socket-{index}"));
            let proxy = SocketProxy::start(&path, &m.source, *mode, *uid, *gid).map_err(|e| {
                ExecError::io(
                    format!("failed to forward {} to {}", m.source.display(), m.target),
                    e,
                )
            })?;
            proxies.push(proxy);
            made.source = path;
        }
    }
    Ok(made)
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

/// One of the step's own mounts, with its target in normal form (`/a/b`).
pub(crate) struct StepMount {
    pub target: String,
    /// A bind of a file (its target is a file, not a directory).
    pub is_file: bool,
    pub mount: ExecMount,
}

impl StepMount {
    /// `target` is the mount's target in normal form.
    fn check(mount: ExecMount, target: String) -> Result<Self, ExecError> {
        let is_file = match mount.kind {
            ExecMountKind::Tmpfs => false,
            ExecMountKind::File { .. } | ExecMountKind::Socket { .. } => true,
            ExecMountKind::Bind => {
                let meta =
                    fs::metadata(&mount.source).map_err(|source| ExecError::MountSource {
                        path: mount.source.clone(),
                        source,
                    })?;
                !meta.is_dir()
            }
        };
        Ok(StepMount {
            target,
            is_file,
            mount,
        })
    }

    pub fn stub_kind(&self) -> StubKind {
        if self.is_file {
            StubKind::File
        } else {
            StubKind::Dir
        }
    }

    /// Whether this target is made on the host before the run: not under `/dev` (the
    /// container's own tmpfs) nor inside another of the step's mounts (it would be created in
    /// that mount's source, or be hidden by it), where it is made at mount time instead.
    fn needs_stub(&self, all: &[StepMount]) -> bool {
        !is_under(&self.target, "/dev")
            && !all
                .iter()
                .any(|other| other.target != self.target && is_under(&self.target, &other.target))
    }

    /// Whether `path` (absolute, in normal form or not) is at or below this mount's target.
    fn covers(&self, path: &str) -> bool {
        clean_target(path).is_ok_and(|p| is_under(&p, &self.target))
    }
}

/// Whether the normal-form `path` is `dir` or below it.
fn is_under(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `/a/b` from an absolute target; `/` and paths that climb above the root are refused (the
/// process could not name anything outside its root, so such a target is a mistake).
fn clean_target(target: &str) -> Result<String, ExecError> {
    let invalid = |reason: &str| ExecError::MountTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    if !target.starts_with('/') {
        return Err(invalid("it must be an absolute path"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(invalid("it is outside the root filesystem"));
                }
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return Err(invalid("the root can't be a mount target"));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn check_program(
    root: &RootDir,
    program: &str,
    env: &[String],
    cwd: &str,
    mounts: &[StepMount],
) -> Result<(), ExecError> {
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    if root.find_program(program, path, cwd).is_some() {
        return Ok(());
    }
    // A program inside one of the step's mounts (a heredoc script at /dev/pipes/EOF) is only
    // there once the mounts are made: the lookup in the container decides.
    let in_cwd = |p: &str| {
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("{}/{p}", cwd.trim_end_matches('/'))
        }
    };
    let candidates: Vec<String> = if program.contains('/') {
        vec![in_cwd(program)]
    } else {
        path.split(':')
            .map(|dir| in_cwd(&format!("{}/{program}", dir.trim_end_matches('/'))))
            .collect()
    };
    if candidates
        .iter()
        .any(|c| mounts.iter().any(|m| m.covers(c)))
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_targets_are_normalised_and_checked() {
        assert_eq!(clean_target("/dev/pipes/").unwrap(), "/dev/pipes");
        assert_eq!(clean_target("/a/./b/../c").unwrap(), "/a/c");
        for bad in ["/", "//", "/a/..", "/../etc", "relative"] {
            assert!(clean_target(bad).is_err(), "{bad}");
        }
        assert!(is_under("/a/b", "/a") && is_under("/a", "/a") && !is_under("/ab", "/a"));
    }
}
