//! Gateway specs: Alertmanager webhooks and Kubernetes Warning Events in, RemediationRequests
//! and audit events out, through an authenticated, rate limited, replay protected and
//! browser-hardened ingress. One module per group; `fixture` is what they share. (One file, as
//! every suite is: the xtask knows a suite's sources as `test/e2e/tests/<suite>.rs`.)

mod fixture {
    //! What the gateway specs share: the namespaces signals go to, callers with real
    //! ServiceAccount tokens, requests, payloads, and the locks of the specs that restart the
    //! gateway or need one steady gateway pod.
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
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: ROLE.into(),
                },
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
}

mod webhook {
    //! The Alertmanager webhook: validation, RemediationRequests, deduplication, audit, metrics.

    use std::time::{Duration, Instant};

    use kube::api::ListParams;
    use remedy_e2e::{audit_event, audit_events, eventually, http};
    use serde_json::{Value, json};

    use crate::fixture::{Gw, alert, metrics, one_steady_gateway, rr_name, sample, send, webhook};

    #[tokio::test]
    async fn a_firing_alert_creates_a_remediation_request() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let name = gw.env.unique("HighMemory");
        let (status, body) = caller.post(&gw, &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
        assert_eq!(status, 201, "{body}");
        let result = &body["results"][0];
        assert_eq!(result["status"], "created");
        let rr = gw.rrs(&gw.ns).get(&rr_name(&body)).await.unwrap();
        assert_eq!(rr.spec.signal_name, name);
        assert_eq!(rr.spec.severity, "critical");
        assert_eq!(rr.spec.target_namespace, gw.ns);
        assert_eq!(rr.spec.signal_fingerprint, result["fingerprint"].as_str().unwrap());
        assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1));
    }

    #[tokio::test]
    async fn a_duplicate_inside_the_window_raises_the_occurrence_count() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let body = webhook(vec![alert(&gw.env.unique("DiskFull"), &gw.ns, "firing")]);
        let (first, created) = caller.post(&gw, &body).await;
        assert_eq!(first, 201);
        let (second, duplicate) = caller.post(&gw, &body).await;
        assert_eq!(second, 202, "{duplicate}");
        assert_eq!(duplicate["results"][0]["status"], "duplicate");
        assert_eq!(duplicate["results"][0]["remediation_request"], rr_name(&created));
        let rr = gw.rrs(&gw.ns).get(&rr_name(&created)).await.unwrap();
        assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(2));
    }

    #[tokio::test]
    async fn after_the_window_a_new_request_is_created() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        // The alert asks for the shortest window the manifest allows, so the spec sleeps out its
        // own 1 s window, not the default 300 s.
        let window = Duration::from_secs(gw.setting("DEDUP_WINDOW_MIN_SECONDS").await.parse().unwrap());
        let mut a = alert(&gw.env.unique("Recurring"), &gw.ns, "firing");
        a["annotations"]["remedy_dedup_window_seconds"] = window.as_secs().to_string().into();
        let body = webhook(vec![a]);
        let (status, first) = caller.post(&gw, &body).await;
        let answered = Instant::now();
        assert_eq!((status, first["results"][0]["window_seconds"].as_u64()), (201, Some(window.as_secs())), "{first}");
        // The window opened before the answer, so it is over `window` after it (Redis expires
        // keys to the millisecond).
        tokio::time::sleep((answered + window + Duration::from_millis(50)).saturating_duration_since(Instant::now()))
            .await;
        let (status, second) = caller.post(&gw, &body).await;
        assert_eq!(status, 201, "the window ({window:?}) is over, so the signal is new again: {second}");
        let (old, new) = (rr_name(&first), rr_name(&second));
        assert_ne!(old, new);
        let api = gw.rrs(&gw.ns);
        for name in [old, new] {
            let rr = api.get(&name).await.unwrap();
            assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1), "{name}");
        }
    }

    #[tokio::test]
    async fn a_window_outside_the_manifests_bounds_is_rejected() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let max: u64 = gw.setting("DEDUP_WINDOW_MAX_SECONDS").await.parse().unwrap();
        let name = gw.env.unique("Forever");
        let mut a = alert(&name, &gw.ns, "firing");
        a["annotations"]["remedy_dedup_window_seconds"] = (max + 1).to_string().into();
        let (status, body) = caller.post(&gw, &webhook(vec![a])).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(&format!("to {max}")), "{body}");
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn every_alert_of_a_payload_gets_its_own_request() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let alerts: Vec<Value> = (0..3).map(|_| alert(&gw.env.unique("Burst"), &gw.ns, "firing")).collect();
        let (status, body) = caller.post(&gw, &webhook(alerts)).await;
        assert_eq!(status, 201);
        let names: Vec<&str> =
            body["results"].as_array().unwrap().iter().map(|r| r["remediation_request"].as_str().unwrap()).collect();
        assert_eq!(names.len(), 3);
        let api = gw.rrs(&gw.ns);
        for name in names {
            assert!(api.get_opt(name).await.unwrap().is_some(), "{name} missing");
        }
    }

    #[tokio::test]
    async fn a_resolved_alert_creates_nothing() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let (status, body) =
            caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Cleared"), &gw.ns, "resolved")])).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["status"], "ignored");
        assert_eq!(body["results"][0].get("remediation_request"), None, "{body}");
        let fingerprint = &body["results"][0]["fingerprint"].as_str().unwrap()[..16];
        let selector = format!("remedy.dev/fingerprint={fingerprint}");
        let found = gw.rrs(&gw.ns).list(&ListParams::default().labels(&selector)).await.unwrap();
        assert!(
            found.items.is_empty(),
            "{selector}: {:?}",
            found.items.iter().map(|r| &r.metadata.name).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn malformed_payloads_answer_400_with_a_reason() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        for body in ["{not json", r#"{"version": "4"}"#, r#"{"version": "3", "alerts": []}"#] {
            let (status, reason, _) =
                send(caller.request(&gw).header("content-type", "application/json").body(body)).await;
            assert_eq!(status, 400, "{body}");
            assert!(reason["error"].as_str().is_some_and(|r| !r.is_empty()), "{body}: {reason}");
        }
    }

    #[tokio::test]
    async fn each_accepted_signal_has_its_audit_event_in_datastorage() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let (status, body) = caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Audited"), &gw.ns, "firing")])).await;
        assert_eq!(status, 201);
        let correlation = rr_name(&body);
        let events = eventually("the gateway.signal.received audit event", Duration::from_secs(60), || async {
            let events = audit_events(&gw.env, &correlation).await?;
            (!events.is_empty()).then_some(events)
        })
        .await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event_type"], "gateway.signal.received");
        assert_eq!(events[0]["actor"], "gateway");
        assert_eq!(events[0]["data"]["source"], "alertmanager");
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_answer_without_a_token() {
        let gw = Gw::get().await;
        for path in ["/healthz", "/readyz"] {
            assert_eq!(http().get(gw.url(path)).send().await.unwrap().status(), 200, "{path}");
        }
        let metrics = http().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("# TYPE"), "not Prometheus text: {metrics}");
    }

    /// A 400 whose JSON reason mentions `word`.
    async fn rejected(gw: &Gw, body: &Value, word: &str) {
        let caller = gw.caller().await;
        let (status, reason) = caller.post(gw, body).await;
        assert_eq!(status, 400, "{body} -> {reason}");
        let text = reason["error"].as_str().unwrap_or_default();
        assert!(text.contains(word), "reason {text:?} does not mention {word:?}");
    }

    #[tokio::test]
    async fn an_oversized_payload_answers_413_and_creates_nothing() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let name = gw.env.unique("Huge");
        let mut big = alert(&name, &gw.ns, "firing");
        big["annotations"]["description"] = "x".repeat(300 * 1024).into();
        let (status, _) = caller.post(&gw, &webhook(vec![big])).await;
        assert_eq!(status, 413);
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty(), "an oversized payload created a request");
    }

    #[tokio::test]
    async fn an_alert_without_alertname_is_rejected() {
        let gw = Gw::get().await;
        let mut a = alert("x", &gw.ns, "firing");
        a["labels"].as_object_mut().unwrap().remove("alertname");
        rejected(&gw, &webhook(vec![a]), "alertname").await;
    }

    #[tokio::test]
    async fn an_unknown_alert_status_is_rejected_by_name() {
        let gw = Gw::get().await;
        rejected(&gw, &webhook(vec![alert(&gw.env.unique("Odd"), &gw.ns, "pending")]), "pending").await;
    }

    #[tokio::test]
    async fn an_alert_for_a_namespace_that_does_not_exist_is_rejected() {
        let gw = Gw::get().await;
        let missing = gw.env.unique("nowhere");
        rejected(&gw, &webhook(vec![alert(&gw.env.unique("Lost"), &missing, "firing")]), &missing).await;
    }

    #[tokio::test]
    async fn only_version_4_payloads_are_accepted() {
        let gw = Gw::get().await;
        let mut body = webhook(vec![alert(&gw.env.unique("Old"), &gw.ns, "firing")]);
        body["version"] = "3".into();
        rejected(&gw, &body, "3").await;
    }

    #[tokio::test]
    async fn an_empty_alert_list_is_rejected() {
        let gw = Gw::get().await;
        rejected(&gw, &webhook(vec![]), "between 1 and").await;
    }

    #[tokio::test]
    async fn the_same_alert_twice_in_one_payload_is_created_then_deduplicated() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let a = alert(&gw.env.unique("Twice"), &gw.ns, "firing");
        let (status, body) = caller.post(&gw, &webhook(vec![a.clone(), a])).await;
        assert_eq!(status, 201, "{body}");
        let statuses: Vec<&str> =
            body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["created", "duplicate"]);
    }

    #[tokio::test]
    async fn the_fingerprint_ignores_label_order() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let name = gw.env.unique("Ordered");
        let forward = format!(
            r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"{name}","namespace":"{ns}","severity":"warning"}}}}]}}"#,
            ns = gw.ns
        );
        let backward = format!(
            r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"severity":"warning","namespace":"{ns}","alertname":"{name}"}}}}]}}"#,
            ns = gw.ns
        );
        let (first, a, _) = send(caller.request(&gw).header("content-type", "application/json").body(forward)).await;
        let (second, b, _) = send(caller.request(&gw).header("content-type", "application/json").body(backward)).await;
        assert_eq!((first, second), (201, 202));
        assert_eq!(a["results"][0]["fingerprint"], b["results"][0]["fingerprint"]);
    }

    #[tokio::test]
    async fn the_request_keeps_the_alerts_labels_annotations_and_target() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let (status, body) =
            caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Detailed"), &gw.ns, "firing")])).await;
        assert_eq!(status, 201);
        let rr = gw.rrs(&gw.ns).get(&rr_name(&body)).await.unwrap();
        assert_eq!(rr.spec.labels.get("pod").map(String::as_str), Some("web-0"));
        assert_eq!(rr.spec.annotations.get("summary").map(String::as_str), Some("spec alert"));
        let target = rr.spec.target_resource.expect("a target from the pod label");
        assert_eq!((target.kind.as_str(), target.name.as_str()), ("Pod", "web-0"));
        assert_eq!(rr.spec.starts_at.as_deref(), Some("2026-11-26T10:00:00Z"));
        let labels = rr.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("remedy.dev/source").map(String::as_str), Some("alertmanager"));
    }

    #[tokio::test]
    async fn workflow_annotations_become_the_requests_workflow() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let mut a = alert(&gw.env.unique("WithWorkflow"), &gw.ns, "firing");
        a["annotations"]["remedy_workflow_image"] = "example/fixer:1".into();
        a["annotations"]["remedy_workflow_command"] = r#"["fix", "--now"]"#.into();
        let (status, body) = caller.post(&gw, &webhook(vec![a])).await;
        assert_eq!(status, 201, "{body}");
        let rr = gw.rrs(&gw.ns).get(&rr_name(&body)).await.unwrap();
        let workflow = rr.spec.workflow.expect("a workflow");
        assert_eq!(workflow.image, "example/fixer:1");
        assert_eq!(workflow.command, ["fix", "--now"]);
    }

    #[tokio::test]
    async fn a_malformed_workflow_command_is_rejected() {
        let gw = Gw::get().await;
        let mut a = alert(&gw.env.unique("BadWorkflow"), &gw.ns, "firing");
        a["annotations"]["remedy_workflow_image"] = "example/fixer:1".into();
        a["annotations"]["remedy_workflow_command"] = "fix --now".into();
        rejected(&gw, &webhook(vec![a]), "remedy_workflow_command").await;
    }

    #[tokio::test]
    async fn a_duplicate_has_its_deduplicated_audit_event() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let body = webhook(vec![alert(&gw.env.unique("Recurring"), &gw.ns, "firing")]);
        let (_, created) = caller.post(&gw, &body).await;
        assert_eq!(caller.post(&gw, &body).await.0, 202);
        let event = audit_event(&gw.env, &rr_name(&created), "gateway.signal.deduplicated").await;
        assert_eq!(event["data"]["occurrence_count"], 2);
    }

    #[tokio::test]
    async fn metrics_count_created_signals_and_refusals() {
        let _steady = one_steady_gateway().await;
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let created = |m: &str| sample(m, "gateway_signals_total", r#"outcome="created""#);
        let refused = |m: &str| sample(m, "gateway_refusals_total", r#"reason="unauthenticated""#);
        let before = metrics(&gw).await;
        assert_eq!(caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Counted"), &gw.ns, "firing")])).await.0, 201);
        let (status, _, _) = send(crate::fixture::unsigned(&gw).json(&json!({}))).await;
        assert_eq!(status, 401);
        let after = metrics(&gw).await;
        // Other specs run alongside, so the counters rose by at least these.
        assert!(
            created(&after) >= created(&before) + 1.0,
            "created went from {} to {}",
            created(&before),
            created(&after)
        );
        assert!(
            refused(&after) >= refused(&before) + 1.0,
            "refusals went from {} to {}",
            refused(&before),
            refused(&after)
        );
    }
}

mod auth {
    //! Authentication by TokenReview and authorization by SubjectAccessReview, with real
    //! ServiceAccount tokens from the cluster's TokenRequest API.

    use crate::fixture::{Gw, alert, rr_name, send, unix_now, unsigned, webhook};

    #[tokio::test]
    async fn a_request_without_a_token_is_401_and_creates_nothing() {
        let gw = Gw::get().await;
        let name = gw.env.unique("Anonymous");
        let request = unsigned(&gw).header("x-timestamp", unix_now().to_string());
        let (status, body, headers) = send(request.json(&webhook(vec![alert(&name, &gw.ns, "firing")]))).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].as_str().unwrap().contains("missing bearer token"), "{body}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn a_forged_token_is_401_with_the_api_servers_reason() {
        let gw = Gw::get().await;
        let name = gw.env.unique("Forged");
        let request = unsigned(&gw)
            .bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
            .header("x-timestamp", unix_now().to_string());
        let (status, body, _) = send(request.json(&webhook(vec![alert(&name, &gw.ns, "firing")]))).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].as_str().unwrap().contains("rejected by the API server"), "{body}");
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn a_token_issued_for_another_audience_is_401() {
        let gw = Gw::get().await;
        let caller = gw.caller_for_audience("audience", "https://somewhere-else.example").await;
        let name = gw.env.unique("Audience");
        let (status, body) = caller.post(&gw, &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
        assert_eq!(status, 401, "{body}");
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn a_service_account_rbac_allows_is_served() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let (status, body) = caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Allowed"), &gw.ns, "firing")])).await;
        assert_eq!(status, 201, "{body}");
        assert!(gw.rrs(&gw.ns).get_opt(&rr_name(&body)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_service_account_rbac_does_not_allow_is_403_with_the_reason_and_creates_nothing() {
        let gw = Gw::get().await;
        let stranger = gw.stranger("stranger").await;
        let name = gw.env.unique("Intruder");
        let (status, body) = stranger.post(&gw, &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
        assert_eq!(status, 403, "{body}");
        let reason = body["error"].as_str().unwrap();
        assert!(reason.contains(&stranger.username()), "{reason}");
        assert!(
            reason.contains(&format!("create remediationrequests.remedy.dev in namespace {:?}", gw.ns)),
            "{reason}"
        );
        assert_eq!(body["namespace"], gw.ns.as_str());
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn one_forbidden_namespace_refuses_the_whole_payload() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let closed = gw.managed_namespace_without_grant("closed").await;
        let name = gw.env.unique("Partial");
        let body = webhook(vec![alert(&name, &gw.ns, "firing"), alert(&name, &closed, "firing")]);
        let (status, answer) = caller.post(&gw, &body).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["namespace"], closed.as_str());
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty(), "the allowed alert of a refused payload was created");
    }

    #[tokio::test]
    async fn a_new_grant_takes_effect_at_once() {
        let gw = Gw::get().await;
        let caller = gw.stranger("grantee").await;
        let body = webhook(vec![alert(&gw.env.unique("Granted"), &gw.ns, "firing")]);
        assert_eq!(caller.post(&gw, &body).await.0, 403);
        // Denials are not cached: once RBAC allows the caller, its next request is served.
        gw.allow(&caller, &gw.ns).await;
        let (status, answer) = caller.post(&gw, &body).await;
        assert_eq!(status, 201, "{answer}");
    }
}

mod replay {
    //! Replay protection: `X-Timestamp` must lie within the manifest's `REPLAY_WINDOW_SECONDS` of
    //! now; inside the window a repeated request is deduplicated like any other delivery.

    use crate::fixture::{Caller, Gw, alert, rr_name, send, unix_now, webhook};

    async fn window(gw: &Gw) -> i64 {
        gw.setting("REPLAY_WINDOW_SECONDS").await.parse().unwrap()
    }

    /// Posts `body` as `caller` with `timestamp` as the only `X-Timestamp` (or none).
    async fn post_at(
        gw: &Gw,
        caller: &Caller,
        timestamp: Option<String>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = caller.request_without_timestamp(gw).json(body);
        if let Some(t) = timestamp {
            request = request.header("x-timestamp", t);
        }
        let (status, body, _) = send(request).await;
        (status, body)
    }

    #[tokio::test]
    async fn a_timestamp_older_than_the_window_is_400_with_the_reason_and_creates_nothing() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let window = window(&gw).await;
        let name = gw.env.unique("Replayed");
        let sent = (unix_now() - window - 60).to_string();
        let (status, body) = post_at(&gw, &caller, Some(sent), &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
        assert_eq!(status, 400, "{body}");
        let reason = body["error"].as_str().unwrap();
        assert!(reason.contains("old") && reason.contains(&format!("window is {window}s")), "{reason}");
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn a_timestamp_beyond_the_window_in_the_future_is_400() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let sent = (unix_now() + window(&gw).await + 60).to_string();
        let (status, body) =
            post_at(&gw, &caller, Some(sent), &webhook(vec![alert(&gw.env.unique("Early"), &gw.ns, "firing")])).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("in the future"), "{body}");
    }

    #[tokio::test]
    async fn a_request_without_a_timestamp_is_400() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let (status, body) =
            post_at(&gw, &caller, None, &webhook(vec![alert(&gw.env.unique("Untimed"), &gw.ns, "firing")])).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("missing X-Timestamp"), "{body}");
    }

    #[tokio::test]
    async fn an_rfc3339_timestamp_inside_the_window_is_accepted() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let sent = jiff::Timestamp::from_second(unix_now() - 30).unwrap().to_string();
        let (status, body) =
            post_at(&gw, &caller, Some(sent), &webhook(vec![alert(&gw.env.unique("Dated"), &gw.ns, "firing")])).await;
        assert_eq!(status, 201, "{body}");
    }

    #[tokio::test]
    async fn the_same_request_again_inside_the_window_is_deduplicated() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let sent = unix_now().to_string();
        let body = webhook(vec![alert(&gw.env.unique("Again"), &gw.ns, "firing")]);
        let (first, created) = post_at(&gw, &caller, Some(sent.clone()), &body).await;
        let (second, repeated) = post_at(&gw, &caller, Some(sent), &body).await;
        assert_eq!((first, second), (201, 202), "{created} {repeated}");
        assert_eq!(repeated["results"][0]["remediation_request"], rr_name(&created));
    }
}

