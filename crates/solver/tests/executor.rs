//! The executors against a busybox root filesystem: every test runs once per executor available
//! (builtin always; runc and crun when installed, skipped with a printed reason otherwise).
//!
//! The builtin executor re-executes the current binary as its helper. Here that binary is this
//! test binary, whose `main` belongs to libtest, so the helper is started from an `.init_array`
//! constructor, which runs before `main` and gets argc/argv from glibc.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_solver::executor::{
    init_hook_from, BuiltinExecutor, ExecError, ExecMount, ExecMountKind, ExecSpec, Executor,
    OciRuntimeExecutor, SecretBytes, Stream,
};
use kiln_solver::NetworkMode;

#[used]
#[link_section = ".init_array"]
static HELPER_HOOK: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = helper_hook;

extern "C" fn helper_hook(argc: c_int, argv: *const *const c_char, _env: *const *const c_char) {
    let args = (0..argc as usize).map(|i| {
        // SAFETY: glibc passes main's argc/argv to .init_array functions.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
        OsString::from_vec(arg.to_bytes().to_vec())
    });
    init_hook_from(args.collect::<Vec<_>>());
}

const APPLETS: &[&str] = &[
    "sh", "id", "cat", "echo", "ls", "wc", "hostname", "pwd", "sleep", "touch", "true", "env",
    "grep", "stat", "test", "cut",
];

