//! The phase library: tasks and their dependencies as a validated DAG, a scheduler that runs a
//! plan under one of three strategies, and the timing report of a run.
//!
//! Nothing here knows about any service. A service's environment is a [`Plan`] built from data
//! in `crate::envs`; how a task's steps are carried out is an [`Executor`].

pub mod bound;
mod compare;
pub mod github;
pub mod history;
pub mod html;
mod plan;
mod process;
pub mod progress;
pub mod report;
mod scheduler;
mod svg;
pub mod view;

pub use plan::{Command, Kind, KubeOp, Phase, Plan, Step, Task, When, Workload, placeholders, var_ref};
pub use process::{log_line, run_command};
#[cfg(test)]
pub use scheduler::TaskRecord;
pub use scheduler::{Cancelled, Executor, Outcome, RunRecord, Schedule, Status, Strategy, TaskCx, default_jobs, run};
