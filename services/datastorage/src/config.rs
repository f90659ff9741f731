//! Configuration from the environment. The database password is kept inside the sqlx
//! connect options and never logged.

use anyhow::Context;
use remedy_api::runtime::{env_or, env_parse};
use sqlx::postgres::PgConnectOptions;

/// Default limit on request bodies (bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Connect options from `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_NAME`, `DATABASE_USER`
/// and `DATABASE_PASSWORD`.
pub fn database_from_env() -> anyhow::Result<PgConnectOptions> {
    let password = std::env::var("DATABASE_PASSWORD")
        .context("DATABASE_PASSWORD is not set (it comes from the postgresql-credentials Secret)")?;
    Ok(PgConnectOptions::new()
        .host(&env_or("DATABASE_HOST", "postgresql"))
        .port(env_parse("DATABASE_PORT", 5432u16)?)
        .database(&env_or("DATABASE_NAME", "remedy"))
        .username(&env_or("DATABASE_USER", "remedy"))
        .password(&password)
        .application_name("datastorage"))
}

/// Limit on request bodies from `MAX_BODY_BYTES`.
pub fn max_body_bytes() -> anyhow::Result<usize> {
    env_parse("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
}

/// A printable description of where the database is, without credentials.
pub fn describe(opts: &PgConnectOptions) -> String {
    format!("{}:{}/{} as {}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("?"), opts.get_username())
}