mod hardening {
    //! Browser-facing hardening: CORS refused unless the origin is configured, security headers on
    //! every response.

    use remedy_e2e::http;
    use reqwest::header::HeaderMap;

    use crate::fixture::{ALLOWED_ORIGIN, Gw, alert, send, unix_now, unsigned, webhook};

    const OTHER_ORIGIN: &str = "https://attacker.example";

    async fn preflight(gw: &Gw, origin: &str) -> (u16, HeaderMap) {
        let response = http()
            .request(reqwest::Method::OPTIONS, gw.url("/api/v1/signals/prometheus"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, x-timestamp")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.headers().clone())
    }

    #[tokio::test]
    async fn a_preflight_from_the_configured_origin_is_answered() {
        let gw = Gw::get().await;
        let (status, headers) = preflight(&gw, ALLOWED_ORIGIN).await;
        assert_eq!(status, 204);
        assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
        assert_eq!(headers["access-control-allow-methods"], "POST");
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        assert!(["authorization", "content-type", "x-timestamp"].iter().all(|h| allowed.contains(h)), "{allowed}");
    }

    #[tokio::test]
    async fn a_preflight_from_another_origin_is_refused() {
        let gw = Gw::get().await;
        let (status, headers) = preflight(&gw, OTHER_ORIGIN).await;
        assert_eq!(status, 403);
        assert!(headers.get("access-control-allow-origin").is_none(), "{headers:?}");
    }

    #[tokio::test]
    async fn a_cross_origin_signal_from_another_origin_is_refused_and_creates_nothing() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let name = gw.env.unique("CrossOrigin");
        let request =
            caller.request(&gw).header("origin", OTHER_ORIGIN).json(&webhook(vec![alert(&name, &gw.ns, "firing")]));
        let (status, body, headers) = send(request).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].as_str().unwrap().contains(OTHER_ORIGIN), "{body}");
        assert!(headers.get("access-control-allow-origin").is_none());
        assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn a_signal_from_the_configured_origin_is_served_and_names_it() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let request = caller.request(&gw).header("origin", ALLOWED_ORIGIN).json(&webhook(vec![alert(
            &gw.env.unique("Console"),
            &gw.ns,
            "firing",
        )]));
        let (status, body, headers) = send(request).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
        assert_eq!(headers["vary"], "origin");
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let ns = gw.ns.clone();
        let mut answers = Vec::new();
        for path in ["/healthz", "/readyz", "/metrics", "/no-such-path"] {
            let response = http().get(gw.url(path)).send().await.unwrap();
            answers.push((path.to_owned(), response.status().as_u16(), response.headers().clone()));
        }
        let signals = [
            ("201", caller.request(&gw).json(&webhook(vec![alert(&gw.env.unique("Headers"), &ns, "firing")]))),
            ("400", caller.request(&gw).body("{")),
            ("401", unsigned(&gw).header("x-timestamp", unix_now().to_string()).body("{}")),
        ];
        for (what, request) in signals {
            let (status, _, headers) = send(request).await;
            answers.push((format!("signal {what}"), status, headers));
        }
        let (status, headers) = preflight(&gw, OTHER_ORIGIN).await;
        answers.push(("refused preflight".into(), status, headers));
        let statuses: Vec<u16> = answers.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(statuses, [200, 200, 200, 404, 201, 400, 401, 403]);
        for (what, _, headers) in &answers {
            for (name, value) in [
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
                ("referrer-policy", "no-referrer"),
                ("cache-control", "no-store"),
            ] {
                assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{what}: {name}");
            }
        }
    }
}

