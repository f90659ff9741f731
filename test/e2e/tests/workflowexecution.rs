//! WorkflowExecution specs: workflows run as Jobs, their outcome reflected and audited.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::PostParams;
use remedy_api::{WorkflowExecution, WorkflowExecutionPhase, WorkflowExecutionSpec};
use remedy_e2e::{Env, audit_event, eventually, image_of, restart};

struct Workflow {
    env: Env,
    api: Api<WorkflowExecution>,
    image: String,
}

impl Workflow {
    async fn new() -> Workflow {
        let env = Env::get();
        let client = env.client().await;
        // The controller's own image has a shell and is on the node already.
        let image = image_of(&env, &client, "workflowexecution").await;
        let api = Api::namespaced(client, &env.namespace);
        Workflow { env, api, image }
    }

    async fn run(&self, command: &[&str], env: &[(&str, &str)], deadline: Option<i64>) -> WorkflowExecution {
        let name = self.env.unique("we");
        let spec = WorkflowExecutionSpec {
            remediation_request_ref: format!("{name}-rr"),
            image: self.image.clone(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            active_deadline_seconds: deadline,
        };
        self.api.create(&PostParams::default(), &WorkflowExecution::new(&name, spec)).await.unwrap();
        self.finished(&name).await
    }

    async fn finished(&self, name: &str) -> WorkflowExecution {
        eventually(&format!("{name} to finish"), Duration::from_secs(90), || async {
            let we = self.api.get(name).await.ok()?;
            we.status.as_ref()?.phase?.is_terminal().then_some(we)
        })
        .await
    }

    async fn job(&self, name: &str) -> Job {
        Api::<Job>::namespaced(self.env.client().await, &self.env.namespace).get(name).await.unwrap()
    }
}

fn phase(we: &WorkflowExecution) -> WorkflowExecutionPhase {
    we.status.as_ref().and_then(|s| s.phase).unwrap()
}

#[tokio::test]
async fn a_succeeding_workflow_runs_as_an_owned_job() {
    let w = Workflow::new().await;
    let we = w.run(&["/bin/sh", "-c", "echo remediated"], &[], None).await;
    assert_eq!(phase(&we), WorkflowExecutionPhase::Succeeded);
    let name = we.metadata.name.clone().unwrap();
    let job = w.job(&name).await;
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("WorkflowExecution", name.as_str()));
    assert_eq!(job.status.unwrap().succeeded, Some(1));
}

#[tokio::test]
async fn a_failing_workflow_is_failed_with_a_reason() {
    let w = Workflow::new().await;
    let we = w.run(&["/bin/sh", "-c", "echo broken >&2; exit 4"], &[], None).await;
    assert_eq!(phase(&we), WorkflowExecutionPhase::Failed);
    assert!(we.status.unwrap().message.is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_workflow_over_its_deadline_fails() {
    let w = Workflow::new().await;
    let we = w.run(&["/bin/sh", "-c", "sleep 60"], &[], Some(2)).await;
    assert_eq!(phase(&we), WorkflowExecutionPhase::Failed);
}

#[tokio::test]
async fn the_workflow_gets_its_environment() {
    let w = Workflow::new().await;
    let we = w.run(&["/bin/sh", "-c", "test \"$REMEDY_TARGET\" = web-0"], &[("REMEDY_TARGET", "web-0")], None).await;
    assert_eq!(phase(&we), WorkflowExecutionPhase::Succeeded, "the variable did not reach the container");
}

#[tokio::test]
async fn start_and_outcome_are_audited() {
    let w = Workflow::new().await;
    let we = w.run(&["/bin/sh", "-c", "true"], &[], None).await;
    let correlation = &we.spec.remediation_request_ref;
    for event_type in ["workflowexecution.workflow.started", "workflowexecution.workflow.succeeded"] {
        let event = audit_event(&w.env, correlation, event_type).await;
        assert_eq!(event["actor"], "workflowexecution");
    }
}

#[tokio::test]
async fn a_controller_restart_mid_run_still_reports_the_outcome() {
    let w = Workflow::new().await;
    let name = w.env.unique("we");
    let spec = WorkflowExecutionSpec {
        remediation_request_ref: format!("{name}-rr"),
        image: w.image.clone(),
        command: vec!["/bin/sh".into(), "-c".into(), "sleep 3".into()],
        ..Default::default()
    };
    w.api.create(&PostParams::default(), &WorkflowExecution::new(&name, spec)).await.unwrap();
    eventually("the job to start", Duration::from_secs(60), || async {
        let we = w.api.get(&name).await.ok()?;
        (we.status?.phase? == WorkflowExecutionPhase::Running).then_some(())
    })
    .await;
    restart(&w.env, &w.env.client().await, "workflowexecution").await;
    assert_eq!(phase(&w.finished(&name).await), WorkflowExecutionPhase::Succeeded);
}
