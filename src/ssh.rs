//! `--ssh`, as buildx reads it: `default` or `ID` (the agent of `$SSH_AUTH_SOCK`), or
//! `ID=SOCKET`. Each socket is checked before the build starts: it must exist and be a socket.
//! (buildx also takes private key files and several paths per id; kiln forwards one agent
//! socket per id and says so for anything else.)

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// The agent socket of each `--ssh` id; a later one with the same id replaces an earlier one.
pub fn sockets(specs: &[String]) -> Result<HashMap<String, PathBuf>> {
    let mut sockets = HashMap::new();
    for spec in specs {
        let (id, path) = socket(spec).with_context(|| format!("--ssh {spec}"))?;
        sockets.insert(id, path);
    }
    Ok(sockets)
}

fn socket(spec: &str) -> Result<(String, PathBuf)> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, paths)) => (id, Some(paths)),
        None => (spec, None),
    };
    let id = if id.is_empty() { "default" } else { id };
    let path = match paths {
        None | Some("") => match std::env::var_os("SSH_AUTH_SOCK") {
            Some(sock) if !sock.is_empty() => PathBuf::from(sock),
            _ => bail!("no agent socket given and SSH_AUTH_SOCK is not set"),
        },
        Some(paths) if paths.contains(',') => {
            bail!("several paths for one id are not supported yet: give one agent socket")
        }
        Some(path) => PathBuf::from(path),
    };
    let meta =
        std::fs::metadata(&path).with_context(|| format!("the agent socket {}", path.display()))?;
    if !meta.file_type().is_socket() {
        bail!(
            "{} is not a socket: private key files are not supported yet, give an SSH agent socket",
            path.display()
        );
    }
    Ok((id.to_string(), path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn ssh_specs_name_agent_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let got = sockets(&[format!("key={}", sock.display())]).unwrap();
        assert_eq!(got["key"], sock);
        let file = dir.path().join("id_rsa");
        std::fs::write(&file, "key").unwrap();
        for (spec, needle) in [
            (format!("default={}", file.display()), "not a socket"),
            (
                format!("default={}", dir.path().join("gone").display()),
                "gone",
            ),
            (format!("a={0},{0}", sock.display()), "not supported yet"),
        ] {
            let err = format!("{:#}", sockets(std::slice::from_ref(&spec)).unwrap_err());
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }
}