mod ratelimit {
    //! Backpressure: a token bucket per caller (`RATE_LIMIT_BURST`, `RATE_LIMIT_PER_SECOND`),
    //! answering 429 with `Retry-After`. The specs bound what may pass by the time they took, so a
    //! slow machine changes the numbers but never the verdict.

    use std::time::{Duration, Instant};

    use crate::fixture::{Caller, Gw, alert, one_steady_gateway, send, webhook};

    struct Limit {
        burst: usize,
        per_second: f64,
    }

    async fn limit(gw: &Gw) -> Limit {
        Limit {
            burst: gw.setting("RATE_LIMIT_BURST").await.parse().unwrap(),
            per_second: gw.setting("RATE_LIMIT_PER_SECOND").await.parse().unwrap(),
        }
    }

    /// Sends the cheapest requests the limiter counts, 16 at a time, until the first 429: the
    /// limiter counts every authenticated request before anything else is checked, so these
    /// carry no `X-Timestamp` and no body and are refused (400) right after it, without the
    /// work a signal costs; that keeps the caller faster than the bucket refills even on a loaded
    /// 2-core machine, where whole signals got through at the refill rate and never saw a 429.
    /// How many passed the limiter, how long that took, and the 429's `Retry-After` and body.
    async fn exhaust(gw: &Gw, caller: &Caller, limit: &Limit) -> (usize, Duration, u64, serde_json::Value) {
        let started = Instant::now();
        let mut passed = 0;
        while passed < limit.burst * 10 {
            let wave = (0..16).map(|_| send(caller.request_without_timestamp(gw)));
            let mut refused = None;
            for (status, answer, headers) in futures::future::join_all(wave).await {
                match status {
                    400 if answer["error"].as_str().is_some_and(|e| e.contains("X-Timestamp")) => passed += 1,
                    429 => refused = Some((headers["retry-after"].to_str().unwrap().parse().unwrap(), answer)),
                    other => panic!("expected 400 (no X-Timestamp) or 429, got {other}: {answer}"),
                }
            }
            if let Some((retry_after, answer)) = refused {
                return (passed, started.elapsed(), retry_after, answer);
            }
        }
        panic!("no 429 after {passed} requests");
    }

