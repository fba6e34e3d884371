//! The executor that needs no runtime binary. kiln is multi-threaded, and unshare/mount/fork
//! must not happen in a multi-threaded process, so the work is done by a fresh copy of the
//! current binary started as `<exe> __kiln-exec <state dir>` (the helper): [`init_hook`] turns
//! it into the helper before `main` does anything else.
//!
//! The helper unshares the pid, ipc, uts (and, for `NetworkMode::None`, network) namespaces,
//! sets the hostname, brings `lo` up, and forks the command's process, pid 1 of the new pid
//! namespace. That process unshares a mount namespace of its own (pivot_root would otherwise move
//! the helper's root too), mounts `/proc` (only a process inside the pid namespace can), `/dev`,
//! `/sys`, the `/etc` binds and the step's own bind and tmpfs mounts onto targets resolved
//! inside the rootfs, pivots into the rootfs,
//! limits capabilities to BuildKit's default set, switches user and execs the command. The helper
//! waits and writes the outcome to `result.json` in the state directory. All mounts live in the
//! private mount namespace, which dies with the process, so nothing is left on the host.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{killpg, Signal};
use nix::sys::stat::{mknodat, umask, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{
    chdir, execve, fchdir, fork, pipe2, pivot_root, setgid, setgroups, sethostname, setuid,
    symlinkat, ForkResult, Gid, Pid, Uid,
};
use serde::{Deserialize, Serialize};

use super::prepare::Prepared;
use super::pump::pump;
use super::rootfs::RootDir;
use super::{ExecError, ExecMount, ExecMountKind, ExecSpec, Executor, Stream};
use crate::op::NetworkMode;

/// The hidden first argument that makes the kiln binary act as the helper.
pub const HELPER_ARG: &str = "__kiln-exec";

/// Capabilities a RUN step keeps (containerd's `defaultUnixCaps`, which BuildKit uses).
const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Runs processes with kiln's own namespace code.
pub struct BuiltinExecutor {
    helper: PathBuf,
    state_root: PathBuf,
}

impl BuiltinExecutor {
    /// Keeps per-run state under `state_root`; re-executes `/proc/self/exe` as the helper.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        BuiltinExecutor {
            helper: PathBuf::from("/proc/self/exe"),
            state_root: state_root.into(),
        }
    }

    /// Uses `helper` as the binary to re-execute; it must call [`init_hook`] first thing.
    pub fn with_helper(mut self, helper: impl Into<PathBuf>) -> Self {
        self.helper = helper.into();
        self
    }
}

/// What the helper is told, in `request.json` of the state directory.
#[derive(Serialize, Deserialize)]
struct Request {
    rootfs: PathBuf,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    uid: u32,
    gid: u32,
    sgids: Vec<u32>,
    hostname: String,
    network: NetworkMode,
    hosts: PathBuf,
    resolv_conf: PathBuf,
    mounts: Vec<RequestMount>,
}

/// One of the step's mounts: its target in normal form, whether that is a file, the mount.
#[derive(Serialize, Deserialize)]
struct RequestMount {
    target: String,
    is_file: bool,
    mount: ExecMount,
}

/// What the helper reports, in `result.json`.
#[derive(Serialize, Deserialize)]
enum Outcome {
    Exited(i32),
    Failed(String),
}

impl Executor for BuiltinExecutor {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn run(
        &self,
        spec: &ExecSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &AtomicBool,
    ) -> Result<i32, ExecError> {
        let prepared = Prepared::new(spec, &self.state_root)?;
        let result = self.run_prepared(spec, &prepared, output, cancel);
        prepared.finish();
        result
    }
}

