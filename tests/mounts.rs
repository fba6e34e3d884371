//! `RUN --mount` types beyond bind and tmpfs, end to end: build secrets (`--secret`), cache
//! mounts and `kiln prune`, SSH agent forwarding (`--ssh`), against a busybox base from a real
//! loopback registry, with the builtin executor and runc. The semantics are BuildKit's.

mod common;

use common::registry::Registry;
use common::{blob, Run, Sandbox};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RUNTIMES: &[&str] = &["builtin", "runc"];

fn setup() -> (Registry, String) {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    (reg, base)
}

/// `kiln build` of the sandbox's context into the OCI layout `out`, with `envs` set.
fn build_env(sb: &Sandbox, rt: &str, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let dest = format!("type=oci,dest={},tar=false", sb.path("out").display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root")
        .arg(sb.root())
        .args(["build", "-t", "test:latest", "--progress", "plain"])
        .args(["--runtime", rt, "--output", &dest])
        .args(extra)
        .arg(sb.ctx())
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    let _ = fs::remove_dir_all(sb.path("out"));
    Run(cmd.output().expect("run kiln"))
}

fn build(sb: &Sandbox, rt: &str, extra: &[&str]) -> Run {
    build_env(sb, rt, extra, &[])
}

/// Unpacks the OCI layout `out` (again) with umoci and returns the rootfs.
fn unpack(sb: &Sandbox) -> PathBuf {
    let _ = fs::remove_dir_all(sb.path("out-bundle"));
    sb.unpack("out", "latest")
}

fn read(rootfs: &Path, rel: &str) -> String {
    fs::read_to_string(rootfs.join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .trim_end()
        .to_string()
}

/// Whether a step printed the line `text` (as `#N 0.512 text` in plain progress).
fn printed(run: &Run, text: &str) -> bool {
    (run.stdout() + &run.stderr()).lines().any(|l| {
        l.split_once(' ')
            .filter(|(n, _)| n.starts_with('#'))
            .and_then(|(_, rest)| rest.split_once(' '))
            .is_some_and(|(stamp, rest)| stamp.parse::<f64>().is_ok() && rest == text)
    })
}

/// The paths in the layer tars of the OCI layout `out`, one list per layer.
fn layer_entries(sb: &Sandbox) -> Vec<Vec<String>> {
    let dir = sb.path("out");
    common::manifest(&dir)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let out = Command::new("tar")
                .arg("-tf")
                .arg(blob(&dir, l["digest"].as_str().unwrap()))
                .output()
                .unwrap();
            assert!(out.status.success(), "tar -tf a layer");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string())
                .collect()
        })
        .collect()
}

fn in_some_layer(sb: &Sandbox, path: &str) -> bool {
    layer_entries(sb)
        .iter()
        .flatten()
        .any(|e| e == path || e.starts_with(&format!("{path}/")))
}

/// The files under `dir` (not following symlinks) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file()
            && fs::read(&path).is_ok_and(|d| d.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path);
        }
    }
    found
}