    #[tokio::test]
    async fn over_its_rate_limit_a_caller_gets_429_with_retry_after_and_others_are_not_throttled() {
        let _steady = one_steady_gateway().await;
        let gw = Gw::get().await;
        let (noisy, quiet) = (gw.new_caller("noisy").await, gw.new_caller("quiet").await);
        let limit = limit(&gw).await;
        let (passed, took, retry_after, answer) = exhaust(&gw, &noisy, &limit).await;
        // The burst passes; beyond it only what the bucket refilled while the requests were sent.
        let refilled = (took.as_secs_f64() * limit.per_second).ceil() as usize;
        assert!(
            (limit.burst..=limit.burst + refilled).contains(&passed),
            "{passed} requests passed in {took:?}; the limit allows {} to {}",
            limit.burst,
            limit.burst + refilled
        );
        assert!(answer["error"].as_str().unwrap().contains("rate limit"), "{answer}");
        assert_eq!(answer["retry_after_seconds"], retry_after);
        assert!(retry_after >= 1 && retry_after as f64 <= (1.0 / limit.per_second).ceil(), "Retry-After {retry_after}");
        // Each caller has its own bucket.
        let (status, body) = quiet.post(&gw, &webhook(vec![alert(&gw.env.unique("Quiet"), &gw.ns, "firing")])).await;
        assert_eq!(status, 201, "{body}");
        // Retry-After is the time until the next token, so after it the caller is served.
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let (status, body) = noisy.post(&gw, &webhook(vec![alert(&gw.env.unique("Later"), &gw.ns, "resolved")])).await;
        assert_eq!(status, 200, "{body}");
    }
}

