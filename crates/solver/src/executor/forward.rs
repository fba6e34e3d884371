//! A forwarded socket (BuildKit's SSH agent forwarding): a unix socket made for one run, with
//! the mode and owner the step asked for, whose every connection is joined to a new connection
//! to the host's socket. The step never sees the host socket's path, its directory or its
//! permissions, only this proxy, bound onto its target.

use std::io;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A listening proxy; dropping it stops accepting (connections in flight end with their
/// peers, which die with the run).
pub(crate) struct SocketProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl SocketProxy {
    /// Listens on `path` (mode `mode`, owned by `uid:gid`) and forwards to `upstream`.
    pub fn start(path: &Path, upstream: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<Self> {
        // Fail now, not in the step, when the host socket is gone.
        drop(UnixStream::connect(upstream)?);
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = stop.clone();
            let upstream = upstream.to_path_buf();
            std::thread::Builder::new()
                .name("kiln-socket-proxy".into())
                .spawn(move || accept_loop(listener, &upstream, &stop))?
        };
        Ok(SocketProxy {
            path: path.to_path_buf(),
            stop,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor up so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: UnixListener, upstream: &Path, stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let upstream = upstream.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("kiln-socket-conn".into())
            .spawn(move || {
                if let Ok(server) = UnixStream::connect(&upstream) {
                    join(client, server);
                }
            });
    }
}

/// Copies both ways until each side has closed its half.
fn join(client: UnixStream, server: UnixStream) {
    let (Ok(client_w), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || pipe(server_r, client_w));
    pipe(client, server);
    let _ = back.join();
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