/// The blobs of the OCI layout `out` that hold `needle`, compressed or not.
fn blobs_containing(sb: &Sandbox, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(sb.path("out/blobs/sha256")).unwrap().flatten() {
        let zcat = Command::new("zcat")
            .arg("-f")
            .arg(entry.path())
            .output()
            .unwrap();
        let raw = fs::read(entry.path()).unwrap();
        if [raw, zcat.stdout]
            .iter()
            .any(|d| d.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

fn sha16(data: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..16].to_string()
}

#[test]
fn secrets_from_files_and_env_reach_the_step_only() {
    let (_reg, base) = setup();
    for rt in RUNTIMES {
        let sb = Sandbox::new();
        let (file_secret, env_secret) = ("F1LE-s3cret-9b7e2a", "ENV-s3cret-4c1d8f");
        fs::write(sb.path("tok.txt"), file_secret).unwrap();
        sb.dockerfile(&format!(
            "FROM {base}
RUN --mount=type=secret,id=tok sha256sum < /run/secrets/tok | cut -c1-16 > /tok.sum && \\
    stat -c '%a %u %g' /run/secrets/tok > /tok.stat && ls /run/secrets > /tok.list
RUN --mount=type=secret,id=tok,target=/opt/creds/t,mode=0440,uid=1000,gid=100 \\
    sha256sum < /opt/creds/t | cut -c1-16 > /custom.sum && stat -c '%a %u %g' /opt/creds/t > /custom.stat && \\
    su app -c 'cat /opt/creds/t > /dev/null' && echo readable > /custom.app
RUN --mount=type=secret,id=envtok,env=API_TOKEN printf %s \"$API_TOKEN\" | sha256sum | cut -c1-16 > /env.sum && \\
    if test -e /run/secrets/envtok; then echo file; else echo no-file; fi > /env.file
RUN --mount=type=secret,id=absent if test -e /run/secrets/absent; then echo there; else echo none; fi > /absent
RUN for p in /run /opt/creds; do test -e $p && echo $p; done > /left; echo \"[$API_TOKEN]\" > /env.after
"
        ));
        let src = format!("id=tok,src={}", sb.path("tok.txt").display());
        let secret_args = [
            "--secret",
            &src,
            "--secret",
            "id=envtok,env=KILN_TEST_TOKEN",
        ];
        let meta = sb.path("metadata.json").display().to_string();
        let mut args = secret_args.to_vec();
        args.extend(["--metadata-file", &meta]);
        let first = build_env(&sb, rt, &args, &[("KILN_TEST_TOKEN", env_secret)]);
        first.ok();
        let r = unpack(&sb);
        assert_eq!(read(&r, "tok.sum"), sha16(file_secret), "{rt}");
        assert_eq!(read(&r, "tok.stat"), "400 0 0", "{rt}: default mode");
        assert_eq!(read(&r, "tok.list"), "tok", "{rt}");
        assert_eq!(read(&r, "custom.sum"), sha16(file_secret), "{rt}");
        assert_eq!(read(&r, "custom.stat"), "440 1000 100", "{rt}");
        assert_eq!(read(&r, "custom.app"), "readable", "{rt}: uid honoured");
        assert_eq!(read(&r, "env.sum"), sha16(env_secret), "{rt}: env=");
        assert_eq!(
            read(&r, "env.file"),
            "no-file",
            "{rt}: env= alone mounts no file"
        );
        assert_eq!(
            read(&r, "absent"),
            "none",
            "{rt}: a missing optional secret"
        );
        assert_eq!(read(&r, "left"), "", "{rt}: mount points are removed");
        assert_eq!(read(&r, "env.after"), "[]", "{rt}: env only for its step");
        for gone in ["run", "opt/creds"] {
            assert!(!in_some_layer(&sb, gone), "{rt}: /{gone} is in a layer");
        }

        // A changed secret keeps every step cached.
        fs::write(sb.path("tok.txt"), "F1LE-changed-0d5e").unwrap();
        let second = build_env(&sb, rt, &args, &[("KILN_TEST_TOKEN", "ENV-changed-77a3")]);
        second.ok();
        let cached = (second.stdout() + &second.stderr())
            .lines()
            .filter(|l| l.ends_with(" CACHED"))
            .count();
        assert!(cached >= 5, "{rt}: all RUNs cached:\n{}", second.stderr());
        let r = unpack(&sb);
        assert_eq!(read(&r, "tok.sum"), sha16(file_secret), "{rt}: not re-run");
        assert_eq!(read(&r, "env.sum"), sha16(env_secret), "{rt}: not re-run");

        for secret in [
            file_secret,
            env_secret,
            "F1LE-changed-0d5e",
            "ENV-changed-77a3",
        ] {
            for run in [&first, &second] {
                assert!(
                    !(run.stdout() + &run.stderr()).contains(secret),
                    "{rt}: {secret} in the output"
                );
            }
            let under_root = files_containing(&sb.root(), secret.as_bytes());
            assert!(under_root.is_empty(), "{rt}: {secret} in {under_root:?}");
            assert_eq!(blobs_containing(&sb, secret), Vec::<String>::new(), "{rt}");
            assert!(files_containing(&sb.path("metadata.json"), secret.as_bytes()).is_empty());
        }
    }
}

#[test]
fn a_required_secret_that_was_not_given_fails_before_any_step() {
    let (_reg, base) = setup();
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM {base}\nRUN echo first-step-ran\nRUN --mount=type=secret,id=npm,required=true cat /run/secrets/npm\n"
    ));
    let run = build(&sb, "builtin", &[]);
    run.fails_with(&[
        "Dockerfile:3",
        "\"npm\" is required",
        "RUN --mount=type=secret,id=npm,required=true",
    ]);
    assert!(!printed(&run, "first-step-ran"), "{}", run.stderr());
    // Given, it works.
    fs::write(sb.path("npm"), "x").unwrap();
    let src = format!("id=npm,src={}", sb.path("npm").display());
    build(&sb, "builtin", &["--secret", &src]).ok();
}