impl BuiltinExecutor {
    fn run_prepared(
        &self,
        spec: &ExecSpec,
        prepared: &Prepared,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &AtomicBool,
    ) -> Result<i32, ExecError> {
        let state = prepared.state.path();
        let request = Request {
            rootfs: spec.rootfs.clone(),
            args: spec.args.clone(),
            env: prepared.env.clone(),
            cwd: prepared.cwd.clone(),
            uid: prepared.user.uid,
            gid: prepared.user.gid,
            sgids: prepared.user.sgids.clone(),
            hostname: prepared.hostname.clone(),
            network: spec.network,
            hosts: prepared.hosts.clone(),
            resolv_conf: prepared.resolv_conf.clone(),
            mounts: prepared
                .mounts
                .iter()
                .map(|m| RequestMount {
                    target: m.target.clone(),
                    is_file: m.is_file,
                    mount: m.mount.clone(),
                })
                .collect(),
        };
        let request_path = state.join("request.json");
        let json = serde_json::to_vec(&request).expect("request serialises");
        fs::write(&request_path, json)
            .map_err(|e| ExecError::io("failed to write the helper's request", e))?;

        let mut command = Command::new(&self.helper);
        command
            .arg(HELPER_ARG)
            .arg(state)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: only prctl, which is async-signal-safe, runs between fork and exec. The
        // signal fires when this thread exits, and this thread waits for the helper.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            program: self.helper.clone(),
            source,
        })?;
        let group = Pid::from_raw(child.id() as i32);
        let mut kill = || {
            let _ = killpg(group, Signal::SIGKILL);
        };
        let ended = pump(&mut child, output, cancel, &mut kill);
        wait_group_gone(group);
        let ended = ended.map_err(|e| ExecError::io("failed to read the process's output", e))?;
        if ended.cancelled {
            return Err(ExecError::Cancelled);
        }
        match fs::read(state.join("result.json")) {
            Ok(json) => match serde_json::from_slice(&json) {
                Ok(Outcome::Exited(code)) => Ok(code),
                Ok(Outcome::Failed(message)) => Err(ExecError::Setup(message)),
                Err(e) => Err(ExecError::Setup(format!("unreadable helper result: {e}"))),
            },
            Err(_) => Err(ExecError::Setup(format!(
                "the helper {} ended ({}) without a result; does the binary call \
                 kiln_solver::executor::init_hook() first thing in main?",
                self.helper.display(),
                ended.status
            ))),
        }
    }
}

/// Waits until no process of the helper's process group is left (the command's processes die
/// with pid 1 of their namespace, which is in that group).
fn wait_group_gone(group: Pid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while killpg(group, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Call first thing in `main`, before any thread is started (so before a tokio runtime is
/// built): returns at once unless the process was started as the builtin executor's helper,
/// in which case it runs the helper and exits.
pub fn init_hook() {
    init_hook_from(std::env::args_os());
}

/// [`init_hook`] with the arguments given, for binaries that obtain them another way.
pub fn init_hook_from(args: impl IntoIterator<Item = OsString>) {
    let mut args = args.into_iter().skip(1);
    if args.next().as_deref() != Some(OsStr::new(HELPER_ARG)) {
        return;
    }
    let Some(state) = args.next().map(PathBuf::from) else {
        eprintln!("{HELPER_ARG}: missing state directory");
        std::process::exit(125);
    };
    let outcome = helper_main(&state);
    let json = serde_json::to_vec(&outcome).expect("outcome serialises");
    let written = fs::write(state.join("result.json"), json);
    std::process::exit(if written.is_ok() { 0 } else { 125 });
}

fn helper_main(state: &Path) -> Outcome {
    let request: Request = match fs::read(state.join("request.json"))
        .map_err(|e| e.to_string())
        .and_then(|json| serde_json::from_slice(&json).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(e) => return Outcome::Failed(format!("cannot read the request: {e}")),
    };
    match run_in_namespaces(&request) {
        Ok(outcome) => outcome,
        Err(message) => Outcome::Failed(message),
    }
}

fn run_in_namespaces(request: &Request) -> Result<Outcome, String> {
    // The mount namespace is the child's alone (it unshares it itself): pivot_root would
    // otherwise move the helper's root too, and the helper must still reach the state directory.
    let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if request.network == NetworkMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    sethostname(&request.hostname).map_err(|e| format!("sethostname: {e}"))?;
    if request.network == NetworkMode::None {
        loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    let (errors_in, errors_out) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the helper is single-threaded (it is a fresh process that has only read a file).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(errors_in);
            let message = container_init(request);
            let _ = fs::File::from(errors_out).write_all(message.as_bytes());
            // SAFETY: leaving the forked child without running the parent's exit handlers.
            unsafe { nix::libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(errors_out);
            let mut message = String::new();
            let _ = fs::File::from(errors_in).read_to_string(&mut message);
            let code = wait_for(child)?;
            if message.is_empty() {
                Ok(Outcome::Exited(code))
            } else {
                Ok(Outcome::Failed(message))
            }
        }
    }
}

fn wait_for(child: Pid) -> Result<i32, String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

/// Pid 1 of the new namespaces: builds the container's file system and execs the command.
/// Returns only on failure, with the message.
fn container_init(request: &Request) -> String {
    match setup_and_exec(request) {
        Ok(never) => match never {},
        Err(message) => message,
    }
}

fn setup_and_exec(request: &Request) -> Result<std::convert::Infallible, String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("making / private: {e}"))?;
    let rootfs = &request.rootfs;
    mount(
        Some(rootfs),
        rootfs,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| format!("binding {} onto itself: {e}", rootfs.display()))?;
    let root = RootDir::open(rootfs).map_err(|e| format!("opening {}: {e}", rootfs.display()))?;

    mount_proc(&root)?;
    mount_dev(&root)?;
    mount_sys(&root, request.network)?;
    bind_file(&root, &request.hosts, "/etc/hosts")?;
    bind_file(&root, &request.resolv_conf, "/etc/resolv.conf")?;
    for m in &request.mounts {
        mount_step(&root, m)?;
    }
    mask_paths(&root)?;

    let root_fd = root
        .open_path("/")
        .map_err(|e| format!("opening the root: {e}"))?;
    fchdir(root_fd.as_raw_fd()).map_err(|e| format!("chdir to the root: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    drop_capabilities()?;
    umask(Mode::from_bits_truncate(0o022));
    let sgids: Vec<Gid> = request.sgids.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&sgids).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(request.gid)).map_err(|e| format!("setgid: {e}"))?;
    setuid(Uid::from_raw(request.uid)).map_err(|e| format!("setuid: {e}"))?;
    chdir(request.cwd.as_str())
        .map_err(|e| format!("chdir to the working directory {}: {e}", request.cwd))?;

    let new_root = RootDir::open(Path::new("/")).map_err(|e| format!("opening /: {e}"))?;
    let program = &request.args[0];
    let path = request
        .env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(super::DEFAULT_PATH);
    let resolved = new_root
        .find_program(program, path, &request.cwd)
        .ok_or_else(|| format!("exec: {program:?}: executable file not found in $PATH"))?;
    let cstrings = |items: &[String]| -> Result<Vec<CString>, String> {
        items
            .iter()
            .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("NUL byte in {s:?}")))
            .collect()
    };
    let file = CString::new(resolved).map_err(|_| "NUL byte in the program".to_string())?;
    let argv = cstrings(&request.args)?;
    let envp = cstrings(&request.env)?;
    execve(&file, &argv, &envp).map_err(|e| format!("exec {program}: {e}"))
}

