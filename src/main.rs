//! The `kiln` binary: parses the command line and hands each subcommand to the library crates.

mod build;
mod cli;
mod images;
mod interrupt;
mod output;
mod progress;
mod prune;
mod secrets;
mod ssh;
mod state;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A RUN step's helper process is this binary re-executed: it must run before clap and
    // before any thread starts.
    kiln_solver::executor::init_hook();
    let cli = cli::Cli::parse();
    private_mount_namespace();
    let root = cli.root.clone().unwrap_or_else(state::default_root);
    interrupt::install();
    let result = match cli.command {
        cli::Command::Build(args) => build::run(&root, *args),
        cli::Command::Prune(_) => prune::run(&root),
        cli::Command::Images(args) => images::list(&root, args),
        cli::Command::Rmi(args) => images::remove(&root, args),
        cli::Command::Push(args) => images::push_command(&root, args),
        cli::Command::Save(args) => images::save(&root, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            render_error(e);
            if interrupt::flag().load(std::sync::atomic::Ordering::SeqCst) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Gives kiln a mount namespace of its own before any thread starts, so the overlay mounts of
/// a build vanish with the process however it ends (Ctrl-C, kill -9) and never show on the host.
fn private_mount_namespace() {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    if !nix::unistd::geteuid().is_root() || unshare(CloneFlags::CLONE_NEWNS).is_err() {
        return;
    }
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    );
}

fn render_error(e: anyhow::Error) {
    match e.downcast::<build::Rendered>() {
        Ok(build::Rendered(fe)) => {
            let report = fe.into_report();
            let handler = miette::GraphicalReportHandler::new_themed(
                miette::GraphicalTheme::unicode_nocolor(),
            );
            let mut out = String::new();
            if handler.render_report(&mut out, report.as_ref()).is_ok() {
                eprint!("ERROR: {out}");
            } else {
                eprintln!("ERROR: {report}");
            }
        }
        Err(e) => eprintln!("ERROR: {e:#}"),
    }
}