#[test]
fn bad_mounts_and_flags_fail_before_anything_runs() {
    let sb = Sandbox::new();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "RUN --mount=type=nope,target=/x true",
            &[],
            &["Dockerfile:2:5", "unsupported mount type \"nope\""],
        ),
        (
            "RUN --mount=type=cache,target=/c,colour=red true",
            &[],
            &["Dockerfile:2:5", "unexpected key \"colour\""],
        ),
        (
            "RUN --mount=type=secret,id=a,mode=9z true",
            &[],
            &["Dockerfile:2:5", "invalid mode=9z"],
        ),
        (
            "RUN --mount=type=cache,target=/ true",
            &[],
            &["Dockerfile:2:5", "can't be /"],
        ),
        (
            "RUN --mount=type=cache,target=../../../x true",
            &[],
            &["Dockerfile:2:5", "outside the root"],
        ),
        (
            "RUN --mount=type=secret,required=maybe,id=a true",
            &[],
            &["Dockerfile:2:5", "invalid value for required: maybe"],
        ),
        (
            "RUN --mount=type=secret true",
            &[],
            &["Dockerfile:2:5", "id, source or target"],
        ),
        (
            "RUN true",
            &["--secret", "id=a,src=/nonexistent/kiln-secret"],
            &["--secret", "/nonexistent/kiln-secret"],
        ),
        (
            "RUN true",
            &["--secret", "id=a,env=KILN_TEST_UNSET_VAR"],
            &["KILN_TEST_UNSET_VAR is not set"],
        ),
        (
            "RUN true",
            &["--ssh", "default=/nonexistent/agent.sock"],
            &["--ssh", "/nonexistent/agent.sock"],
        ),
    ];
    for (line, flags, needles) in cases {
        sb.dockerfile(&format!("FROM scratch\n{line}\n"));
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(flags);
        let ctx = sb.ctx().display().to_string();
        args.push(&ctx);
        let run = sb.kiln(&args);
        run.fails_with(needles);
        assert!(
            !run.stderr().contains("[internal]") && !sb.root().join("snapshots").exists(),
            "{line}: something ran:\n{}",
            run.stderr()
        );
    }
}

#[test]
fn cache_mounts_persist_across_builds_and_never_reach_a_layer() {
    let (_reg, base) = setup();
    for rt in RUNTIMES {
        let sb = Sandbox::new();
        let df = |id: &str| {
            format!(
                "FROM {base} AS seed
RUN mkdir /s && echo seeded > /s/seed.txt
FROM {base}
ARG RUN_ID
RUN --mount=type=cache,target=/var/cache/app,id={id} \\
    --mount=type=cache,target=/owned,uid=1000,gid=1000,mode=0750 \\
    --mount=type=cache,target=/ro,ro \\
    --mount=type=cache,target=/seeded,from=seed,source=/s \\
    echo run-$RUN_ID >> /var/cache/app/runs && cat /var/cache/app/runs > /seen && \\
    stat -c '%a %u %g' /owned > /owned.stat && \\
    if touch /ro/x 2>/dev/null; then echo rw; else echo ro; fi > /ro.check && \\
    cat /seeded/seed.txt > /seeded.txt && echo run-$RUN_ID >> /seeded/seed.txt
"
            )
        };
        sb.dockerfile(&df("app"));
        build(&sb, rt, &["--build-arg", "RUN_ID=1"]).ok();
        let r = unpack(&sb);
        assert_eq!(read(&r, "seen"), "run-1", "{rt}");
        assert_eq!(read(&r, "owned.stat"), "750 1000 1000", "{rt}");
        assert_eq!(read(&r, "ro.check"), "ro", "{rt}");
        assert_eq!(read(&r, "seeded.txt"), "seeded", "{rt}");

        let second = build(&sb, rt, &["--build-arg", "RUN_ID=2"]);
        second.ok();
        let r = unpack(&sb);
        assert_eq!(
            read(&r, "seen"),
            "run-1\nrun-2",
            "{rt}: the cache kept run-1"
        );
        assert_eq!(read(&r, "seeded.txt"), "seeded\nrun-1", "{rt}: seeded once");
        for path in ["var/cache/app", "owned", "ro", "seeded"] {
            assert!(!in_some_layer(&sb, path), "{rt}: /{path} is in a layer");
            assert!(!r.join(path).exists(), "{rt}: /{path} stayed");
        }
        assert!(
            !layer_entries(&sb)
                .iter()
                .flatten()
                .any(|e| e.ends_with("runs")),
            "{rt}: the cache's file is in a layer"
        );

        // The mount's definition is part of the key, its contents are not.
        let third = build(&sb, rt, &["--build-arg", "RUN_ID=2"]);
        third.ok();
        assert!(
            third.stderr().contains("CACHED"),
            "{rt}: {}",
            third.stderr()
        );
        sb.dockerfile(&df("other"));
        build(&sb, rt, &["--build-arg", "RUN_ID=2"]).ok();
        let r = unpack(&sb);
        assert_eq!(read(&r, "seen"), "run-2", "{rt}: another id, another cache");
    }
}

