//! Who may send signals: a bearer token checked with a TokenReview, and the caller authorized
//! with a SubjectAccessReview for `create` on `remediationrequests.remedy.dev` in each target
//! namespace. Token verdicts and granted access are reused for `AUTH_CACHE_SECONDS`; a denial
//! is asked again every time, so a grant takes effect at once. Tokens are kept only as hashes
//! and never logged.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, header};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};

use crate::{
    cache::TtlCache,
    failure::{Dependency, OnDependency},
};

/// The permission a caller needs in a signal's namespace.
pub const VERB: &str = "create";
/// The resource of that permission (group `remedy.dev`).
pub const RESOURCE: &str = "remediationrequests";

/// An authenticated caller, as the TokenReview named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name, e.g. `system:serviceaccount:monitoring:alertmanager`.
    pub username: String,
    /// User UID.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes, passed on to the access review.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The answer of a token review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerdict {
    /// The token is valid for this caller.
    Authenticated(Caller),
    /// The token is not valid; why.
    Rejected(String),
}

/// The answer of an access review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessVerdict {
    /// Whether the caller may create RemediationRequests in the namespace.
    pub allowed: bool,
    /// The authorizer's reason, possibly empty.
    pub reason: String,
}

/// Asks the cluster about tokens and permissions.
pub trait Reviewer: Clone + Send + Sync + 'static {
    /// Reviews a bearer token.
    fn review_token(&self, token: &str) -> impl Future<Output = anyhow::Result<TokenVerdict>> + Send;
    /// Reviews whether `caller` may create RemediationRequests in `namespace`.
    fn review_access(
        &self,
        caller: &Caller,
        namespace: &str,
    ) -> impl Future<Output = anyhow::Result<AccessVerdict>> + Send;
}

/// Reviews by the Kubernetes API server (TokenReview, SubjectAccessReview).
#[derive(Clone)]
pub struct KubeReviewer {
    client: Client,
}

impl KubeReviewer {
    /// Reviews through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Reviewer for KubeReviewer {
    async fn review_token(&self, token: &str) -> anyhow::Result<TokenVerdict> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: None },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .on(Dependency::KubernetesApi)?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        Ok(match (status.authenticated, user.username) {
            (Some(true), Some(username)) => TokenVerdict::Authenticated(Caller {
                username,
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }),
            _ => TokenVerdict::Rejected(
                status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "the token is not valid".to_owned()),
            ),
        })
    }

    async fn review_access(&self, caller: &Caller, namespace: &str) -> anyhow::Result<AccessVerdict> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.username.clone()),
                uid: caller.uid.clone(),
                groups: Some(caller.groups.clone()),
                extra: Some(caller.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(remedy_api::GROUP.to_owned()),
                    resource: Some(RESOURCE.to_owned()),
                    verb: Some(VERB.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .on(Dependency::KubernetesApi)?;
        let status = answer.status.unwrap_or_default();
        Ok(AccessVerdict { allowed: status.allowed, reason: status.reason.unwrap_or_default() })
    }
}

/// Why a request has no caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoToken {
    /// No `Authorization` header.
    #[error("missing bearer token: send Authorization: Bearer <ServiceAccount token>")]
    Missing,
    /// An `Authorization` header of another scheme, or an empty token.
    #[error("malformed Authorization header: expected Bearer <token>")]
    Malformed,
}

/// The bearer token of a request.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, NoToken> {
    let value = headers.get(header::AUTHORIZATION).ok_or(NoToken::Missing)?;
    let value = value.to_str().map_err(|_| NoToken::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(NoToken::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(NoToken::Malformed);
    }
    Ok(token)
}

/// Reviews with a short memory.
#[derive(Clone)]
pub struct Access<R> {
    reviewer: R,
    ttl: Duration,
    tokens: Arc<Mutex<TtlCache<[u8; 32], TokenVerdict>>>,
    grants: Arc<Mutex<TtlCache<(String, String), ()>>>,
}

impl<R: Reviewer> Access<R> {
    /// Reviews through `reviewer`, reusing answers for `ttl`.
    pub fn new(reviewer: R, ttl: Duration) -> Self {
        Self {
            reviewer,
            ttl,
            tokens: Arc::new(Mutex::new(TtlCache::new(10_000))),
            grants: Arc::new(Mutex::new(TtlCache::new(10_000))),
        }
    }

