//! What the gateway specs share: the namespaces signals go to, callers with real
//! ServiceAccount tokens, requests, payloads and the locks of the specs that need the gateway
//! or datastorage to themselves.
//!
//! Setup is idempotent (fixed names, "already exists" accepted), so specs run in one process
//! or in one process each. Specs whose point is a caller's own rate limit bucket make their own
//! caller; the others share one per process.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenRequest, TokenRequestSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use remedy_api::RemediationRequest;
use remedy_e2e::{Env, RUN_LABEL, eventually, http};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// A lock the specs of one run share, in one process or many: a file lock (`flock`) on a file
/// named after the run. Released when dropped.
pub struct SpecLock(#[allow(dead_code)] std::fs::File);

async fn spec_lock(name: &str, exclusive: bool) -> SpecLock {
    let path = std::env::temp_dir().join(format!("remedy-e2e-{}-{name}.lock", Env::get().run_id));
    let file = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        if exclusive { file.lock() } else { file.lock_shared() }.map(|()| file)
    })
    .await
    .expect("lock task")
    .expect("lock file");
    SpecLock(file)
}

/// Taken by specs that restart the gateway. They may overlap one another (each waits for the
/// pods it saw to exit, and a rollout serves throughout), but never a spec that needs one
/// steady gateway pod.
pub async fn restarting_the_gateway() -> SpecLock {
    spec_lock("gateway-pod", false).await
}

/// Taken by specs that depend on one gateway pod throughout: its counters, its rate limit
/// buckets, or its forwarder meeting an outage. They run one at a time, never during a restart.
pub async fn one_steady_gateway() -> SpecLock {
    spec_lock("gateway-pod", true).await
}

/// The origin the manifest allows (`CORS_ALLOWED_ORIGINS`).
pub const ALLOWED_ORIGIN: &str = "https://console.remedy.example";

/// The label key that puts a namespace in the gateway's scope; the manifest sets the value to
/// the environment's namespace.
pub const MANAGED_KEY: &str = "remedy.dev/managed";

const ROLE: &str = "remedy-signal-sender";

/// The environment, a Kubernetes client, and the namespaces of this run's specs.
pub struct Gw {
    pub env: Env,
    pub client: kube::Client,
    /// A managed namespace where allowed callers may signal.
    pub ns: String,
    /// Where allowed callers live: its ServiceAccounts may signal in every namespace made by
    /// [`Gw::managed_namespace`].
    callers: String,
}

static SETUP: OnceCell<(String, String)> = OnceCell::const_new();

impl Gw {
    pub async fn get() -> Gw {
        let env = Env::get();
        let client = env.client().await;
        let (ns, callers) = SETUP
            .get_or_init(|| async {
                let client = env.client().await;
                let callers = format!("{}-callers", env.namespace);
                ensure_namespace(&env, &client, &callers, None).await;
                let ns = format!("{}-signals", env.namespace);
                ensure_namespace(&env, &client, &ns, Some(&env.namespace)).await;
                grant(&client, &ns, &callers).await;
                (ns, callers)
            })
            .await
            .clone();
        Gw { env, client, ns, callers }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.url("gateway"))
    }

    /// A new managed namespace where allowed callers may signal.
    pub async fn managed_namespace(&self, prefix: &str) -> String {
        let name = self.env.unique(prefix);
        ensure_namespace(&self.env, &self.client, &name, Some(&self.env.namespace)).await;
        grant(&self.client, &name, &self.callers).await;
        name
    }

    /// A new namespace with the managed label but no grant for the callers.
    pub async fn managed_namespace_without_grant(&self, prefix: &str) -> String {
        let name = self.env.unique(prefix);
        ensure_namespace(&self.env, &self.client, &name, Some(&self.env.namespace)).await;
        name
    }

    /// A new namespace without the managed label (callers may signal there by RBAC).
    pub async fn unmanaged_namespace(&self, prefix: &str) -> String {
        let name = self.env.unique(prefix);
        ensure_namespace(&self.env, &self.client, &name, None).await;
        grant(&self.client, &name, &self.callers).await;
        name
    }

    /// The caller most specs share: RBAC allows it to signal in the managed namespaces.
    pub async fn caller(&self) -> Caller {
        static SHARED: OnceCell<Caller> = OnceCell::const_new();
        SHARED.get_or_init(|| self.new_caller("alertmanager")).await.clone()
    }

    /// A caller of its own (its own rate limit bucket), allowed like [`Gw::caller`].
    pub async fn new_caller(&self, prefix: &str) -> Caller {
        self.service_account(&self.callers, prefix, vec![]).await
    }

    /// A caller no RBAC rule allows anything.
    pub async fn stranger(&self, prefix: &str) -> Caller {
        self.service_account(&self.env.namespace, prefix, vec![]).await
    }

    /// An allowed caller's token, but issued for another audience than the API server's.
    pub async fn caller_for_audience(&self, prefix: &str, audience: &str) -> Caller {
        self.service_account(&self.callers, prefix, vec![audience.to_owned()]).await
    }

    /// Allows `caller` to signal in `namespace` (a RoleBinding for it alone), once the API
    /// server says so.
    pub async fn allow(&self, caller: &Caller, namespace: &str) {
        ensure_role(&self.client, namespace).await;
        let binding = RoleBinding {
            metadata: ObjectMeta { name: Some(caller.name.clone()), ..Default::default() },
            role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: ROLE.into() },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: caller.name.clone(),
                namespace: Some(caller.namespace.clone()),
                ..Default::default()
            }]),
        };
        create_or_keep(Api::<RoleBinding>::namespaced(self.client.clone(), namespace), &binding).await;
        wait_allowed(&self.client, &caller.username(), &[], namespace).await;
    }

    async fn service_account(&self, namespace: &str, prefix: &str, audiences: Vec<String>) -> Caller {
        let name = self.env.unique(prefix).to_lowercase();
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        accounts.create(&PostParams::default(), &account).await.expect("create ServiceAccount");
        let request = TokenRequest {
            spec: TokenRequestSpec { audiences, expiration_seconds: Some(3600), ..Default::default() },
            ..Default::default()
        };
        let issued =
            accounts.create_token_request(&name, &PostParams::default(), &request).await.expect("TokenRequest");
        let token = issued.status.expect("a token").token;
        Caller { name, namespace: namespace.to_owned(), token }
    }

    /// RemediationRequests in `namespace`.
    pub fn rrs(&self, namespace: &str) -> Api<RemediationRequest> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The RemediationRequests in `namespace` for the alert named `alertname`.
    pub async fn rrs_for(&self, namespace: &str, alertname: &str) -> Vec<RemediationRequest> {
        let all = self.rrs(namespace).list(&ListParams::default()).await.expect("list RemediationRequests");
        all.items.into_iter().filter(|rr| rr.spec.signal_name == alertname).collect()
    }

    /// The value the gateway's manifest sets for `name`.
    pub async fn setting(&self, name: &str) -> String {
        let deployment =
            Api::<Deployment>::namespaced(self.client.clone(), &self.env.namespace).get("gateway").await.unwrap();
        let containers = deployment.spec.and_then(|s| s.template.spec).map(|s| s.containers).unwrap_or_default();
        containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("the gateway manifest sets {name}"))
    }
}