/// `[start, end]` of every step that wrote `start T` and `end T` lines (T from /proc/uptime).
fn intervals(log: &str) -> Vec<(f64, f64)> {
    let mut starts = Vec::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let (what, t) = line.split_once(' ').unwrap();
        let t: f64 = t.parse().unwrap();
        match what {
            "start" => starts.push(t),
            _ => out.push((starts.remove(0), t)),
        }
    }
    out
}

fn overlap(iv: &[(f64, f64)]) -> bool {
    let mut iv = iv.to_vec();
    iv.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    iv.windows(2).any(|w| w[1].0 < w[0].1)
}

/// Runs two kiln processes at once on one state root, each with a step using the cache
/// mount `id` with `sharing`; returns the start/end times the steps wrote inside the cache.
fn two_builds_at_once(base: &str, root: &Path, sharing: &str) -> Vec<(f64, f64)> {
    let id = format!("log-{sharing}");
    let boxes: Vec<Sandbox> = (0..2).map(|_| Sandbox::new()).collect();
    let children: Vec<_> = boxes
        .iter()
        .enumerate()
        .map(|(n, sb)| {
            sb.dockerfile(&format!(
                "FROM {base}
RUN --mount=type=cache,target=/c,id={id},sharing={sharing} \\
    echo \"start $(cut -d' ' -f1 /proc/uptime)\" >> /c/log && sleep 1.5 && \\
    echo \"end $(cut -d' ' -f1 /proc/uptime)\" >> /c/log && echo builder-{n} > /who
"
            ));
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("--root")
                .arg(root)
                .args(["build", "--progress", "plain"])
                .arg(sb.ctx())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        Run(child.wait_with_output().unwrap()).ok();
    }
    let caches = fs::read_dir(root.join("cache-mounts")).unwrap();
    let dir = caches
        .flatten()
        .map(|e| e.path())
        .find(|p| fs::read_to_string(p.join("id")).is_ok_and(|i| i == id))
        .expect("the cache mount's directory");
    intervals(&fs::read_to_string(dir.join("0/data/log")).unwrap())
}

#[test]
fn locked_cache_mounts_serialise_parallel_kiln_processes() {
    let (_reg, base) = setup();
    let sb = Sandbox::new();
    // Pull the base once, so that both builds start their steps together.
    sb.dockerfile(&format!("FROM {base}\nRUN true\n"));
    build(&sb, "builtin", &[]).ok();
    let shared = two_builds_at_once(&base, &sb.root(), "shared");
    assert_eq!(shared.len(), 2, "{shared:?}");
    assert!(
        overlap(&shared),
        "shared users run together (else this test proves nothing): {shared:?}"
    );
    let locked = two_builds_at_once(&base, &sb.root(), "locked");
    assert_eq!(locked.len(), 2, "{locked:?}");
    assert!(!overlap(&locked), "locked users overlapped: {locked:?}");
}

#[test]
fn prune_empties_cache_mounts() {
    let (_reg, base) = setup();
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM {base}\nARG N\nRUN --mount=type=cache,target=/c,id=prune-me ls /c | wc -l > /count && echo $N > /c/f$N\n"
    ));
    build(&sb, "builtin", &["--build-arg", "N=1"]).ok();
    build(&sb, "builtin", &["--build-arg", "N=2"]).ok();
    assert_eq!(read(&unpack(&sb), "count"), "1");
    let pruned = sb.kiln(&["prune"]);
    pruned.ok();
    assert!(
        pruned.stdout().contains("removed cache mount prune-me")
            && pruned.stdout().contains("1 cache mount removed"),
        "{}",
        pruned.stdout()
    );
    let left = fs::read_dir(sb.root().join("cache-mounts"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
    build(&sb, "builtin", &["--build-arg", "N=3"]).ok();
    assert_eq!(read(&unpack(&sb), "count"), "0", "emptied");
    let again = sb.kiln(&["prune"]);
    again.ok();
    assert!(again.stdout().contains("1 cache mount removed"));
}

#[test]
fn bind_of_a_stage_is_read_only_and_its_change_reruns_the_step() {
    let (_reg, base) = setup();
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM {base} AS stage
ARG V
RUN mkdir /out && echo $V > /out/v
FROM {base}
RUN --mount=type=bind,from=stage,source=/out,target=/in \\
    echo consumer-ran && cat /in/v > /v && if touch /in/x 2>/dev/null; then echo rw; else echo ro; fi > /ro
"
    ));
    let first = build(&sb, "builtin", &["--build-arg", "V=one"]);
    first.ok();
    assert!(printed(&first, "consumer-ran"));
    let r = unpack(&sb);
    assert_eq!((read(&r, "v"), read(&r, "ro")), ("one".into(), "ro".into()));
    let same = build(&sb, "builtin", &["--build-arg", "V=one"]);
    same.ok();
    assert!(!printed(&same, "consumer-ran"), "{}", same.stderr());
    let changed = build(&sb, "builtin", &["--build-arg", "V=two"]);
    changed.ok();
    assert!(printed(&changed, "consumer-ran"), "{}", changed.stderr());
    assert_eq!(read(&unpack(&sb), "v"), "two");
}

