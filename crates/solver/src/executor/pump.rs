//! Streams a child's stdout and stderr to the caller as chunks arrive, watching the cancel flag
//! while it waits.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::Stream;

/// How often the cancel flag is looked at.
const TICK: Duration = Duration::from_millis(50);

/// How long output is still read after a kill before giving up on it.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(10);

/// How the child ended.
pub(crate) struct Ended {
    pub status: ExitStatus,
    pub cancelled: bool,
}

/// Copies the child's output to `output` until both pipes close, then waits for it. Once
/// `cancel` is set, `kill` is called (again every tick, so it may retry) until the pipes close.
pub(crate) fn pump(
    child: &mut Child,
    output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
    kill: &mut dyn FnMut(),
) -> io::Result<Ended> {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut buf = vec![0u8; 64 * 1024];
    let mut killed_at: Option<Instant> = None;
    while stdout.is_some() || stderr.is_some() {
        if cancel.load(Ordering::Relaxed) {
            let since = *killed_at.get_or_insert_with(Instant::now);
            kill();
            if since.elapsed() > DRAIN_AFTER_KILL {
                break;
            }
        }
        let (out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(2);
            let flags = PollFlags::POLLIN;
            if let Some(s) = &stdout {
                fds.push((Stream::Stdout, PollFd::new(s.as_fd(), flags)));
            }
            if let Some(s) = &stderr {
                fds.push((Stream::Stderr, PollFd::new(s.as_fd(), flags)));
            }
            let mut polled: Vec<PollFd> = fds.iter().map(|(_, fd)| *fd).collect();
            match poll(
                &mut polled,
                PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |which: Stream| {
                fds.iter()
                    .zip(&polled)
                    .any(|((s, _), fd)| *s == which && fd.revents().is_some_and(|r| !r.is_empty()))
            };
            (ready(Stream::Stdout), ready(Stream::Stderr))
        };
        if out_ready {
            read_chunk(&mut stdout, Stream::Stdout, &mut buf, output)?;
        }
        if err_ready {
            read_chunk(&mut stderr, Stream::Stderr, &mut buf, output)?;
        }
    }
    if killed_at.is_some() {
        kill();
    }
    let status = child.wait()?;
    Ok(Ended {
        status,
        cancelled: killed_at.is_some(),
    })
}

/// Reads what is there; closes the pipe at end of file.
fn read_chunk<R: Read>(
    pipe: &mut Option<R>,
    which: Stream,
    buf: &mut [u8],
    output: &mut dyn FnMut(Stream, &[u8]),
) -> io::Result<()> {
    let Some(reader) = pipe else { return Ok(()) };
    match reader.read(buf) {
        Ok(0) => *pipe = None,
        Ok(n) => output(which, &buf[..n]),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    Ok(())
}
