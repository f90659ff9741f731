//! RemediationOrchestrator: a controller driving RemediationRequests through their children;
//! it talks only to the API server.

use super::{Env, ids};

pub(super) fn tasks(env: &mut Env<'_>) {
    env.cluster();
    env.crds();
    env.images(&["remediationorchestrator"]);
    env.service("remediationorchestrator", &[ids::NAMESPACE, ids::CRDS]);
    env.specs("remediationorchestrator", &["remediationorchestrator"]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deps_of, kind};
    use super::super::{Service, ids};

    #[test]
    fn needs_only_crds_and_its_image() {
        let plan = Service::Remediationorchestrator.plan(&kind()).unwrap();
        assert!(plan.index_of(ids::POSTGRESQL).is_none());
        assert_eq!(
            deps_of(&plan, "remediationorchestrator"),
            ["crds", "load-image-remediationorchestrator", "namespace"]
        );
    }
}
