//! `cargo xtask codegen`: regenerates the checked-in CRD manifests from the Rust types in
//! `services/api`. A test there fails when they are stale.

use xshell::{Shell, cmd};

use crate::flags;

impl flags::Codegen {
    pub fn run(self) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        sh.change_dir(crate::project_root());
        cmd!(sh, "cargo run --quiet --locked --package remedy-api --bin crdgen -- test/manifests/crds").run()?;
        Ok(())
    }
}