/// Mounts `fstype` on `target` (resolved in the root) through its `/proc/self/fd` link.
fn mount_in(
    root: &RootDir,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let fd = root
        .open_path(target)
        .map_err(|e| format!("opening {target}: {e}"))?;
    mount(
        Some(fstype),
        fd_path(&fd).as_str(),
        Some(fstype),
        flags,
        data,
    )
    .map_err(|e| format!("mounting {fstype} on {target}: {e}"))
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn ensure_dir(root: &RootDir, path: &str) -> Result<(), String> {
    root.mkdir_all(path, 0o755, 0, 0)
        .map_err(|e| format!("creating {path}: {e}"))
}

fn mount_proc(root: &RootDir) -> Result<(), String> {
    ensure_dir(root, "/proc")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_in(root, "/proc", "proc", flags, None)
}

fn mount_dev(root: &RootDir) -> Result<(), String> {
    ensure_dir(root, "/dev")?;
    let size = Some("mode=755,size=65536k");
    mount_in(
        root,
        "/dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        size,
    )?;
    let dev = root
        .open_path("/dev")
        .map_err(|e| format!("opening /dev: {e}"))?;
    let devfd = Some(dev.as_raw_fd());
    let devices: [(&str, u64, u64); 6] = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in devices {
        let mode = Mode::from_bits_truncate(0o666);
        let dev_t = nix::sys::stat::makedev(major, minor);
        mknodat(devfd, name, SFlag::S_IFCHR, mode, dev_t)
            .map_err(|e| format!("mknod /dev/{name}: {e}"))?;
        nix::sys::stat::fchmodat(
            devfd,
            name,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| format!("chmod /dev/{name}: {e}"))?;
    }
    for dir in ["pts", "shm", "mqueue"] {
        nix::sys::stat::mkdirat(devfd, dir, Mode::from_bits_truncate(0o755))
            .map_err(|e| format!("mkdir /dev/{dir}: {e}"))?;
    }
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("/proc/kcore", "core"),
        ("pts/ptmx", "ptmx"),
    ];
    for (target, name) in links {
        symlinkat(target, devfd, name).map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    mount_in(
        root,
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_in(
        root,
        "/dev/shm",
        "tmpfs",
        quiet,
        Some("mode=1777,size=65536k"),
    )?;
    mount_in(root, "/dev/mqueue", "mqueue", quiet, None)
}

fn mount_sys(root: &RootDir, network: NetworkMode) -> Result<(), String> {
    ensure_dir(root, "/sys")?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    match mount_in(root, "/sys", "sysfs", flags, None) {
        Err(_) if network == NetworkMode::Host => {
            bind_readonly(root, Path::new("/sys"), "/sys", true)
        }
        other => other,
    }
}

/// Binds the host file `source` read-only over `target`, creating an empty placeholder first
/// when the image has none (removed again afterwards as a mount stub).
fn bind_file(root: &RootDir, source: &Path, target: &str) -> Result<(), String> {
    root.ensure_file(target)
        .map_err(|e| format!("creating {target}: {e}"))?;
    bind_readonly(root, source, target, false)
}

fn bind_readonly(
    root: &RootDir,
    source: &Path,
    target: &str,
    recursive: bool,
) -> Result<(), String> {
    let none = None::<&str>;
    let src = fs::File::open(source).map_err(|e| format!("opening {}: {e}", source.display()))?;
    let src_path = format!("/proc/self/fd/{}", src.as_raw_fd());
    let dst = root
        .open_path(target)
        .map_err(|e| format!("opening {target}: {e}"))?;
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(
        Some(src_path.as_str()),
        fd_path(&dst).as_str(),
        none,
        flags,
        none,
    )
    .map_err(|e| format!("binding {} on {target}: {e}", source.display()))?;
    remount_readonly(root, target)
}

/// One of the step's own mounts, as BuildKit has runc make it: a bind (also of a secret file
/// or a forwarding socket) is `rbind` (plus a read-only remount for `ro`), a tmpfs is `nosuid`
/// with the size asked for. A missing target
/// was created on the host already (and is removed afterwards), except under `/dev` and inside
/// another of the step's mounts, where it is made here.
fn mount_step(root: &RootDir, m: &RequestMount) -> Result<(), String> {
    let target = m.target.as_str();
    if root.open_path(target).is_err() {
        let created = if m.is_file {
            root.ensure_file(target)
        } else {
            root.mkdir_all(target, 0o755, 0, 0)
        };
        created.map_err(|e| format!("creating the mount point {target}: {e}"))?;
    }
    match m.mount.kind {
        ExecMountKind::Tmpfs => {
            let mut flags = MsFlags::MS_NOSUID;
            if m.mount.readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            let size = m.mount.size.map(|s| format!("size={s}"));
            mount_in(root, target, "tmpfs", flags, size.as_deref())
        }
        // A file or socket made for the run is bound from the run's state directory.
        ExecMountKind::Bind | ExecMountKind::File { .. } | ExecMountKind::Socket { .. } => {
            let source = &m.mount.source;
            let src = nix::fcntl::open(
                source.as_path(),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("opening {}: {e}", source.display()))?;
            let dst = root
                .open_path(target)
                .map_err(|e| format!("opening {target}: {e}"))?;
            let none = None::<&str>;
            mount(
                Some(format!("/proc/self/fd/{}", src.as_raw_fd()).as_str()),
                fd_path(&dst).as_str(),
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| format!("binding {} on {target}: {e}", source.display()))?;
            if m.mount.readonly {
                remount_readonly(root, target)?;
            }
            Ok(())
        }
    }
}

fn remount_readonly(root: &RootDir, target: &str) -> Result<(), String> {
    let none = None::<&str>;
    let dst = root
        .open_path(target)
        .map_err(|e| format!("opening {target}: {e}"))?;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    mount(none, fd_path(&dst).as_str(), none, flags, none)
        .map_err(|e| format!("making {target} read-only: {e}"))
}

fn mask_paths(root: &RootDir) -> Result<(), String> {
    let none = None::<&str>;
    for path in super::READONLY_PATHS {
        let Ok(fd) = root.open_path(path) else {
            continue;
        };
        mount(
            Some(fd_path(&fd).as_str()),
            fd_path(&fd).as_str(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| format!("binding {path}: {e}"))?;
        remount_readonly(root, path)?;
    }
    let null = root
        .open_path("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    for path in super::MASKED_PATHS {
        let Ok(fd) = root.open_path(path) else {
            continue;
        };
        let is_dir = nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
        });
        let result = if is_dir {
            mount(
                Some("tmpfs"),
                fd_path(&fd).as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                none,
            )
        } else {
            mount(
                Some(fd_path(&null).as_str()),
                fd_path(&fd).as_str(),
                none,
                MsFlags::MS_BIND,
                none,
            )
        };
        result.map_err(|e| format!("masking {path}: {e}"))?;
    }
    Ok(())
}

/// Limits the bounding set to [`DEFAULT_CAPS`]; for root that is what exec leaves permitted.
fn drop_capabilities() -> Result<(), String> {
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| !DEFAULT_CAPS.contains(c)) {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            nix::libc::prctl(
                nix::libc::PR_CAPBSET_DROP,
                cap as nix::libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc != 0 && Errno::last() != Errno::EINVAL {
            return Err(format!("dropping capability {cap}: {}", Errno::last()));
        }
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the current network namespace.
fn loopback_up() -> Result<(), Errno> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; the ioctls read and write only that struct.
    unsafe {
        let mut req: nix::libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as nix::libc::c_char;
        }
        Errno::result(nix::libc::ioctl(
            sock.as_raw_fd(),
            nix::libc::SIOCGIFFLAGS,
            &mut req,
        ))?;
        req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short;
        Errno::result(nix::libc::ioctl(
            sock.as_raw_fd(),
            nix::libc::SIOCSIFFLAGS,
            &req,
        ))?;
    }
    Ok(())
}