/// An ssh-agent on a socket in `dir`, holding a new key; killed when dropped.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
    fingerprint: String,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let ensure = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-packages.sh");
        assert!(Command::new(ensure)
            .arg("openssh-client")
            .status()
            .unwrap()
            .success());
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(common::procs::wait_until(
            std::time::Duration::from_secs(5),
            || socket.exists()
        ));
        let key = dir.join("id_ed25519");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
        let add = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(add.status.success(), "{add:?}");
        let list = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&list.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        Agent {
            child,
            socket,
            fingerprint,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts the host's `ssh-add` and the libraries it loads under `root`, at their host paths.
fn copy_ssh_add(root: &Path) {
    let ldd = Command::new("ldd")
        .arg("/usr/bin/ssh-add")
        .output()
        .unwrap();
    let mut files = vec![PathBuf::from("/usr/bin/ssh-add")];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        files.extend(path);
    }
    for file in files {
        let dest = root.join(file.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // The real file (ld.so is a symlink on the host).
        fs::copy(fs::canonicalize(&file).unwrap(), &dest).unwrap();
    }
}

#[test]
fn ssh_agents_are_forwarded_through_a_socket_with_the_mode_asked_for() {
    let (_reg, base) = setup();
    for rt in RUNTIMES {
        let sb = Sandbox::new();
        let agent = Agent::start(sb.dir.path());
        copy_ssh_add(&sb.ctx().join("sshroot"));
        sb.dockerfile(&format!(
            "FROM {base}
COPY sshroot/ /
RUN --mount=type=ssh ssh-add -l > /keys && echo $SSH_AUTH_SOCK > /sock && \\
    stat -c '%F %a %u %g' $SSH_AUTH_SOCK > /sock.stat
RUN --mount=type=ssh,id=other,target=/tmp/agent,mode=0660,uid=1000 \\
    su app -c 'SSH_AUTH_SOCK=/tmp/agent ssh-add -l' > /keys2 && echo $SSH_AUTH_SOCK > /sock2 && \\
    stat -c '%a %u' /tmp/agent > /stat2
RUN --mount=type=ssh,id=absent if test -e /run/buildkit/ssh_agent.0; then echo there; else echo none; fi > /absent
RUN for p in /run /tmp/agent; do test -e $p && echo $p; done > /left; true
"
        ));
        let other = format!("other={}", agent.socket.display());
        let sock = agent.socket.display().to_string();
        let run = build_env(
            &sb,
            rt,
            &["--ssh", "default", "--ssh", &other],
            &[("SSH_AUTH_SOCK", &sock)],
        );
        run.ok();
        let r = unpack(&sb);
        assert!(
            read(&r, "keys").contains(&agent.fingerprint),
            "{rt}: {}",
            read(&r, "keys")
        );
        assert_eq!(read(&r, "sock"), "/run/buildkit/ssh_agent.0", "{rt}");
        assert_eq!(read(&r, "sock.stat"), "socket 600 0 0", "{rt}");
        assert!(read(&r, "keys2").contains(&agent.fingerprint), "{rt}");
        assert_eq!(read(&r, "sock2"), "/tmp/agent", "{rt}: SSH_AUTH_SOCK");
        assert_eq!(read(&r, "stat2"), "660 1000", "{rt}");
        assert_eq!(read(&r, "absent"), "none", "{rt}: a missing optional agent");
        assert_eq!(read(&r, "left"), "", "{rt}: mount points are removed");
        assert!(!in_some_layer(&sb, "run"), "{rt}");

        sb.dockerfile(&format!(
            "FROM {base}\nRUN --mount=type=ssh,id=gone,required true\n"
        ));
        build(&sb, rt, &[]).fails_with(&["Dockerfile:2", "\"gone\" is required"]);
    }
}
