//! Build automation for Remedy, run as `cargo xtask <command>`.
//!
//! `main` only parses flags and dispatches; each subcommand is a module with a `run`.

mod e2e;
mod envs;
mod flags;
mod phases;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let flags = match flags::Xtask::try_parse() {
        Ok(flags) => flags,
        Err(err) => return usage_error(err),
    };
    let result = match flags.subcommand {
        flags::XtaskCmd::E2e(cmd) => cmd.run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
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
    let first = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
    let services = envs::Service::names().join(", ");
    eprintln!("error: {first} (services: {services}; see `cargo xtask e2e --help`)");
    ExitCode::from(2)
}
