//! GitHub Actions' conventions, when a run is a step of a workflow (`GITHUB_ACTIONS=true`): its
//! Markdown summary appended to `$GITHUB_STEP_SUMMARY`, an `::error` annotation for each failed
//! task and spec, and each log tail the summary prints folded in a `::group::`.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use camino::Utf8Path;

use super::view::RunView;

/// Where the summary printed at the end of a run is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    Plain,
    GithubActions,
}

impl Console {
    pub fn detect() -> Console {
        Console::from_env(std::env::var("GITHUB_ACTIONS").ok().as_deref())
    }

    /// From the value of `GITHUB_ACTIONS`, which the runner sets to `true`.
    fn from_env(value: Option<&str>) -> Console {
        if value == Some("true") { Console::GithubActions } else { Console::Plain }
    }

    /// `lines` under a heading: folded on GitHub Actions, indented behind `|` otherwise.
    pub fn log_lines(self, title: &str, lines: &[String]) -> String {
        let mut out = String::new();
        match self {
            Console::Plain => lines.iter().for_each(|line| {
                let _ = writeln!(out, "    | {line}");
            }),
            Console::GithubActions => {
                let _ = writeln!(out, "::group::{}", data(title));
                // A line of the log that looks like a workflow command must not be taken as one.
                lines.iter().for_each(|line| {
                    let _ = writeln!(out, "{}", inert(line));
                });
                let _ = writeln!(out, "::endgroup::");
            }
        }
        out
    }
}

/// `::error file=F,line=L,title=T::message`, with the parts that are known.
pub fn error(title: &str, location: Option<(&str, u32)>, message: &str) -> String {
    let mut properties = Vec::new();
    if let Some((file, line)) = location {
        properties.push(format!("file={}", property(file)));
        properties.push(format!("line={line}"));
    }
    properties.push(format!("title={}", property(title)));
    format!("::error {}::{}", properties.join(","), data(message))
}

/// An annotation for each failed task, then for each failed spec (at the line that panicked,
/// when its failure says).
pub fn annotations(view: &RunView) -> Vec<String> {
    let tasks = view.failed_tasks().map(|task| {
        let title = format!("{}: {} failed", view.title, task.label());
        error(&title, None, task.error.as_deref().unwrap_or("failed"))
    });
    let specs = view.specs.iter().filter(|s| s.outcome == "failed").map(|spec| {
        let failure = spec.failure.as_deref().unwrap_or("failed");
        let location = panic_location(failure);
        let title = format!("{}: spec {} failed", view.title, spec.name);
        error(&title, location.as_ref().map(|(f, l)| (f.as_str(), *l)), failure)
    });
    tasks.chain(specs).collect()
}

/// Where a Rust test panicked, from its output: `thread '...' panicked at FILE:LINE:COL:`.
pub fn panic_location(output: &str) -> Option<(String, u32)> {
    let rest = &output[output.find("panicked at ")? + "panicked at ".len()..];
    let location = rest.split_whitespace().next()?.trim_end_matches([':', ',']);
    let mut parts = location.rsplitn(3, ':');
    let (_column, line, file) = (parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?, parts.next()?);
    (!file.is_empty()).then(|| (file.to_owned(), line))
}

/// Appends `markdown` to the step summary file at `path`.
pub fn append_summary(path: &Utf8Path, markdown: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the step summary {path}"))?;
    writeln!(file, "{markdown}").with_context(|| format!("cannot write the step summary {path}"))
}

/// A workflow command's message: `%`, CR and LF encoded, as the toolkit does.
fn data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,`.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

/// A log line that would start a workflow command, shown without starting one.
fn inert(line: &str) -> String {
    match line.strip_prefix("::") {
        Some(rest) => format!(": :{rest}"),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::view::{SpecView, TaskView};

    #[test]
    fn only_github_actions_own_value_turns_it_on() {
        assert_eq!(Console::from_env(Some("true")), Console::GithubActions);
        assert_eq!(Console::from_env(Some("false")), Console::Plain);
        assert_eq!(Console::from_env(None), Console::Plain);
    }

    #[test]
    fn log_lines_are_folded_on_github_and_indented_elsewhere() {
        let lines = ["$ kind create cluster".to_owned(), "::error::not ours".to_owned()];
        assert_eq!(
            Console::Plain.log_lines("cluster", &lines),
            "    | $ kind create cluster\n    | ::error::not ours\n"
        );
        assert_eq!(
            Console::GithubActions.log_lines("log of cluster", &lines),
            "::group::log of cluster\n$ kind create cluster\n: :error::not ours\n::endgroup::\n"
        );
    }

    #[test]
    fn messages_and_properties_are_encoded() {
        assert_eq!(
            error("a: b, c", Some(("test/e2e/tests/x.rs", 12)), "100% gone\nnext"),
            "::error file=test/e2e/tests/x.rs,line=12,title=a%3A b%2C c::100%25 gone%0Anext"
        );
        assert_eq!(error("t", None, "m"), "::error title=t::m");
    }

    #[test]
    fn the_panic_location_is_the_specs_file_and_line() {
        let failure = "thread 'webhook::dup' panicked at test/e2e/tests/gateway.rs:316:5:\nexpected 202, got 200";
        assert_eq!(panic_location(failure), Some(("test/e2e/tests/gateway.rs".to_owned(), 316)));
        assert_eq!(
            panic_location("thread panicked at tests/gateway.rs:3:5: expected 202"),
            Some(("tests/gateway.rs".to_owned(), 3))
        );
        assert_eq!(panic_location("test timed out after 30s"), None);
        assert_eq!(panic_location("panicked at somewhere"), None);
    }

    #[test]
    fn a_failed_task_and_a_failed_spec_are_annotated() {
        let view = RunView {
            title: "gateway end-to-end".into(),
            tasks: vec![
                TaskView { id: "cluster".into(), phase: "cluster".into(), status: "ok".into(), ..TaskView::default() },
                TaskView {
                    id: "specs".into(),
                    phase: "tests".into(),
                    status: "failed".into(),
                    error: Some("`cargo nextest run` failed: exit status: 100".into()),
                    ..TaskView::default()
                },
            ],
            specs: vec![
                SpecView { name: "auth::ok".into(), outcome: "passed".into(), ..SpecView::default() },
                SpecView {
                    name: "webhook::dup".into(),
                    outcome: "failed".into(),
                    failure: Some("thread 'webhook::dup' panicked at test/e2e/tests/gateway.rs:316:5:\nboom".into()),
                    ..SpecView::default()
                },
                SpecView { name: "timed_out".into(), outcome: "failed".into(), ..SpecView::default() },
            ],
            ..RunView::default()
        };
        assert_eq!(
            annotations(&view),
            [
                "::error title=gateway end-to-end%3A tests/specs failed::`cargo nextest run` failed: exit status: 100"
                    .to_owned(),
                "::error file=test/e2e/tests/gateway.rs,line=316,title=gateway end-to-end%3A spec webhook%3A%3Adup failed::thread 'webhook::dup' panicked at test/e2e/tests/gateway.rs:316:5:%0Aboom".to_owned(),
                "::error title=gateway end-to-end%3A spec timed_out failed::failed".to_owned(),
            ]
        );
    }
}
