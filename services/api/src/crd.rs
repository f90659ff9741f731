//! The CustomResourceDefinitions of all Remedy resources.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{RemediationRequest, SignalProcessing, WorkflowExecution};

/// Every Remedy CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![RemediationRequest::crd(), SignalProcessing::crd(), WorkflowExecution::crd()]
}