    /// The verdict on `token`, from the cache or a new review.
    pub async fn authenticate(&self, token: &str, now: Instant) -> anyhow::Result<TokenVerdict> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verdict) = lock(&self.tokens).get(&key, now) {
            return Ok(verdict);
        }
        let verdict = self.reviewer.review_token(token).await?;
        lock(&self.tokens).insert(key, verdict.clone(), self.ttl, now);
        Ok(verdict)
    }

    /// Whether `caller` may create RemediationRequests in `namespace`; a grant is reused, a
    /// denial asked again next time.
    pub async fn authorize(&self, caller: &Caller, namespace: &str, now: Instant) -> anyhow::Result<AccessVerdict> {
        let key = (caller.username.clone(), namespace.to_owned());
        if lock(&self.grants).get(&key, now).is_some() {
            return Ok(AccessVerdict { allowed: true, reason: String::new() });
        }
        let verdict = self.reviewer.review_access(caller, namespace).await?;
        if verdict.allowed {
            lock(&self.grants).insert(key, (), self.ttl, now);
        }
        Ok(verdict)
    }
}

/// Why `caller` is refused in `namespace`, for the 403 answer.
pub fn denial(caller: &Caller, namespace: &str, verdict: &AccessVerdict) -> String {
    let mut reason =
        format!("{} may not {VERB} {RESOURCE}.{} in namespace {namespace:?}", caller.username, remedy_api::GROUP);
    if !verdict.reason.is_empty() {
        reason.push_str(": ");
        reason.push_str(&verdict.reason);
    }
    reason
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), Err(NoToken::Missing));
        for (value, expected) in [
            ("Bearer abc", Ok("abc")),
            ("bearer  abc ", Ok("abc")),
            ("Basic dXNlcjpwdw==", Err(NoToken::Malformed)),
            ("Bearer ", Err(NoToken::Malformed)),
            ("abc", Err(NoToken::Malformed)),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_token(&h), expected, "{value}");
        }
    }

    /// Knows one good token, allows one namespace, and counts its reviews.
    #[derive(Clone, Default)]
    struct Counting {
        tokens: Arc<AtomicUsize>,
        accesses: Arc<AtomicUsize>,
    }

    fn alice() -> Caller {
        Caller { username: "alice".into(), uid: None, groups: vec![], extra: BTreeMap::new() }
    }

    impl Reviewer for Counting {
        async fn review_token(&self, token: &str) -> anyhow::Result<TokenVerdict> {
            self.tokens.fetch_add(1, Ordering::SeqCst);
            Ok(if token == "good" {
                TokenVerdict::Authenticated(alice())
            } else {
                TokenVerdict::Rejected("bad".into())
            })
        }
        async fn review_access(&self, _caller: &Caller, namespace: &str) -> anyhow::Result<AccessVerdict> {
            self.accesses.fetch_add(1, Ordering::SeqCst);
            Ok(AccessVerdict { allowed: namespace == "shop", reason: String::new() })
        }
    }

    #[tokio::test]
    async fn token_verdicts_are_reused_until_they_expire() {
        let reviewer = Counting::default();
        let access = Access::new(reviewer.clone(), Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(access.authenticate("good", t0).await.unwrap(), TokenVerdict::Authenticated(alice()));
        assert!(matches!(access.authenticate("bad", t0).await.unwrap(), TokenVerdict::Rejected(_)));
        access.authenticate("good", t0 + Duration::from_secs(9)).await.unwrap();
        access.authenticate("bad", t0 + Duration::from_secs(9)).await.unwrap();
        assert_eq!(reviewer.tokens.load(Ordering::SeqCst), 2);
        access.authenticate("good", t0 + Duration::from_secs(10)).await.unwrap();
        assert_eq!(reviewer.tokens.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn grants_are_reused_denials_asked_again() {
        let reviewer = Counting::default();
        let access = Access::new(reviewer.clone(), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(access.authorize(&alice(), "shop", t0).await.unwrap().allowed);
        assert!(access.authorize(&alice(), "shop", t0 + Duration::from_secs(1)).await.unwrap().allowed);
        assert_eq!(reviewer.accesses.load(Ordering::SeqCst), 1);
        let denied = access.authorize(&alice(), "bank", t0).await.unwrap();
        assert!(!denied.allowed);
        access.authorize(&alice(), "bank", t0).await.unwrap();
        assert_eq!(reviewer.accesses.load(Ordering::SeqCst), 3);
        assert_eq!(
            denial(&alice(), "bank", &denied),
            "alice may not create remediationrequests.remedy.dev in namespace \"bank\""
        );
    }
}