/// A busybox rootfs in a temporary directory (on /tmp, ext4 here) without /proc, /dev, /sys or
/// /etc/hosts, so that anything kiln leaves behind shows.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn spec(&self, args: &[&str]) -> ExecSpec {
        ExecSpec {
            rootfs: self.rootfs(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            hostname: "kiln-test".into(),
            ..ExecSpec::default()
        }
    }

    fn sh(&self, script: &str) -> ExecSpec {
        self.spec(&["sh", "-c", script])
    }

    /// The executors to test, each with its state under the fixture's directory.
    fn executors(&self) -> Vec<Box<dyn Executor>> {
        let state = |name: &str| self.dir.path().join(format!("state-{name}"));
        let mut list: Vec<Box<dyn Executor>> =
            vec![Box::new(BuiltinExecutor::new(state("builtin")))];
        for runtime in ["runc", "crun"] {
            match find_in_path(runtime) {
                Some(binary) => {
                    let binary = self.runtime_binary(runtime, binary);
                    list.push(Box::new(OciRuntimeExecutor::new(binary, state(runtime))));
                }
                None => eprintln!("skipping {runtime}: not found in PATH"),
            }
        }
        let names: Vec<&str> = list.iter().map(|e| e.name()).collect();
        eprintln!("executors under test: {names:?}");
        list
    }

    /// crun 1.8 refuses to run on a cgroup v1/v2 hybrid host whose v2 hierarchy has controllers
    /// (this test machine); a wrapper hides that hierarchy from it in a private mount namespace.
    fn runtime_binary(&self, runtime: &str, binary: PathBuf) -> PathBuf {
        let controllers = fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers");
        if runtime != "crun" || controllers.map_or(true, |c| c.trim().is_empty()) {
            return binary;
        }
        eprintln!("crun: hybrid cgroups with v2 controllers; running it through a wrapper");
        let wrapper = self.dir.path().join("crun");
        let script = format!(
            "#!/bin/sh\nexec unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"' {} \"$@\"\n",
            binary.display()
        );
        fs::write(&wrapper, script).unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        wrapper
    }

    /// Every path under the rootfs with its type, mode, owner, size and mtime.
    fn listing(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.rootfs(), &self.rootfs(), &mut out);
        out
    }

    fn state_is_empty(&self, executor: &dyn Executor) -> bool {
        let state = self.dir.path().join(format!("state-{}", executor.name()));
        let leftovers: Vec<_> = fs::read_dir(&state)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("run-"))
                    .collect()
            })
            .unwrap_or_default();
        let containers = fs::read_dir(state.join("state"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        leftovers.is_empty() && containers == 0
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let meta = fs::symlink_metadata(dir).unwrap();
    let rel = format!("/{}", dir.strip_prefix(root).unwrap().display());
    out.insert(
        rel,
        format!(
            "{:o} {}:{} {} {}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        ),
    );
    if meta.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            walk(root, &entry.unwrap().path(), out);
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(executor: &dyn Executor, spec: &ExecSpec) -> Result<Output, ExecError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let cancel = AtomicBool::new(false);
    let code = executor.run(
        spec,
        &mut |stream, chunk| match stream {
            Stream::Stdout => stdout.extend_from_slice(chunk),
            Stream::Stderr => stderr.extend_from_slice(chunk),
        },
        &cancel,
    )?;
    Ok(Output {
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn run_ok(executor: &dyn Executor, spec: &ExecSpec) -> Output {
    let out = run(executor, spec).unwrap_or_else(|e| panic!("{}: {e}", executor.name()));
    assert_eq!(
        out.code,
        0,
        "{}: exit code, stderr: {}",
        executor.name(),
        out.stderr
    );
    out
}

#[test]
fn executor_echo_leaves_the_rootfs_untouched() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let before = fx.listing();
        let out = run_ok(&*ex, &fx.spec(&["echo", "hello"]));
        assert_eq!(out.stdout, "hello\n", "{}", ex.name());
        assert_eq!(fx.listing(), before, "{}: the rootfs changed", ex.name());
        assert!(fx.state_is_empty(&*ex), "{}: state left behind", ex.name());
    }
}

#[test]
fn executor_returns_exit_codes_and_stderr() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let out = run(&*ex, &fx.sh("echo oops >&2; exit 7")).unwrap();
        assert_eq!(
            (out.code, out.stderr.as_str()),
            (7, "oops\n"),
            "{}",
            ex.name()
        );
    }
}

#[test]
fn executor_writes_land_in_the_rootfs_and_nothing_else() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let name = format!("/out-{}.txt", ex.name());
        let mut expected = fx.listing();
        run_ok(&*ex, &fx.sh(&format!("echo data > {name}")));
        assert_eq!(
            fs::read_to_string(fx.rootfs().join(&name[1..])).unwrap(),
            "data\n"
        );
        let after = fx.listing();
        expected.insert(name.clone(), after[&name].clone());
        // The root directory's mtime changes because of the new file; nothing else may.
        expected.insert("/".into(), after["/"].clone());
        assert_eq!(after, expected, "{}", ex.name());
    }
}

#[test]
fn executor_resolves_users_and_groups() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let mut spec = fx.sh("id -u; id -g; id -G; echo $HOME");
        for (user, expected) in [
            ("", "0\n0\n0\n/root\n"),
            ("app", "1000\n1000\n1000 2000\n/home/app\n"),
            ("1000", "1000\n1000\n1000 2000\n/home/app\n"),
            ("1000:1000", "1000\n1000\n1000\n/home/app\n"),
            ("app:extra", "1000\n2000\n2000\n/home/app\n"),
            ("4242", "4242\n0\n0\n/\n"),
        ] {
            spec.user = user.into();
            let out = run_ok(&*ex, &spec);
            assert_eq!(out.stdout, expected, "{} as {user:?}", ex.name());
        }
        spec.user = "nobody".into();
        let err = run(&*ex, &spec).err().expect("unknown user must fail");
        assert_eq!(
            err.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
    }
}

#[test]
fn executor_creates_the_working_directory() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let cwd = format!("/work/{}/sub", ex.name());
        let mut spec = fx.spec(&["pwd"]);
        spec.cwd = cwd.clone();
        spec.user = "app".into();
        assert_eq!(
            run_ok(&*ex, &spec).stdout,
            format!("{cwd}\n"),
            "{}",
            ex.name()
        );
        let meta = fs::metadata(fx.rootfs().join(&cwd[1..])).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o755, 1000, 1000)
        );
    }
}

