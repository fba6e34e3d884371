//! The executor that drives an OCI runtime binary (runc, crun), as BuildKit's runc worker does:
//! a bundle with a `config.json` built like BuildKit's `oci.GenerateSpec` (containerd's default
//! spec with BuildKit's changes) in a per-run directory, `<runtime> --root STATE run --bundle DIR
//! ID` in the foreground with the output on pipes, `kill ID KILL` on cancel and `delete --force`
//! at the end.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::os::unix::process::CommandExt;

use super::prepare::Prepared;
use super::pump::pump;
use super::{ExecError, ExecMountKind, ExecSpec, Executor, Stream};
use crate::op::NetworkMode;

/// Runs processes with runc, crun or another runtime that takes runc's command line.
pub struct OciRuntimeExecutor {
    binary: PathBuf,
    state_root: PathBuf,
}

impl OciRuntimeExecutor {
    /// `binary` is the runtime; its state and the per-run bundles go under `state_root`.
    pub fn new(binary: impl Into<PathBuf>, state_root: impl Into<PathBuf>) -> Self {
        OciRuntimeExecutor {
            binary: binary.into(),
            state_root: state_root.into(),
        }
    }

    fn runtime(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(self.state_root.join("state"));
        command
    }
}

impl Executor for OciRuntimeExecutor {
    fn name(&self) -> &'static str {
        let file = self
            .binary
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        if file.contains("crun") {
            "crun"
        } else {
            "runc"
        }
    }

    fn run(
        &self,
        spec: &ExecSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &AtomicBool,
    ) -> Result<i32, ExecError> {
        let prepared = Prepared::new(spec, &self.state_root)?;
        let bundle = prepared.state.path();
        let config = runtime_spec(spec, &prepared)?;
        let json = serde_json::to_vec_pretty(&config).expect("spec serialises");
        fs::write(bundle.join("config.json"), json)
            .map_err(|e| ExecError::io("failed to write config.json", e))?;
        let id = container_id();

        let mut command = self.runtime();
        command
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let result = command
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: self.binary.clone(),
                source,
            })
            .and_then(|mut child| {
                let mut kill = || {
                    let _ = self
                        .runtime()
                        .args(["kill", &id, "KILL"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                };
                pump(&mut child, output, cancel, &mut kill)
                    .map_err(|e| ExecError::io("failed to read the process's output", e))
            });
        let _ = self
            .runtime()
            .args(["delete", "--force", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        prepared.finish();
        let ended = result?;
        if ended.cancelled {
            return Err(ExecError::Cancelled);
        }
        exit_code(ended.status, &self.binary)
    }
}

fn exit_code(status: std::process::ExitStatus, binary: &Path) -> Result<i32, ExecError> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(code),
        (None, Some(signal)) => Err(ExecError::Setup(format!(
            "{} was killed by signal {signal}",
            binary.display()
        ))),
        _ => Err(ExecError::Setup(format!(
            "{} ended with {status}",
            binary.display()
        ))),
    }
}

/// A container id unique in this process and across processes (runc wants `[\w+-.]+`).
fn container_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "kiln-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// containerd's `defaultUnixCaps`, which BuildKit keeps for RUN.
fn default_caps() -> HashSet<Capability> {
    use Capability::*;
    [
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
    .into_iter()
    .collect()
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, ExecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_error)
}

fn spec_error(e: oci_spec::OciSpecError) -> ExecError {
    ExecError::Setup(format!("building config.json: {e}"))
}

