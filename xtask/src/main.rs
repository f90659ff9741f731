//! Build automation for Remedy, run as `cargo xtask <command>`.
//!
//! `main` only parses flags and dispatches; each subcommand is a module with a `run`.

mod bench;
mod codegen;
mod e2e;
mod envs;
mod flags;
mod phases;
mod test;

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
        flags::XtaskCmd::Bench(cmd) => cmd.run(),
        flags::XtaskCmd::Test(cmd) => cmd.run(),
        flags::XtaskCmd::Codegen(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, from which every relative path is read.
pub fn project_root() -> &'static camino::Utf8Path {
    camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root")
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
    let hint = match std::env::args().nth(1).as_deref() {
        Some("bench") => "see `cargo xtask bench --help`".to_owned(),
        _ => format!("services: {}; see `cargo xtask e2e --help`", envs::Service::names().join(", ")),
    };
    eprintln!("error: {first} ({hint})");
    ExitCode::from(2)
}