#[test]
fn executor_sets_hostname_and_hosts() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let out = run_ok(
            &*ex,
            &fx.sh("hostname; cat /etc/hosts; echo x >> /etc/hosts || echo ro"),
        );
        assert_eq!(
            out.stdout,
            "kiln-test\n127.0.0.1\tlocalhost kiln-test\n::1\tlocalhost ip6-localhost ip6-loopback\nro\n",
            "{}",
            ex.name()
        );
        assert!(
            !fx.rootfs().join("etc/hosts").exists(),
            "{}: /etc/hosts left",
            ex.name()
        );
        assert!(
            !fx.rootfs().join("etc/resolv.conf").exists(),
            "{}",
            ex.name()
        );
    }
}

#[test]
fn executor_keeps_an_existing_hosts_file() {
    let fx = Fixture::new();
    fs::write(fx.rootfs().join("etc/hosts"), "10.0.0.1 image\n").unwrap();
    fs::create_dir(fx.rootfs().join("proc")).unwrap();
    for ex in fx.executors() {
        let before = fx.listing();
        let out = run_ok(&*ex, &fx.spec(&["cat", "/etc/hosts"]));
        assert!(out.stdout.contains("localhost kiln-test"), "{}", ex.name());
        assert_eq!(fx.listing(), before, "{}", ex.name());
    }
}

#[test]
fn executor_runs_the_command_as_pid_1() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let out = run_ok(&*ex, &fx.sh("echo $$; ls /proc | grep -c '^[0-9]'"));
        // sh is pid 1; the only other process is the pipeline (ls and grep; grep may not have
        // been counted yet when ls ran).
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "1", "{}", ex.name());
        assert!(
            lines[1].parse::<u32>().unwrap() <= 3,
            "{}: {}",
            ex.name(),
            out.stdout
        );
        let out = run_ok(&*ex, &fx.spec(&["ls", "/dev"]));
        for dev in ["null", "zero", "urandom", "pts", "shm"] {
            assert!(
                out.stdout.lines().any(|l| l == dev),
                "{}: /dev lacks {dev}",
                ex.name()
            );
        }
    }
}

#[test]
fn executor_network_none_has_only_loopback() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let mut spec =
            fx.sh("grep -c : /proc/net/dev; ls /sys/class/net; cat /sys/class/net/lo/operstate");
        spec.network = NetworkMode::None;
        let out = run_ok(&*ex, &spec);
        assert_eq!(out.stdout, "1\nlo\nunknown\n", "{}", ex.name());
        spec.network = NetworkMode::Host;
        let out = run_ok(&*ex, &spec);
        let interfaces: u32 = out.stdout.lines().next().unwrap().parse().unwrap();
        assert!(
            interfaces > 1,
            "{}: host network shows {interfaces}",
            ex.name()
        );
    }
}

#[test]
fn executor_reports_a_missing_program() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let err = run(&*ex, &fx.spec(&["/bin/bash", "-c", "true"]))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "/bin/bash: no such file or directory in the image"
        );
        let err = run(&*ex, &fx.spec(&["make"])).err().unwrap();
        assert!(
            matches!(err, ExecError::ProgramNotInPath { .. }),
            "{}: {err}",
            ex.name()
        );
    }
}

#[test]
fn executor_streams_output_as_it_comes() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let start = Instant::now();
        let mut chunks = Vec::new();
        let cancel = AtomicBool::new(false);
        let spec = fx.sh("echo one; sleep 1; echo two");
        ex.run(
            &spec,
            &mut |_, c| chunks.push((start.elapsed(), c.to_vec())),
            &cancel,
        )
        .unwrap();
        let first = chunks
            .iter()
            .find(|(_, c)| c.starts_with(b"one"))
            .unwrap()
            .0;
        let last = chunks
            .iter()
            .find(|(_, c)| c.ends_with(b"two\n"))
            .unwrap()
            .0;
        assert!(
            last - first > Duration::from_millis(700),
            "{}: {chunks:?}",
            ex.name()
        );
    }
}

