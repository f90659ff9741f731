//! Gateway: signals in over HTTP, deduplicated in Redis, RemediationRequests out, audit events
//! to datastorage.

use super::{Env, ids};

pub(super) fn tasks(env: &mut Env<'_>) {
    env.cluster();
    env.crds();
    env.images(&["gateway", "datastorage"]);
    env.datastorage();
    env.redis();
    env.service("gateway", &[ids::NAMESPACE, ids::CRDS, ids::REDIS, "datastorage"]);
    env.specs("gateway", &["gateway"]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deps_of, kind};
    use super::super::{Service, ids};

    #[test]
    fn edges_match_the_real_dependencies() {
        let plan = Service::Gateway.plan(&kind()).unwrap();
        // Builds wait for nothing, so they overlap cluster creation.
        assert_eq!(deps_of(&plan, ids::BINARIES), Vec::<String>::new());
        assert_eq!(deps_of(&plan, ids::CLUSTER), Vec::<String>::new());
        assert_eq!(deps_of(&plan, "build-image-gateway"), [ids::BINARIES]);
        assert_eq!(deps_of(&plan, ids::CRDS), [ids::CLUSTER]);
        assert_eq!(deps_of(&plan, ids::NAMESPACE), [ids::CLUSTER]);
        assert_eq!(deps_of(&plan, "load-image-gateway"), ["build-image-gateway", ids::CLUSTER]);
        assert_eq!(deps_of(&plan, ids::POSTGRESQL), [ids::NAMESPACE]);
        assert_eq!(deps_of(&plan, ids::REDIS), [ids::NAMESPACE]);
        assert_eq!(deps_of(&plan, ids::MIGRATIONS), ["load-image-datastorage", ids::POSTGRESQL]);
        assert_eq!(deps_of(&plan, "datastorage"), ["load-image-datastorage", ids::MIGRATIONS]);
        assert_eq!(deps_of(&plan, "gateway"), ["crds", "datastorage", "load-image-gateway", "namespace", "redis"]);
        assert_eq!(deps_of(&plan, ids::BUILD_SPECS), [ids::BINARIES]);
        assert_eq!(deps_of(&plan, ids::SPECS), [ids::BUILD_SPECS, "gateway"]);
    }
}
