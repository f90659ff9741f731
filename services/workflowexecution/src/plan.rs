//! The execution decision: from a WorkflowExecution and its Job, what to create and which
//! status to show; and the Job itself. Pure logic.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec, SecurityContext},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};
use remedy_api::{WorkflowExecution, WorkflowExecutionPhase, WorkflowExecutionStatus, now_rfc3339};

/// Label put on Jobs (and their pods) naming their WorkflowExecution.
pub const WE_LABEL: &str = "remedy.dev/workflow-execution";

/// What one reconcile pass should do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Create the Job.
    pub create_job: bool,
    /// The status to write, when it differs from the current one.
    pub status: Option<WorkflowExecutionStatus>,
}

/// How a Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not finished.
    Running,
    /// Completed successfully.
    Succeeded,
    /// Failed, with the reason.
    Failed(String),
}

/// Reads a Job's state from its conditions (and succeeded count).
pub fn job_state(job: &Job) -> JobState {
    let Some(status) = &job.status else {
        return JobState::Running;
    };
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let why =
                    [c.reason.as_deref(), c.message.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": ");
                return JobState::Failed(if why.is_empty() { "job failed".to_owned() } else { why });
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 && status.active.unwrap_or(0) == 0 {
        return JobState::Succeeded;
    }
    JobState::Running
}

/// Decides the next step.
pub fn plan(we: &WorkflowExecution, job: Option<&Job>) -> Plan {
    let current = we.status.clone().unwrap_or_default();
    if current.phase.is_some_and(WorkflowExecutionPhase::is_terminal) {
        return Plan::default();
    }
    let mut want = current.clone();
    want.job_name = Some(we.name_any());
    let mut out = Plan::default();
    match job {
        None => {
            out.create_job = true;
            want.phase = Some(WorkflowExecutionPhase::Running);
            want.start_time = Some(now_rfc3339());
            want.message = Some("job created".to_owned());
        }
        Some(job) => match job_state(job) {
            JobState::Running => {
                want.phase = Some(WorkflowExecutionPhase::Running);
                if want.start_time.is_none() {
                    want.start_time = Some(now_rfc3339());
                }
            }
            JobState::Succeeded => {
                want.phase = Some(WorkflowExecutionPhase::Succeeded);
                want.message = Some("job completed".to_owned());
                want.completion_time = Some(now_rfc3339());
            }
            JobState::Failed(why) => {
                want.phase = Some(WorkflowExecutionPhase::Failed);
                want.message = Some(why);
                want.completion_time = Some(now_rfc3339());
            }
        },
    }
    if want != current {
        out.status = Some(want);
    }
    out
}

/// The Job running `we`: same name and namespace, owned by it, one attempt, never restarted.
pub fn job_for(we: &WorkflowExecution) -> Job {
    let labels = BTreeMap::from([(WE_LABEL.to_owned(), we.name_any())]);
    let env: Vec<EnvVar> = we
        .spec
        .env
        .iter()
        .map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), ..Default::default() })
        .collect();
    Job {
        metadata: ObjectMeta {
            name: Some(we.name_any()),
            namespace: we.namespace(),
            labels: Some(labels.clone()),
            owner_references: we.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: we.spec.active_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "workflow".to_owned(),
                        image: Some(we.spec.image.clone()),
                        image_pull_policy: Some("IfNotPresent".to_owned()),
                        command: (!we.spec.command.is_empty()).then(|| we.spec.command.clone()),
                        env: (!env.is_empty()).then_some(env),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use remedy_api::WorkflowExecutionSpec;

    fn we(phase: Option<WorkflowExecutionPhase>) -> WorkflowExecution {
        let mut we = WorkflowExecution::new(
            "rr-1-we",
            WorkflowExecutionSpec {
                remediation_request_ref: "rr-1".into(),
                image: "img:1".into(),
                command: vec!["sh".into(), "-c".into(), "exit 0".into()],
                env: BTreeMap::from([("A".into(), "1".into())]),
                active_deadline_seconds: Some(60),
            },
        );
        we.metadata.namespace = Some("shop".into());
        we.metadata.uid = Some("uid-1".into());
        we.status = phase.map(|p| WorkflowExecutionStatus { phase: Some(p), ..Default::default() });
        we
    }

    fn job(conditions: &[(&str, &str)], succeeded: i32, active: i32) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| JobCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            reason: Some("BackoffLimitExceeded".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                succeeded: Some(succeeded),
                active: Some(active),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn job_states() {
        assert_eq!(job_state(&Job::default()), JobState::Running);
        assert_eq!(job_state(&job(&[], 0, 1)), JobState::Running);
        assert_eq!(job_state(&job(&[("Complete", "True")], 1, 0)), JobState::Succeeded);
        assert_eq!(job_state(&job(&[("Complete", "False")], 0, 1)), JobState::Running);
        assert_eq!(job_state(&job(&[], 1, 0)), JobState::Succeeded);
        assert_eq!(job_state(&job(&[("Failed", "True")], 0, 0)), JobState::Failed("BackoffLimitExceeded".into()));
    }

    #[test]
    fn missing_job_is_created_and_running() {
        let p = plan(&we(None), None);
        assert!(p.create_job);
        let s = p.status.unwrap();
        assert_eq!(s.phase, Some(WorkflowExecutionPhase::Running));
        assert_eq!(s.job_name.as_deref(), Some("rr-1-we"));
    }

    #[test]
    fn job_outcomes_are_reflected() {
        let running = plan(&we(None), Some(&job(&[], 0, 1)));
        assert!(!running.create_job);
        let mut w = we(None);
        w.status = running.status;
        assert_eq!(plan(&w, Some(&job(&[], 0, 1))), Plan::default(), "settled: no write");
        let done = plan(&w, Some(&job(&[("Complete", "True")], 1, 0))).status.unwrap();
        assert_eq!(done.phase, Some(WorkflowExecutionPhase::Succeeded));
        assert!(done.completion_time.is_some());
        let failed = plan(&w, Some(&job(&[("Failed", "True")], 0, 0))).status.unwrap();
        assert_eq!(failed.phase, Some(WorkflowExecutionPhase::Failed));
        assert_eq!(failed.message.as_deref(), Some("BackoffLimitExceeded"));
    }

    #[test]
    fn terminal_executions_are_left_alone() {
        for p in [WorkflowExecutionPhase::Succeeded, WorkflowExecutionPhase::Failed] {
            assert_eq!(plan(&we(Some(p)), None), Plan::default());
        }
    }

    #[test]
    fn job_runs_the_spec_once_and_is_owned() {
        let j = job_for(&we(None));
        assert_eq!(j.metadata.name.as_deref(), Some("rr-1-we"));
        assert_eq!(j.metadata.namespace.as_deref(), Some("shop"));
        let owner = &j.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("WorkflowExecution", "uid-1", Some(true))
        );
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(60));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("img:1"));
        assert_eq!(c.command.as_ref().unwrap()[2], "exit 0");
        assert_eq!(c.env.as_ref().unwrap()[0].name, "A");
    }
}