#[test]
fn executor_cancel_kills_everything() {
    let fx = Fixture::new();
    for (i, ex) in fx.executors().into_iter().enumerate() {
        let marker = format!("{}", 98760 + i);
        let before = fx.listing();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let spec = fx.sh(&format!("sleep {marker} & sleep {marker}"));
        let result = ex.run(&spec, &mut |_, _| {}, &cancel);
        setter.join().unwrap();
        assert!(
            matches!(result, Err(ExecError::Cancelled)),
            "{}: {result:?}",
            ex.name()
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{}", ex.name());
        assert!(!sleeping(&marker), "{}: a process survived", ex.name());
        let rootfs = fx.rootfs().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&rootfs),
            "{}: mount left: {mounts}",
            ex.name()
        );
        assert_eq!(fx.listing(), before, "{}", ex.name());
        assert!(fx.state_is_empty(&*ex), "{}: state left behind", ex.name());
    }
}

fn bind(source: &Path, target: &str, readonly: bool) -> ExecMount {
    ExecMount {
        source: source.to_path_buf(),
        target: target.into(),
        readonly,
        kind: ExecMountKind::Bind,
        size: None,
    }
}

fn tmpfs(target: &str) -> ExecMount {
    ExecMount {
        source: PathBuf::new(),
        target: target.into(),
        readonly: false,
        kind: ExecMountKind::Tmpfs,
        size: None,
    }
}

/// A host directory holding `f` (`from the host`), outside the rootfs.
fn host_dir(fx: &Fixture) -> PathBuf {
    let dir = fx.dir.path().join("host-src");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), "from the host\n").unwrap();
    dir
}

fn listing_of(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn executor_readonly_bind_of_a_host_dir() {
    let fx = Fixture::new();
    let src = host_dir(&fx);
    for ex in fx.executors() {
        let before = fx.listing();
        let host_before = listing_of(&src);
        let mut spec = fx.sh(
            "cat /in/deep/f; if touch /in/deep/new 2>/dev/null; then echo writable; fi; \
             echo data > /written",
        );
        spec.mounts = vec![bind(&src, "/in/deep", true)];
        let out = run_ok(&*ex, &spec);
        assert_eq!(out.stdout, "from the host\n", "{}", ex.name());
        assert_eq!(
            listing_of(&src),
            host_before,
            "{}: the source changed",
            ex.name()
        );
        let mut after = fx.listing();
        assert!(after.remove("/written").is_some(), "{}", ex.name());
        after.insert("/".into(), before["/"].clone());
        assert_eq!(
            after,
            before,
            "{}: the mount points /in and /in/deep must be gone",
            ex.name()
        );
        fs::remove_file(fx.rootfs().join("written")).unwrap();
        assert!(fx.state_is_empty(&*ex), "{}: state left behind", ex.name());
    }
}

#[test]
fn executor_readwrite_bind_writes_reach_the_source() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let src = fx.dir.path().join(format!("rw-{}", ex.name()));
        fs::create_dir_all(&src).unwrap();
        let before = fx.listing();
        let mut spec = fx.sh("echo written > /rw/out");
        spec.mounts = vec![bind(&src, "/rw", false)];
        run_ok(&*ex, &spec);
        assert_eq!(fs::read_to_string(src.join("out")).unwrap(), "written\n");
        assert_eq!(fx.listing(), before, "{}", ex.name());
    }
}

