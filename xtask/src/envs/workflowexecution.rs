//! WorkflowExecution: a controller running workflows as Jobs, auditing to datastorage.

use super::{Env, ids};

pub(super) fn tasks(env: &mut Env<'_>) {
    env.cluster();
    env.crds();
    env.images(&["workflowexecution", "datastorage"]);
    env.datastorage();
    env.service("workflowexecution", &[ids::NAMESPACE, ids::CRDS]);
    env.specs("workflowexecution", &["workflowexecution", "datastorage"]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deps_of, kind};
    use super::super::{Service, ids};

    #[test]
    fn specs_wait_for_the_controller_and_datastorage() {
        let plan = Service::Workflowexecution.plan(&kind()).unwrap();
        assert_eq!(deps_of(&plan, "workflowexecution"), ["crds", "load-image-workflowexecution", "namespace"]);
        assert_eq!(deps_of(&plan, ids::SPECS), ["build-specs", "datastorage", "workflowexecution"]);
    }
}