/// The runtime spec: containerd's defaults as BuildKit adjusts them (no rlimits, new privileges
/// allowed, read-only binds of hosts and resolv.conf, the network namespace only when the step
/// has no network).
fn runtime_spec(spec: &ExecSpec, prepared: &Prepared) -> Result<Spec, ExecError> {
    let rootfs = spec
        .rootfs
        .canonicalize()
        .map_err(|e| ExecError::io(format!("failed to resolve {}", spec.rootfs.display()), e))?;
    let user = UserBuilder::default()
        .uid(prepared.user.uid)
        .gid(prepared.user.gid)
        .additional_gids(prepared.user.sgids.clone())
        .build()
        .map_err(spec_error)?;
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(default_caps())
        .effective(default_caps())
        .permitted(default_caps())
        .build()
        .map_err(spec_error)?;
    caps.set_inheritable(None).set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(spec.args.clone())
        .env(prepared.env.clone())
        .cwd(prepared.cwd.clone())
        .capabilities(caps)
        .no_new_privileges(false)
        .build()
        .map_err(spec_error)?;
    // BuildKit drops containerd's RLIMIT_NOFILE default when the step sets no ulimit.
    process.set_rlimits(None);

    let hosts = prepared.hosts.to_string_lossy();
    let resolv_conf = prepared.resolv_conf.to_string_lossy();
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount("/etc/resolv.conf", "bind", &resolv_conf, &["rbind", "ro"])?,
        mount("/etc/hosts", "bind", &hosts, &["rbind", "ro"])?,
    ];
    // The step's own mounts, after the standard ones, as BuildKit's GenerateSpec adds them.
    for m in &prepared.mounts {
        let mut options: Vec<String> = Vec::new();
        let (typ, source) = match m.mount.kind {
            // A file or socket made for the run is bound from the bundle directory.
            ExecMountKind::Bind | ExecMountKind::File { .. } | ExecMountKind::Socket { .. } => {
                options.push("rbind".into());
                ("bind", m.mount.source.to_string_lossy().into_owned())
            }
            ExecMountKind::Tmpfs => {
                options.push("nosuid".into());
                if let Some(size) = m.mount.size {
                    options.push(format!("size={size}"));
                }
                ("tmpfs", "tmpfs".to_string())
            }
        };
        if m.mount.readonly {
            options.push("ro".into());
        }
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        mounts.push(mount(&m.target, typ, &source, &options)?);
    }

    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if spec.network == NetworkMode::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    let namespaces = kinds
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(spec_error)?;
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let deny_all_devices = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_error)?;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_all_devices])
        .build()
        .map_err(spec_error)?;
    let linux = LinuxBuilder::default()
        .resources(resources)
        .namespaces(namespaces)
        .masked_paths(strings(super::MASKED_PATHS))
        .readonly_paths(strings(super::READONLY_PATHS))
        .build()
        .map_err(spec_error)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()
                .map_err(spec_error)?,
        )
        .process(process)
        .hostname(prepared.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: NetworkMode) -> serde_json::Value {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::write(rootfs.join("bin/sh"), "").unwrap();
        fs::set_permissions(
            rootfs.join("bin/sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let spec = ExecSpec {
            rootfs,
            args: vec!["sh".into()],
            network,
            ..Default::default()
        };
        let prepared = Prepared::new(&spec, &dir.path().join("state")).unwrap();
        let config = runtime_spec(&spec, &prepared).unwrap();
        prepared.finish();
        serde_json::to_value(config).unwrap()
    }

    #[test]
    fn config_follows_buildkit_defaults() {
        let c = config(NetworkMode::Host);
        let process = &c["process"];
        assert!(process.get("rlimits").is_none());
        assert_eq!(process["noNewPrivileges"], false);
        assert_eq!(
            process["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert!(process["capabilities"].get("inheritable").is_none());
        assert_eq!(c["root"]["readonly"], false);
        assert_eq!(c["hostname"], "buildkitsandbox");
        let namespaces: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(namespaces, ["pid", "ipc", "uts", "mount"]);
        let hosts = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert_eq!(hosts["options"], serde_json::json!(["rbind", "ro"]));
    }

    #[test]
    fn config_without_network_adds_a_network_namespace() {
        let c = config(NetworkMode::None);
        let last = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["type"], "network");
    }
}