/// A ServiceAccount and a token the API server issued for it (never printed).
#[derive(Clone)]
pub struct Caller {
    pub name: String,
    pub namespace: String,
    token: String,
}

impl Caller {
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// A signal request with this caller's token, sent now.
    pub fn request(&self, gw: &Gw) -> reqwest::RequestBuilder {
        self.request_without_timestamp(gw).header("x-timestamp", unix_now().to_string())
    }

    /// A signal request with this caller's token and no `X-Timestamp`.
    pub fn request_without_timestamp(&self, gw: &Gw) -> reqwest::RequestBuilder {
        unsigned(gw).bearer_auth(&self.token)
    }

    pub async fn post(&self, gw: &Gw, body: &Value) -> (u16, Value) {
        let (status, body, _) = send(self.request(gw).json(body)).await;
        (status, body)
    }
}

/// A signal request without token or timestamp.
pub fn unsigned(gw: &Gw) -> reqwest::RequestBuilder {
    http().post(gw.url("/api/v1/signals/prometheus"))
}

/// Status, JSON body (`Null` when not JSON) and headers.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value, HeaderMap) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn alert(name: &str, ns: &str, status: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "namespace": ns, "severity": "critical", "pod": "web-0"},
        "annotations": {"summary": "spec alert"},
        "startsAt": "2026-11-26T10:00:00Z",
    })
}

pub fn webhook(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "remedy", "groupKey": "{}", "alerts": alerts})
}

/// The RemediationRequest name of the first result.
pub fn rr_name(body: &Value) -> String {
    body["results"][0]["remediation_request"].as_str().unwrap_or_else(|| panic!("no request in {body}")).to_owned()
}

/// The value of a Prometheus sample `name{labels}`, 0 when absent.
pub fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Like [`eventually`], but `None` at the timeout instead of a panic, for a spec that must undo
/// something before it fails.
pub async fn eventually_opt<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn metrics(gw: &Gw) -> String {
    http().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

async fn ensure_namespace(env: &Env, client: &kube::Client, name: &str, managed_by: Option<&str>) {
    let mut labels = std::collections::BTreeMap::from([(RUN_LABEL.to_owned(), env.run_id.clone())]);
    if let Some(value) = managed_by {
        labels.insert(MANAGED_KEY.to_owned(), value.to_owned());
    }
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.to_owned()), labels: Some(labels), ..Default::default() },
        ..Default::default()
    };
    create_or_keep(Api::<Namespace>::all(client.clone()), &ns).await;
}

async fn ensure_role(client: &kube::Client, namespace: &str) {
    let role = Role {
        metadata: ObjectMeta { name: Some(ROLE.into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![remedy_api::GROUP.into()]),
            resources: Some(vec!["remediationrequests".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        }]),
    };
    create_or_keep(Api::<Role>::namespaced(client.clone(), namespace), &role).await;
}

/// Lets every ServiceAccount of `callers` signal in `namespace`, and waits until the API server
/// agrees.
async fn grant(client: &kube::Client, namespace: &str, callers: &str) {
    ensure_role(client, namespace).await;
    let group = format!("system:serviceaccounts:{callers}");
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some(format!("{ROLE}s")), ..Default::default() },
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: ROLE.into() },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: group.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    create_or_keep(Api::<RoleBinding>::namespaced(client.clone(), namespace), &binding).await;
    let user = format!("system:serviceaccount:{callers}:probe");
    wait_allowed(client, &user, &[group], namespace).await;
}

/// Waits until RBAC lets `user` (in `groups`) create RemediationRequests in `namespace`: a
/// new binding takes a moment to reach the authorizer.
async fn wait_allowed(client: &kube::Client, user: &str, groups: &[String], namespace: &str) {
    let reviews = Api::<SubjectAccessReview>::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(remedy_api::GROUP.into()),
                resource: Some("remediationrequests".into()),
                verb: Some("create".into()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    eventually(&format!("RBAC to allow {user} in {namespace}"), Duration::from_secs(30), || async {
        let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
        answer.status.is_some_and(|s| s.allowed).then_some(())
    })
    .await;
}

async fn create_or_keep<K>(api: Api<K>, object: &K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("creating {:?}: {e}", object.meta().name),
    }
}
