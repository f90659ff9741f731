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
    core::v1::{Endpoints, ResourceQuota, ResourceQuotaSpec},
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use remedy_e2e::{audit_event, audit_events, eventually, rollout_restart};
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
            let events = audit_events(env, name).await;
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
    let deployments = Api::<Deployment>::namespaced(gw.client.clone(), &gw.env.namespace);
    let replicas = |n: i32| serde_json::json!({"spec": {"replicas": n}});
    deployments.patch("datastorage", &PatchParams::default(), &Patch::Merge(&replicas(0))).await.unwrap();
    // Down: no pod behind datastorage's Service, and the one that was there has been told to
    // stop (a stopping server takes no new connections).
    let endpoints = Api::<Endpoints>::namespaced(gw.client.clone(), &gw.env.namespace);
    let down = eventually_opt(Duration::from_secs(60), || async {
        let e = endpoints.get("datastorage").await.ok()?;
        let ready =
            e.subsets.unwrap_or_default().iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum::<usize>();
        (ready == 0).then_some(())
    })
    .await;
    let accepted = match down {
        Some(()) => {
            Some(caller.post(&gw, &webhook(vec![alert(&gw.env.unique("DuringOutage"), &gw.ns, "firing")])).await)
        }
        None => None,
    };
    deployments.patch("datastorage", &PatchParams::default(), &Patch::Merge(&replicas(1))).await.unwrap();
    let (status, body) = accepted.expect("datastorage did not stop within 60 s");
    assert_eq!(status, 201, "a signal was refused while datastorage was down: {body}");
    let correlation = rr_name(&body);
    let event = audit_event(&gw.env, &correlation, "gateway.signal.received").await;
    assert_eq!(event["actor"], "gateway");
    assert_eq!(audit_events(&gw.env, &correlation).await.len(), 1, "delivered more than once");
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
    eventually("the quota to be counted", Duration::from_secs(30), || async {
        let status = quotas.get("no-requests").await.ok()?.status?;
        status.used?.contains_key(key).then_some(())
    })
    .await;
    let name = gw.env.unique("Refused");
    let body = webhook(vec![alert(&name, &ns, "firing")]);
    let (status, answer, headers) = crate::fixture::send(caller.request(&gw).json(&body)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["dependency"], "kubernetes-api", "{answer}");
    assert_eq!(headers["retry-after"].to_str().unwrap(), answer["retry_after_seconds"].to_string());
    assert!(answer["error"].as_str().unwrap().contains("exceeded quota"), "{answer}");
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
