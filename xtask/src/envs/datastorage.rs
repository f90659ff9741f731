//! DataStorage: the audit event API over PostgreSQL.

use super::Env;

pub(super) fn tasks(env: &mut Env<'_>) {
    env.cluster();
    env.images(&["datastorage"]);
    env.datastorage();
    env.specs("datastorage", &["datastorage"]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deps_of, kind};
    use super::super::{Service, ids};

    #[test]
    fn needs_no_crds_and_specs_wait_for_datastorage() {
        let plan = Service::Datastorage.plan(&kind()).unwrap();
        assert!(plan.index_of(ids::CRDS).is_none());
        assert!(plan.index_of(ids::REDIS).is_none());
        assert_eq!(deps_of(&plan, ids::SPECS), ["build-specs", "datastorage"]);
    }
}