mod events {
    //! The second source and scope: Kubernetes Warning Events in managed namespaces become signals
    //! with the same deduplication and audit; namespaces without the label are out of scope for
    //! both sources.
    //!
    //! That an event was *not* turned into a signal is shown with a marker: the gateway reads one
    //! ordered watch and handles events one at a time, so once a Warning created afterwards has its
    //! RemediationRequest, the earlier event was already decided.

    use std::time::Duration;

    use k8s_openapi::{
        api::core::v1::{Event, EventSource, ObjectReference},
        apimachinery::pkg::apis::meta::v1::Time,
    };
    use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
    use remedy_api::RemediationRequest;
    use remedy_e2e::{audit_event, eventually};
    use serde_json::json;

    use crate::fixture::{Gw, alert, webhook};

    /// Creates an Event of `type_` and `reason` about pod `pod` in `namespace`, last seen `age` ago.
    async fn record(gw: &Gw, namespace: &str, type_: &str, reason: &str, pod: &str, age: Duration) -> Event {
        let seen = jiff::Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap();
        let event = Event {
            metadata: ObjectMeta { name: Some(gw.env.unique("spec-event").to_lowercase()), ..Default::default() },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(format!("{reason} (from the gateway specs)")),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(seen)),
            last_timestamp: Some(Time(seen)),
            source: Some(EventSource { component: Some("remedy-e2e".into()), host: None }),
            ..Default::default()
        };
        kube::Api::<Event>::namespaced(gw.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .expect("create Event")
    }

