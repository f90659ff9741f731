//! Build automation for Remedy, run as `cargo xtask <command>`.
//!
//! `main` only parses flags and dispatches; each subcommand is a module with a `run`.

mod backends;
mod bench;
mod builders;
mod catalog;
mod codegen;
mod e2e;
mod envs;
mod flags;
mod hooks;
mod phases;
mod pre_push;
mod report_merge;
mod test;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let _ = ROOT.set(runtime_root());
    forget_cargo_run_env();
    let flags = match flags::Xtask::try_parse() {
        Ok(flags) => flags,
        Err(err) => return usage_error(err),
    };
    let result = match flags.subcommand {
        flags::XtaskCmd::E2e(cmd) => cmd.run(),
        flags::XtaskCmd::Bench(cmd) => cmd.run(),
        flags::XtaskCmd::Test(cmd) => cmd.run(),
        flags::XtaskCmd::Codegen(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        flags::XtaskCmd::Hooks(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        flags::XtaskCmd::PrePush(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        flags::XtaskCmd::Report(cmd) => cmd.run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo run` hands the xtask its package's variables. The cargo commands the xtask runs would
/// inherit them and rebuild whatever watches them (ring's build script watches
/// `CARGO_MANIFEST_DIR`), and then the user's next own build rebuilds it back.
fn forget_cargo_run_env() {
    const VARS: [&str; 5] =
        ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE"];
    let keys: Vec<_> = std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| key.to_str().is_some_and(|k| VARS.contains(&k) || k.starts_with("CARGO_PKG_")))
        .collect();
    for key in keys {
        // SAFETY: first thing in `main`, before any other thread exists.
        unsafe { std::env::remove_var(key) };
    }
}

static ROOT: std::sync::OnceLock<camino::Utf8PathBuf> = std::sync::OnceLock::new();

/// The workspace root, from which every relative path is read.
pub fn project_root() -> &'static camino::Utf8Path {
    ROOT.get_or_init(|| built_in().to_owned())
}

/// The workspace this xtask was built in.
fn built_in() -> &'static camino::Utf8Path {
    camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root")
}

/// As rust-analyzer's xtask does: the workspace `CARGO_MANIFEST_DIR` names at run time (`cargo
/// xtask` sets it; a test points it at a throwaway copy of the workspace), else the one the
/// xtask was built in.
fn runtime_root() -> camino::Utf8PathBuf {
    std::env::var("CARGO_MANIFEST_DIR")
        .ok()
        .map(camino::Utf8PathBuf::from)
        .filter(|dir| dir.ends_with("xtask") && dir.join("Cargo.toml").is_file())
        .and_then(|dir| dir.parent().map(camino::Utf8Path::to_owned))
        .unwrap_or_else(|| built_in().to_owned())
}

/// Help and version go to stdout with exit 0; a usage error is one line on stderr and exit 2.
fn usage_error(err: clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = err.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_owned();
    if first.ends_with(':') {
        first = format!("{first} {}", lines.next().unwrap_or_default());
    }
    // The hint is the subcommand's own help; e2e's, with the services, when there is none.
    let subcommand =
        std::env::args().nth(1).filter(|s| s != "e2e" && flags::Xtask::command().find_subcommand(s).is_some());
    match subcommand {
        Some(subcommand) => eprintln!("error: {first} (see `cargo xtask {subcommand} --help`)"),
        None => {
            let services = catalog::catalog().names().join(", ");
            eprintln!("error: {first} (services: {services}, or all; see `cargo xtask e2e --help`)");
        }
    }
    ExitCode::from(2)
}
