//! Writes the Remedy CRD YAML: `crdgen [DIR]` (default `test/manifests/crds`).

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let dir =
        std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(remedy_api::crdgen::CRD_DIR));
    match remedy_api::crdgen::write_all(&dir) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: writing {}: {e}", dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}