    /// The one RemediationRequest of `reason` in `namespace`, once the gateway made it and counted
    /// its first occurrence (a status update right after the create).
    async fn request_for(gw: &Gw, namespace: &str, reason: &str) -> RemediationRequest {
        eventually(&format!("a RemediationRequest for the {reason} event"), Duration::from_secs(30), || async {
            let mut found = gw.rrs_for(namespace, reason).await;
            assert!(found.len() <= 1, "more than one request for {reason}: {found:?}");
            found.pop().filter(|rr| rr.status.as_ref().is_some_and(|s| s.occurrence_count.is_some()))
        })
        .await
    }

    /// Records a Warning in a managed namespace and waits for its request: every event created
    /// before it has been decided.
    async fn marker(gw: &Gw) {
        let reason = gw.env.unique("Marker");
        record(gw, &gw.ns, "Warning", &reason, "marker-0", Duration::ZERO).await;
        request_for(gw, &gw.ns, &reason).await;
    }

    #[tokio::test]
    async fn a_warning_event_in_a_managed_namespace_becomes_a_request_with_its_audit_event() {
        let gw = Gw::get().await;
        let ns = gw.managed_namespace("events").await;
        let reason = gw.env.unique("CrashLoop");
        record(&gw, &ns, "Warning", &reason, "web-1", Duration::ZERO).await;
        let rr = request_for(&gw, &ns, &reason).await;
        assert_eq!(rr.spec.severity, "warning");
        let target = rr.spec.target_resource.clone().expect("the event's object");
        assert_eq!((target.kind.as_str(), target.name.as_str()), ("Pod", "web-1"));
        assert!(rr.spec.annotations["message"].contains(&reason));
        assert_eq!(rr.metadata.labels.unwrap_or_default()["remedy.dev/source"], "kubernetes-event");
        assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1));
        let event = audit_event(&gw.env, rr.metadata.name.as_deref().unwrap(), "gateway.signal.received").await;
        assert_eq!(event["data"]["source"], "kubernetes-event");
    }

    #[tokio::test]
    async fn a_repeated_event_is_deduplicated_onto_its_request() {
        let gw = Gw::get().await;
        let ns = gw.managed_namespace("repeats").await;
        let reason = gw.env.unique("BackOff");
        let event = record(&gw, &ns, "Warning", &reason, "web-2", Duration::ZERO).await;
        let name = request_for(&gw, &ns, &reason).await.metadata.name.unwrap();
        // The kubelet repeats an event by counting it up on the same object.
        let now = jiff::Timestamp::now().to_string();
        let patch = json!({"count": 2, "lastTimestamp": now});
        kube::Api::<Event>::namespaced(gw.client.clone(), &ns)
            .patch(event.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("count the event up");
        let rrs = gw.rrs(&ns);
        eventually("the occurrence count to reach 2", Duration::from_secs(30), || async {
            let rr = rrs.get(&name).await.ok()?;
            (rr.status?.occurrence_count? == 2).then_some(())
        })
        .await;
        let event = audit_event(&gw.env, &name, "gateway.signal.deduplicated").await;
        assert_eq!(
            (event["data"]["occurrence_count"].as_i64(), event["data"]["source"].as_str()),
            (Some(2), Some("kubernetes-event"))
        );
        assert_eq!(gw.rrs_for(&ns, &reason).await.len(), 1);
    }

    #[tokio::test]
    async fn normal_and_old_events_are_not_signals() {
        let gw = Gw::get().await;
        let ns = gw.managed_namespace("quiet").await;
        let normal = gw.env.unique("Pulled");
        let old = gw.env.unique("LongAgo");
        let max_age: u64 = gw.setting("EVENT_MAX_AGE_SECONDS").await.parse().unwrap();
        record(&gw, &ns, "Normal", &normal, "web-3", Duration::ZERO).await;
        record(&gw, &ns, "Warning", &old, "web-3", Duration::from_secs(max_age + 60)).await;
        marker(&gw).await;
        assert!(gw.rrs_for(&ns, &normal).await.is_empty(), "a Normal event became a request");
        assert!(gw.rrs_for(&ns, &old).await.is_empty(), "an event older than EVENT_MAX_AGE_SECONDS became a request");
    }

    #[tokio::test]
    async fn events_in_a_namespace_without_the_label_are_ignored() {
        let gw = Gw::get().await;
        let ns = gw.unmanaged_namespace("unlabelled").await;
        let reason = gw.env.unique("Unwatched");
        record(&gw, &ns, "Warning", &reason, "web-4", Duration::ZERO).await;
        marker(&gw).await;
        assert!(gw.rrs_for(&ns, &reason).await.is_empty(), "an event outside the scope became a request");
    }

    #[tokio::test]
    async fn alerts_for_a_namespace_without_the_label_are_403_and_say_so() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let ns = gw.unmanaged_namespace("unlabelled").await;
        let name = gw.env.unique("Elsewhere");
        let (status, body) = caller.post(&gw, &webhook(vec![alert(&name, &ns, "firing")])).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].as_str().unwrap().contains("lacks the label remedy.dev/managed="), "{body}");
        assert_eq!(body["results"][0]["status"], "out_of_scope");
        assert!(gw.rrs_for(&ns, &name).await.is_empty());
    }

    #[tokio::test]
    async fn a_payload_for_both_kinds_of_namespace_creates_only_in_the_managed_one() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let outside = gw.unmanaged_namespace("unlabelled").await;
        let name = gw.env.unique("Mixed");
        let (status, body) =
            caller.post(&gw, &webhook(vec![alert(&name, &outside, "firing"), alert(&name, &gw.ns, "firing")])).await;
        assert_eq!(status, 201, "{body}");
        let statuses: Vec<&str> =
            body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["out_of_scope", "created"]);
        assert!(body["results"][0]["reason"].as_str().unwrap().contains(&outside), "{body}");
        assert!(gw.rrs_for(&outside, &name).await.is_empty());
        assert_eq!(gw.rrs_for(&gw.ns, &name).await.len(), 1);
    }
}

