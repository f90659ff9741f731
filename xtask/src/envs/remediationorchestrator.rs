//! RemediationOrchestrator: drives RemediationRequests through SignalProcessing and
//! WorkflowExecution children, so its environment runs the whole pipeline: both child
//! controllers, and datastorage for everyone's audit events. The default workflow runs in the
//! workflowexecution image.

use super::{Env, ids};

pub(super) fn tasks(env: &mut Env<'_>) {
    env.cluster();
    env.crds();
    env.images(&["remediationorchestrator", "signalprocessing", "workflowexecution", "datastorage"]);
    env.datastorage();
    for controller in ["signalprocessing", "workflowexecution", "remediationorchestrator"] {
        env.service(controller, &[ids::NAMESPACE, ids::CRDS]);
    }
    env.specs(
        "remediationorchestrator",
        &["remediationorchestrator", "signalprocessing", "workflowexecution", "datastorage"],
    );
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deps_of, kind};
    use super::super::{Service, ids};

    #[test]
    fn runs_the_whole_pipeline() {
        let plan = Service::Remediationorchestrator.plan(&kind()).unwrap();
        // Its manifest names the workflowexecution image (the default workflow), so it waits for it.
        assert_eq!(
            deps_of(&plan, "remediationorchestrator"),
            ["crds", "load-image-remediationorchestrator", "load-image-workflowexecution", "namespace"]
        );
        assert_eq!(
            deps_of(&plan, ids::SPECS),
            ["build-specs", "datastorage", "remediationorchestrator", "signalprocessing", "workflowexecution"]
        );
    }
}