#[test]
fn executor_bind_of_a_single_file() {
    let fx = Fixture::new();
    let src = host_dir(&fx).join("f");
    for ex in fx.executors() {
        let before = fx.listing();
        let mut spec = fx.sh("cat /etc/conf.txt /opt/new/file.txt; test -f /opt/new/file.txt");
        spec.mounts = vec![
            bind(&src, "/etc/conf.txt", true),
            bind(&src, "/opt/new/file.txt", true),
        ];
        let out = run_ok(&*ex, &spec);
        assert_eq!(
            out.stdout,
            "from the host\nfrom the host\n",
            "{}",
            ex.name()
        );
        assert_eq!(
            fx.listing(),
            before,
            "{}: file mount points are removed",
            ex.name()
        );
    }
}

#[test]
fn executor_tmpfs_is_empty_writable_and_leaves_nothing() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let before = fx.listing();
        let mut spec = fx.sh(
            "ls -A /scratch | wc -l; echo x > /scratch/file && cat /scratch/file; \
             grep ' /scratch ' /proc/mounts | cut -d' ' -f3",
        );
        spec.mounts = vec![tmpfs("/scratch")];
        let out = run_ok(&*ex, &spec);
        let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        assert_eq!(lines, ["0", "x", "tmpfs"], "{}", ex.name());
        assert_eq!(fx.listing(), before, "{}", ex.name());
    }
}

#[test]
fn executor_existing_mount_target_keeps_its_content() {
    let fx = Fixture::new();
    let src = host_dir(&fx);
    fs::create_dir_all(fx.rootfs().join("keep")).unwrap();
    fs::write(fx.rootfs().join("keep/old.txt"), "old\n").unwrap();
    fs::create_dir_all(fx.rootfs().join("tmp")).unwrap();
    fs::write(fx.rootfs().join("tmp/t.txt"), "t\n").unwrap();
    for ex in fx.executors() {
        let before = fx.listing();
        let mut spec = fx.sh("ls /keep; ls /tmp | wc -l");
        spec.mounts = vec![bind(&src, "/keep", true), tmpfs("/tmp")];
        let out = run_ok(&*ex, &spec);
        let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            ["f", "0"],
            "{}: the mounts hide what is there",
            ex.name()
        );
        assert_eq!(fx.listing(), before, "{}", ex.name());
    }
}

#[test]
fn executor_runs_a_program_from_a_mount_under_dev() {
    let fx = Fixture::new();
    let src = fx.dir.path().join("pipes");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("EOF"), "#!/bin/sh\necho \"script $0\"\n").unwrap();
    fs::set_permissions(src.join("EOF"), fs::Permissions::from_mode(0o755)).unwrap();
    for ex in fx.executors() {
        let before = fx.listing();
        let mut spec = fx.spec(&["/dev/pipes/EOF"]);
        spec.mounts = vec![bind(&src, "/dev/pipes/", true)];
        let out = run_ok(&*ex, &spec);
        assert_eq!(out.stdout, "script /dev/pipes/EOF\n", "{}", ex.name());
        assert_eq!(
            fx.listing(),
            before,
            "{}: /dev was never in the rootfs",
            ex.name()
        );
    }
}

#[test]
fn executor_rejects_bad_mount_targets() {
    let fx = Fixture::new();
    let src = host_dir(&fx);
    for ex in fx.executors() {
        let before = fx.listing();
        for target in ["/", "/a/../..", "/../etc", "relative"] {
            let mut spec = fx.spec(&["true"]);
            spec.mounts = vec![bind(&src, target, true)];
            let err = run(&*ex, &spec).err();
            assert!(
                matches!(err, Some(ExecError::MountTarget { .. })),
                "{}: {target}: {err:?}",
                ex.name()
            );
        }
        let mut spec = fx.spec(&["true"]);
        spec.mounts = vec![bind(&fx.dir.path().join("missing"), "/m", true)];
        let err = run(&*ex, &spec).err();
        assert!(
            matches!(err, Some(ExecError::MountSource { .. })),
            "{}: {err:?}",
            ex.name()
        );
        assert_eq!(fx.listing(), before, "{}", ex.name());
    }
}