mod resilience {
    //! Restarts and dependency failures: a graceful rolling restart under a stream of signals loses
    //! none, deduplication survives a restart, datastorage being unreachable never refuses a signal,
    //! and an API server refusal answers 503 with a retry hint, never 500.

    use std::{
        collections::BTreeMap,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{Pod, ResourceQuota, ResourceQuotaSpec},
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::{
        Api,
        api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    };
    use remedy_e2e::{audit_events, eventually, exited, http, rollout_restart};
    use serde_json::Value;

    use crate::fixture::{Gw, alert, eventually_opt, restarting_the_gateway, rr_name, webhook};

    /// What one request of the stream got: the alert it sent, and the status and body, or the
    /// transport error.
    type Outcome = (String, Result<(u16, Value), String>);

    #[tokio::test]
    async fn a_rolling_restart_under_a_stream_of_signals_loses_none() {
        let _restarting = restarting_the_gateway().await;
        let gw = Arc::new(Gw::get().await);
        let caller = Arc::new(gw.new_caller("stream").await);
        let steady = gw.env.unique("Steady");
        let window = gw.setting("DEDUP_WINDOW_MAX_SECONDS").await;
        let stop = Arc::new(AtomicBool::new(false));
        // Two senders, so requests are in flight at every moment of the restart: one repeats the
        // same alert (deduplication across the restart), one sends a new alert each time.
        let senders: Vec<_> = [true, false]
            .into_iter()
            .map(|repeat| {
                let (gw, caller, stop, steady, window) =
                    (gw.clone(), caller.clone(), stop.clone(), steady.clone(), window.clone());
                tokio::spawn(async move {
                    let mut outcomes: Vec<Outcome> = Vec::new();
                    while !stop.load(Ordering::SeqCst) || outcomes.len() < 3 {
                        let name = if repeat { steady.clone() } else { gw.env.unique("Stream") };
                        let mut a = alert(&name, &gw.ns, "firing");
                        // Longer than any restart: every repeat lands in the first one's window.
                        a["annotations"]["remedy_dedup_window_seconds"] = window.clone().into();
                        let sent = caller.request(&gw).json(&webhook(vec![a])).send().await;
                        let result = match sent {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                Ok((status, response.json().await.unwrap_or(Value::Null)))
                            }
                            Err(e) => Err(format!("{e:?}")),
                        };
                        outcomes.push((name, result));
                        // About 12 signals a second together: steady, and within the rate limit.
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                    outcomes
                })
            })
            .collect();
        let exits = rollout_restart(&gw.env, &gw.client, "gateway").await;
        stop.store(true, Ordering::SeqCst);
        // Drained and exited by itself, not killed at the end of the grace period.
        assert!(exits.iter().all(|code| *code == 0), "the old gateway exited with {exits:?}");
        let mut outcomes = Vec::new();
        for sender in senders {
            outcomes.extend(sender.await.unwrap());
        }

        let failed: Vec<_> = outcomes.iter().filter(|(_, r)| !matches!(r, Ok((201 | 202, _)))).collect();
        assert!(
            failed.is_empty(),
            "{} of {} signals were not accepted during the restart: {failed:?}",
            failed.len(),
            outcomes.len()
        );
        // Every accepted signal has its request, and each answer its audit event.
        let mut answers: BTreeMap<String, usize> = BTreeMap::new();
        for (_, result) in &outcomes {
            let (_, body) = result.as_ref().unwrap();
            *answers.entry(rr_name(body)).or_default() += 1;
        }
        let existing: Vec<String> = gw
            .rrs(&gw.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|rr| rr.metadata.name)
            .collect();
        let missing: Vec<&String> = answers.keys().filter(|name| !existing.contains(name)).collect();
        assert!(missing.is_empty(), "accepted signals without their RemediationRequest: {missing:?}");
        let env = &gw.env;
        let audited = answers.iter().map(|(name, count)| async move {
            let what = format!("{count} audit events for {name}");
            let events = eventually(&what, Duration::from_secs(60), || async {
                let events = audit_events(env, name).await?;
                (events.len() >= *count).then_some(events)
            })
            .await;
            assert_eq!(events.len(), *count, "{name}: one audit event per accepted signal");
        });
        futures::future::join_all(audited).await;
        let steady_requests: Vec<_> = gw.rrs_for(&gw.ns, &steady).await;
        assert_eq!(steady_requests.len(), 1, "the repeated alert was deduplicated across the restart");
        let counted = steady_requests[0].status.as_ref().and_then(|s| s.occurrence_count);
        let sent = outcomes.iter().filter(|(name, _)| *name == steady).count() as i64;
        assert_eq!(counted, Some(sent), "every delivery of the repeated alert was counted once");
    }

    #[tokio::test]
    async fn deduplication_survives_a_gateway_restart() {
        let _restarting = restarting_the_gateway().await;
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        // The alert asks for the longest window the manifest allows: the claim must outlive the
        // restart, whatever the restart takes.
        let mut a = alert(&gw.env.unique("Persistent"), &gw.ns, "firing");
        a["annotations"]["remedy_dedup_window_seconds"] = gw.setting("DEDUP_WINDOW_MAX_SECONDS").await.into();
        let body = webhook(vec![a]);
        let (status, first) = caller.post(&gw, &body).await;
        assert_eq!(status, 201, "{first}");
        // Every process that saw the first delivery has exited; a new one answers.
        rollout_restart(&gw.env, &gw.client, "gateway").await;
        let (status, again) = caller.post(&gw, &body).await;
        assert_eq!(status, 202, "the restarted gateway forgot the signal: {again}");
        assert_eq!(again["results"][0]["occurrence_count"], 2);
        assert_eq!(rr_name(&again), rr_name(&first));
    }

    #[tokio::test]
    async fn signals_are_accepted_during_a_datastorage_outage_and_audited_after_it() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        // Other specs reading audit events meanwhile wait for it; they never meet a refusal.
        // Down: every datastorage container has exited. Empty endpoints are not enough: a
        // terminating pod serves on for its SHUTDOWN_DELAY_SECONDS while kube-proxy forgets it,
        // so a delivery could still reach it and the spec pass without an outage.
        let deployments = Api::<Deployment>::namespaced(gw.client.clone(), &gw.env.namespace);
        let replicas = |n: i32| serde_json::json!({"spec": {"replicas": n}});
        deployments.patch("datastorage", &PatchParams::default(), &Patch::Merge(&replicas(0))).await.unwrap();
        let pods = Api::<Pod>::namespaced(gw.client.clone(), &gw.env.namespace);
        let datastorage = ListParams::default().labels("app.kubernetes.io/name=datastorage");
        let down = eventually_opt(Duration::from_secs(60), || async {
            pods.list(&datastorage).await.ok()?.items.iter().all(exited).then_some(())
        })
        .await;
        // Asserted once datastorage is back, so a failure never leaves it stopped.
        let during = match down {
            Some(()) => {
                let health = http().get(format!("{}/healthz", gw.env.url("datastorage"))).send().await;
                let alert = alert(&gw.env.unique("DuringOutage"), &gw.ns, "firing");
                Some((health, caller.post(&gw, &webhook(vec![alert])).await))
            }
            None => None,
        };
        deployments.patch("datastorage", &PatchParams::default(), &Patch::Merge(&replicas(1))).await.unwrap();
        let (health, during) = during.expect("datastorage did not exit within 60 s");
        assert!(health.is_err(), "datastorage answered with its containers exited: {health:?}");
        let (status, body) = during;
        assert_eq!(status, 201, "a signal was refused while datastorage was down: {body}");
        let correlation = rr_name(&body);
        let what = format!("the audit event of {correlation}, accepted during the outage");
        let events = eventually(&what, Duration::from_secs(60), || async {
            let events = audit_events(&gw.env, &correlation).await?;
            events.iter().any(|e| e["event_type"] == "gateway.signal.received").then_some(events)
        })
        .await;
        assert_eq!(events.len(), 1, "delivered more than once: {events:?}");
        assert_eq!(events[0]["actor"], "gateway");
    }

