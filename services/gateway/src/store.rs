//! Where RemediationRequests live, and the namespaces they go in: the Kubernetes API server
//! in production, an in-memory map in tests. Every failure of the API server is marked as
//! [`Dependency::KubernetesApi`], so the request answers 503 with a retry hint.

use std::{collections::BTreeMap, future::Future};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use remedy_api::RemediationRequest;
use serde_json::json;

use crate::failure::{Dependency, OnDependency};

/// Result of creating a RemediationRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// The resource was created.
    Created,
    /// A resource of that name already existed.
    AlreadyExists,
    /// The target namespace does not exist (a permanent error: retrying will not help).
    NamespaceNotFound,
}

/// Operations the gateway needs on RemediationRequests.
pub trait RrStore: Clone + Send + Sync + 'static {
    /// Creates `rr` (namespace and name set) with occurrence count 1 and `seen` as last seen.
    fn create(&self, rr: &RemediationRequest, seen: &str) -> impl Future<Output = anyhow::Result<Creation>> + Send;
    /// Increments the occurrence count and sets last seen; `None` when the resource does not exist.
    fn record_occurrence(
        &self,
        namespace: &str,
        name: &str,
        seen: &str,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;
    /// `Ok` when the backing API answers.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// The labels of namespace `name`; `None` when it does not exist.
    fn namespace_labels(
        &self,
        name: &str,
    ) -> impl Future<Output = anyhow::Result<Option<BTreeMap<String, String>>>> + Send;
}

/// RemediationRequests on a Kubernetes API server.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
}

impl KubeStore {
    /// A store using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Conflict retries of the optimistic occurrence update.
const CONFLICT_RETRIES: usize = 8;

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether a create failed because its namespace does not exist (as opposed to, say, the
/// CRD missing, which is a deployment fault worth retrying).
fn is_namespace_not_found(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) if status.code == 404 => {
            status.details.as_ref().is_some_and(|d| d.kind == "namespaces")
                || status.message.starts_with("namespaces \"")
        }
        _ => false,
    }
}

impl RrStore for KubeStore {
    async fn create(&self, rr: &RemediationRequest, seen: &str) -> anyhow::Result<Creation> {
        let ns = rr.metadata.namespace.as_deref().context("RemediationRequest without namespace")?;
        let name = rr.metadata.name.as_deref().context("RemediationRequest without name")?;
        let api: Api<RemediationRequest> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), rr).await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(409) => return Ok(Creation::AlreadyExists),
            Err(e) if is_namespace_not_found(&e) => return Ok(Creation::NamespaceNotFound),
            Err(e) => {
                return Err(e)
                    .on(Dependency::KubernetesApi)
                    .with_context(|| format!("creating RemediationRequest {ns}/{name}"));
            }
        }
        // The status subresource ignores status on create; set the first occurrence now. A
        // failure here is not fatal: an absent count reads as 1.
        let patch = json!({"status": {"occurrenceCount": 1, "lastSeen": seen}});
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!(%ns, %name, error = %e, "setting initial occurrence count");
        }
        Ok(Creation::Created)
    }

    async fn record_occurrence(&self, namespace: &str, name: &str, seen: &str) -> anyhow::Result<Option<i64>> {
        let api: Api<RemediationRequest> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..CONFLICT_RETRIES {
            let Some(rr) = api
                .get_opt(name)
                .await
                .on(Dependency::KubernetesApi)
                .with_context(|| format!("reading {namespace}/{name}"))?
            else {
                return Ok(None);
            };
            let count = next_count(&rr);
            let patch = json!({
                "metadata": {"resourceVersion": rr.metadata.resource_version},
                "status": {"occurrenceCount": count, "lastSeen": seen},
            });
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(Some(count)),
                Err(e) if api_code(&e) == Some(409) => continue,
                Err(e) if api_code(&e) == Some(404) => return Ok(None),
                Err(e) => {
                    return Err(e)
                        .on(Dependency::KubernetesApi)
                        .with_context(|| format!("updating occurrences of {namespace}/{name}"));
                }
            }
        }
        Err(anyhow::anyhow!("still conflicting after {CONFLICT_RETRIES} attempts"))
            .on(Dependency::KubernetesApi)
            .with_context(|| format!("updating occurrences of {namespace}/{name}"))
    }

    async fn ready(&self) -> Result<(), String> {
        self.client.apiserver_version().await.map(|_| ()).map_err(|e| format!("API server unreachable: {e}"))
    }

    async fn namespace_labels(&self, name: &str) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_opt(name)
            .await
            .on(Dependency::KubernetesApi)
            .with_context(|| format!("reading namespace {name}"))?;
        Ok(ns.map(|ns| ns.metadata.labels.unwrap_or_default()))
    }
}

/// The occurrence count after one more occurrence (an unset count means 1).
pub fn next_count(rr: &RemediationRequest) -> i64 {
    rr.status.as_ref().and_then(|s| s.occurrence_count).unwrap_or(1) + 1
}