/// Whether any file under `dir` holds `needle`.
fn found_under(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(found_under(&path, needle));
        } else if meta.is_file()
            && fs::read(&path).is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn executor_secret_file_and_env_stay_off_disk_and_leave_nothing() {
    let fx = Fixture::new();
    let secret = b"s3cr3t-e7f1c0";
    for ex in fx.executors() {
        let before = fx.listing();
        let mut spec = fx.sh(
            "cat /run/secrets/tok; echo; stat -c '%a %u %g' /run/secrets/tok; \
             echo \"env:$TOKEN\"; if echo x > /run/secrets/tok; then echo writable; fi 2>/dev/null; \
             grep ' /run/secrets/tok ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; \
             grep -c /run- /proc/self/mountinfo || true",
        );
        spec.secret_env = vec![("TOKEN".into(), SecretBytes::new(b"env-value".to_vec()))];
        spec.mounts = vec![ExecMount {
            source: PathBuf::new(),
            target: "/run/secrets/tok".into(),
            readonly: true,
            kind: ExecMountKind::File {
                contents: SecretBytes::new(secret.to_vec()),
                mode: 0o440,
                uid: 1000,
                gid: 2000,
            },
            size: None,
        }];
        let out = run_ok(&*ex, &spec);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            &lines[..5],
            [
                "s3cr3t-e7f1c0",
                "440 1000 2000",
                "env:env-value",
                "tmpfs ro",
                // The run's state directory is no mount the step can see.
                "0"
            ],
            "{}: {}",
            ex.name(),
            out.stderr
        );
        assert_eq!(
            fx.listing(),
            before,
            "{}: /run and /run/secrets are removed",
            ex.name()
        );
        assert!(fx.state_is_empty(&*ex), "{}: state left behind", ex.name());
        assert_eq!(
            found_under(fx.dir.path(), secret),
            Vec::<PathBuf>::new(),
            "{}",
            ex.name()
        );
    }
}

#[test]
fn executor_socket_mount_is_a_proxy_with_the_mode_asked_for() {
    let fx = Fixture::new();
    let agent = fx.dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    for ex in fx.executors() {
        let before = fx.listing();
        let mut spec = fx.sh("stat -c '%F %a %u %g' /run/agent/sock");
        spec.mounts = vec![ExecMount {
            source: agent.clone(),
            target: "/run/agent/sock".into(),
            readonly: false,
            kind: ExecMountKind::Socket {
                mode: 0o660,
                uid: 1000,
                gid: 1000,
            },
            size: None,
        }];
        let out = run_ok(&*ex, &spec);
        assert_eq!(out.stdout, "socket 660 1000 1000\n", "{}", ex.name());
        assert_eq!(fx.listing(), before, "{}", ex.name());
        assert!(fx.state_is_empty(&*ex), "{}: state left behind", ex.name());
        let mut gone = fx.spec(&["true"]);
        gone.mounts = spec.mounts.clone();
        gone.mounts[0].source = fx.dir.path().join("no-agent.sock");
        let err = run(&*ex, &gone).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("no-agent.sock")),
            "{}: {err:?}",
            ex.name()
        );
        assert_eq!(fx.listing(), before, "{}", ex.name());
    }
}

/// Whether a `sleep <marker>` process exists.
fn sleeping(marker: &str) -> bool {
    let wanted = format!("sleep\0{marker}\0");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
}

/// Prints the cost of one `true` per executor (`cargo test -- --ignored --nocapture overhead`).
#[test]
#[ignore]
fn executor_overhead() {
    let fx = Fixture::new();
    for ex in fx.executors() {
        let spec = fx.spec(&["true"]);
        run_ok(&*ex, &spec);
        let runs = 20;
        let start = Instant::now();
        for _ in 0..runs {
            run_ok(&*ex, &spec);
        }
        eprintln!("{}: {:?} per run", ex.name(), start.elapsed() / runs);
    }
}
