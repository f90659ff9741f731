//! Environment classification and the priority table. Pure logic.
//!
//! Priority by severity (rows) and environment (columns):
//!
//! | severity \ environment | production | staging | development | test | unknown |
//! |------------------------|------------|---------|-------------|------|---------|
//! | critical               | P0         | P1      | P2          | P2   | P1      |
//! | warning                | P1         | P2      | P3          | P3   | P2      |
//! | info                   | P2         | P3      | P3          | P3   | P3      |
//! | other / missing        | P2         | P3      | P3          | P3   | P2      |

use std::collections::BTreeMap;

/// Namespace labels consulted for the environment, in order.
pub const ENVIRONMENT_LABELS: [&str; 3] = ["remedy.dev/environment", "environment", "env"];

/// The environment a namespace belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Serves real users.
    Production,
    /// Pre-production.
    Staging,
    /// Developers' playground.
    Development,
    /// Automated tests.
    Test,
    /// No recognised label.
    Unknown,
}

impl Environment {
    /// Lower-case name, as written into status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
            Self::Development => "development",
            Self::Test => "test",
            Self::Unknown => "unknown",
        }
    }
}

/// Classifies a namespace by the first of [`ENVIRONMENT_LABELS`] it carries.
pub fn environment(labels: &BTreeMap<String, String>) -> Environment {
    let Some(value) = ENVIRONMENT_LABELS.iter().find_map(|l| labels.get(*l)) else {
        return Environment::Unknown;
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "production" | "prod" | "prd" => Environment::Production,
        "staging" | "stage" | "stg" | "preprod" => Environment::Staging,
        "development" | "dev" => Environment::Development,
        "test" | "testing" | "qa" => Environment::Test,
        _ => Environment::Unknown,
    }
}

/// The priority (`P0` most urgent .. `P3`) of a signal with `severity` in `env`; see the table
/// in the module documentation.
pub fn priority(severity: &str, env: Environment) -> &'static str {
    use Environment::*;
    match (severity.trim().to_ascii_lowercase().as_str(), env) {
        ("critical", Production) => "P0",
        ("critical", Staging | Unknown) => "P1",
        ("critical", Development | Test) => "P2",
        ("warning", Production) => "P1",
        ("warning", Staging | Unknown) => "P2",
        ("warning", Development | Test) => "P3",
        ("info", Production) => "P2",
        ("info", _) => "P3",
        (_, Production | Unknown) => "P2",
        (_, _) => "P3",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_from_labels_in_order() {
        assert_eq!(environment(&labels(&[("environment", "prod")])), Environment::Production);
        assert_eq!(environment(&labels(&[("env", "Staging")])), Environment::Staging);
        assert_eq!(
            environment(&labels(&[("remedy.dev/environment", "dev"), ("environment", "production")])),
            Environment::Development
        );
        assert_eq!(environment(&labels(&[("env", "qa")])), Environment::Test);
        assert_eq!(environment(&labels(&[("env", "moon")])), Environment::Unknown);
        assert_eq!(environment(&labels(&[("team", "a")])), Environment::Unknown);
    }

    #[test]
    fn priority_table() {
        use Environment::*;
        let envs = [Production, Staging, Development, Test, Unknown];
        let table = [
            ("critical", ["P0", "P1", "P2", "P2", "P1"]),
            ("warning", ["P1", "P2", "P3", "P3", "P2"]),
            ("info", ["P2", "P3", "P3", "P3", "P3"]),
            ("", ["P2", "P3", "P3", "P3", "P2"]),
            ("page-me", ["P2", "P3", "P3", "P3", "P2"]),
        ];
        for (severity, row) in table {
            for (env, want) in envs.iter().zip(row) {
                assert_eq!(priority(severity, *env), want, "{severity} in {env:?}");
            }
        }
        assert_eq!(priority("CRITICAL", Production), "P0");
    }
}