    #[tokio::test]
    async fn an_api_server_refusal_is_503_with_a_retry_hint_and_the_retry_creates() {
        let gw = Gw::get().await;
        let caller = gw.caller().await;
        let ns = gw.managed_namespace("quota").await;
        // The API server refuses every RemediationRequest in this namespace: a quota of none.
        let quotas = Api::<ResourceQuota>::namespaced(gw.client.clone(), &ns);
        let key = "count/remediationrequests.remedy.dev";
        let quota = ResourceQuota {
            metadata: ObjectMeta { name: Some("no-requests".into()), ..Default::default() },
            spec: Some(ResourceQuotaSpec {
                hard: Some(BTreeMap::from([(key.to_owned(), Quantity("0".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        quotas.create(&PostParams::default(), &quota).await.unwrap();
        // Enforced once the quota controller has given it a status. Counted only if that controller
        // had discovered the CRD when it did (it rediscovers every 30 s, and a quota it could not
        // count waits for its 5 min resync): the API server refuses either way, "exceeded quota"
        // when counted, "status unknown for quota" when not.
        eventually("the quota to be enforced", Duration::from_secs(30), || async {
            let status = quotas.get("no-requests").await.ok()?.status?;
            status.hard?.contains_key(key).then_some(())
        })
        .await;
        let name = gw.env.unique("Refused");
        let body = webhook(vec![alert(&name, &ns, "firing")]);
        let (status, answer, headers) = crate::fixture::send(caller.request(&gw).json(&body)).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["dependency"], "kubernetes-api", "{answer}");
        assert_eq!(headers["retry-after"].to_str().unwrap(), answer["retry_after_seconds"].to_string());
        assert!(answer["error"].as_str().unwrap().contains("quota: no-requests"), "the API server's reason: {answer}");
        assert!(gw.rrs_for(&ns, &name).await.is_empty());
        // The outage ends; a retry is handled afresh (the claim was released) and creates.
        quotas.delete("no-requests", &DeleteParams::default()).await.unwrap();
        let created = eventually("the retry to be accepted", Duration::from_secs(30), || async {
            let (status, answer) = caller.post(&gw, &body).await;
            assert!(matches!(status, 201 | 503), "{status}: {answer}");
            (status == 201).then_some(answer)
        })
        .await;
        assert_eq!(created["results"][0]["occurrence_count"], 1);
    }
}
