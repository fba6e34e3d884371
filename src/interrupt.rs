//! Ctrl-C and SIGTERM: the first one asks the build to stop (the running step is killed, mounts
//! and temp dirs are cleaned up as the build unwinds); a second one ends kiln at once.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The flag the solver checks.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

extern "C" fn on_signal(sig: nix::libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // Second signal: no more waiting.
        unsafe { nix::libc::_exit(128 + sig) };
    }
}

pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit.
        let _ = unsafe { sigaction(sig, &action) };
    }
}
