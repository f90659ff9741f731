//! `cargo xtask report merge DIR...`: several E2E runs as one result: a JUnit file with one suite
//! per service, `summary.json`, `summary.md`, `summary.html` (the table, then each run's report
//! page), and a table on stdout.
//!
//! A directory given is a run's report directory (it has `report.json`) or holds report
//! directories one level down, as a folder of downloaded CI artifacts does. `summarize` is the
//! core, for callers that ran the services themselves. "setup" is the makespan minus the specs
//! task's duration; "specs" is that duration.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde::Deserialize;
use serde_json::json;

use crate::catalog::Service;
use crate::envs::ids::SPECS;
use crate::flags;
use crate::phases::html::{self, escape};
use crate::phases::progress::human;
use crate::phases::view::RunView;

/// The `report.json` schemas this reads (docs/report-schema.md): 2, and 1 of runs made
/// before teardown was part of the plan.
const REPORT_SCHEMAS: [u64; 2] = [1, 2];

/// The layout of `summary.json`.
const SUMMARY_SCHEMA: u32 = 1;

/// What the summary says of an expected service without a run.
const MISSING: &str = "no report.json: the run died before writing one, or its report was not collected";

impl flags::Report {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.subcommand {
            flags::ReportCmd::Merge(cmd) => cmd.run(),
        }
    }
}

impl flags::ReportMerge {
    fn run(self) -> anyhow::Result<ExitCode> {
        let out = self.out.unwrap_or_else(|| crate::project_root().join("target/e2e/merged"));
        let mut summary = summarize(&self.dirs)?;
        let expected: Vec<&Service> = self.expect.iter().flat_map(|s| s.services()).collect();
        summary.expect(&expected);
        summary.write(&out)?;
        print!("{}", summary.table());
        let written = ["junit.xml", "summary.json", "summary.md", "summary.html"].map(|name| out.join(name));
        eprintln!("merged: {}", written.map(|path| path.to_string()).join(", "));
        Ok(if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }
}

/// Reads every run under `dirs` (report directories, or directories holding them one level
/// down), in the order given, each directory's runs sorted by path.
pub fn summarize(dirs: &[Utf8PathBuf]) -> anyhow::Result<Summary> {
    let mut runs = Vec::new();
    for dir in dirs {
        for run_dir in report_dirs(dir)? {
            runs.push(Run::read(&run_dir)?);
        }
    }
    Ok(Summary { runs, missing: Vec::new() })
}

/// Several runs' results.
#[derive(Debug)]
pub struct Summary {
    pub runs: Vec<Run>,
    /// Services expected to have a run that have none.
    pub missing: Vec<&'static str>,
}

/// One run, from its `report.json` and `junit.xml`.
#[derive(Debug)]
pub struct Run {
    pub dir: Utf8PathBuf,
    /// The service whose environment ran, e.g. `gateway`.
    pub service: String,
    pub title: String,
    pub run_id: String,
    /// `ok`, `failed` or `interrupted`.
    pub outcome: String,
    /// `failed N of M, ...` when the outcome is not ok.
    pub failure: Option<String>,
    pub makespan: Duration,
    /// When the last task before teardown ended (the makespan, for schema 1).
    pub up: Duration,
    /// The specs task's duration; `None` when it never started.
    pub specs_time: Option<Duration>,
    pub critical_path: Vec<String>,
    /// The specs' results; `None` without `junit.xml` (the specs did not run, or were skipped as
    /// unchanged).
    pub specs: Option<Vec<TestCase>>,
    /// Its whole report, for its section of the page.
    pub view: RunView,
}

/// How many specs passed, failed and were ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
}

impl Counts {
    /// How many specs ran (an ignored one counts: it matched).
    pub fn total(self) -> usize {
        self.passed + self.failed + self.ignored
    }
}

impl Summary {
    /// Records which of `services` have no run.
    pub fn expect(&mut self, services: &[&'static Service]) {
        let mut missing = Vec::new();
        for name in services.iter().map(|s| s.name.as_str()) {
            if !missing.contains(&name) && !self.runs.iter().any(|run| run.service == name) {
                missing.push(name);
            }
        }
        self.missing = missing;
    }

    /// Every expected service ran, every run's outcome is ok and no spec failed.
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.runs.iter().all(|run| run.outcome == "ok" && run.counts().is_none_or(|c| c.failed == 0))
    }

    pub fn totals(&self) -> Counts {
        self.runs.iter().filter_map(Run::counts).fold(Counts::default(), |a, c| Counts {
            passed: a.passed + c.passed,
            failed: a.failed + c.failed,
            ignored: a.ignored + c.ignored,
        })
    }

    fn outcome(&self) -> &'static str {
        if self.ok() { "ok" } else { "failed" }
    }

    /// One line per run and a total, then each failed run's summary and failed specs.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |cols: [&str; 9]| {
            let [service, outcome, setup, specs, total, passed, failed, ignored, report] = cols;
            let text = format!(
                "{service:<24} {outcome:<8} {setup:<8} {specs:<7} {total:<8}{passed:>6}{failed:>7}{ignored:>8}  {report}"
            );
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(["service", "outcome", "setup", "specs", "total", "passed", "failed", "ignored", "report"]);
        for run in &self.runs {
            let [passed, failed, ignored] = counts_text(run.counts());
            line([
                &run.service,
                &run.outcome,
                &human(run.setup()),
                &run.specs_time.map(human).unwrap_or_else(|| "-".to_owned()),
                &human(run.makespan),
                &passed,
                &failed,
                &ignored,
                run.dir.join("report.md").as_str(),
            ]);
        }
        for service in &self.missing {
            line([service, "missing", "-", "-", "-", "-", "-", "-", ""]);
        }
        let [passed, failed, ignored] = counts_text(Some(self.totals()));
        line(["all", self.outcome(), "", "", "", &passed, &failed, &ignored, ""]);
        for failure in self.failures() {
            let _ = writeln!(out, "{failure}");
        }
        out
    }

    /// What went wrong, a line each as `service: what`: each run's failure summary and failed
    /// specs, then each missing service.
    fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for run in &self.runs {
            lines.extend(run.failure.iter().map(|failure| format!("{}: {failure}", run.service)));
            lines.extend(run.failed_specs().map(|name| format!("{}: spec failed: {name}", run.service)));
        }
        lines.extend(self.missing.iter().map(|service| format!("{service}: {MISSING}")));
        lines
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# E2E summary: {}\n", self.outcome());
        let _ = writeln!(
            out,
            "| service | outcome | setup | specs | total | passed | failed | ignored | run |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---|"
        );
        for run in &self.runs {
            let [passed, failed, ignored] = counts_text(run.counts());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {passed} | {failed} | {ignored} | `{}` |",
                run.service,
                run.outcome,
                human(run.setup()),
                run.specs_time.map(human).unwrap_or_else(|| "-".to_owned()),
                human(run.makespan),
                run.run_id
            );
        }
        for service in &self.missing {
            let _ = writeln!(out, "| {service} | missing | | | | | | | |");
        }
        let [passed, failed, ignored] = counts_text(Some(self.totals()));
        let _ = writeln!(out, "| **all** | **{}** | | | | {passed} | {failed} | {ignored} | |\n", self.outcome());
        let _ = writeln!(out, "Setup is the time until the specs ended, minus theirs; total includes teardown.\n");
        let failures = self.failures();
        if !failures.is_empty() {
            let _ = writeln!(out, "## Failures\n");
            for failure in failures {
                let _ = writeln!(out, "- {failure}");
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "## Critical paths\n");
        for run in &self.runs {
            let _ = writeln!(out, "- {}: {}", run.service, run.critical_path.join(" → "));
        }
        out
    }

    /// `summary.html`: the table and the failures, then each run's report with its logs.
    pub fn html(&self) -> String {
        let outcome = self.outcome();
        let mut body = format!("<h1>E2E summary <span class=\"{outcome}\">{outcome}</span></h1>\n<table>\n");
        body.push_str(
            "<tr><th>service</th><th>outcome</th><th>setup</th><th>specs</th><th>total</th>\
             <th>passed</th><th>failed</th><th>ignored</th><th>run</th></tr>\n",
        );
        for (i, run) in self.runs.iter().enumerate() {
            let [passed, failed, ignored] = counts_text(run.counts());
            let status = escape(&run.outcome);
            let _ = writeln!(
                body,
                "<tr><td><a href=\"#r{i}\">{}</a></td><td class=\"{status}\">{status}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{passed}</td><td class=\"n\">{failed}</td>\
                 <td class=\"n\">{ignored}</td><td><code>{}</code></td></tr>",
                escape(&run.service),
                human(run.setup()),
                run.specs_time.map(human).unwrap_or_else(|| "-".to_owned()),
                human(run.makespan),
                escape(&run.run_id)
            );
        }
        for service in &self.missing {
            let _ = writeln!(body, "<tr><td>{}</td><td class=\"failed\">missing</td></tr>", escape(service));
        }
        let [passed, failed, ignored] = counts_text(Some(self.totals()));
        let _ = writeln!(
            body,
            "<tr><th>all</th><th class=\"{outcome}\">{outcome}</th><th></th><th></th><th></th>\
             <th class=\"n\">{passed}</th><th class=\"n\">{failed}</th><th class=\"n\">{ignored}</th><th></th></tr>\n</table>"
        );
        let failures = self.failures();
        if !failures.is_empty() {
            body.push_str("<div class=\"failure\"><ul>\n");
            for failure in failures {
                let _ = writeln!(body, "<li>{}</li>", escape(&failure));
            }
            body.push_str("</ul></div>\n");
        }
        for (i, run) in self.runs.iter().enumerate() {
            let _ = writeln!(
                body,
                "<section id=\"r{i}\">\n{}</section>",
                html::section(&run.view, &run.dir, &format!("r{i}-"), 2)
            );
        }
        html::page(&format!("E2E summary: {outcome}"), &body)
    }

    pub fn json(&self) -> serde_json::Value {
        let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        let counts = |c: Counts| json!({"passed": c.passed, "failed": c.failed, "ignored": c.ignored});
        let runs: Vec<_> = self
            .runs
            .iter()
            .map(|run| {
                json!({
                    "service": run.service,
                    "title": run.title,
                    "run_id": run.run_id,
                    "report_dir": run.dir.as_str(),
                    "outcome": run.outcome,
                    "summary": run.failure,
                    "makespan_s": secs(run.makespan),
                    "setup_s": secs(run.setup()),
                    "specs_s": run.specs_time.map(secs),
                    "critical_path": run.critical_path,
                    "specs": run.counts().map(counts),
                    "failed_specs": run.failed_specs().collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "schema": SUMMARY_SCHEMA,
            "outcome": self.outcome(),
            "runs": runs,
            "missing": self.missing,
            "totals": {
                "runs": self.runs.len(),
                "runs_ok": self.runs.iter().filter(|run| run.outcome == "ok").count(),
                "specs": counts(self.totals()),
            },
        })
    }

    /// Every run's specs as one suite named after its service (and run id, when a service ran
    /// more than once).
    pub fn junit(&self) -> anyhow::Result<String> {
        let mut report = quick_junit::Report::new("remedy-e2e");
        for run in &self.runs {
            let Some(cases) = &run.specs else { continue };
            let repeated = self.runs.iter().filter(|other| other.service == run.service).count() > 1;
            let name = if repeated { format!("{} {}", run.service, run.run_id) } else { run.service.clone() };
            let mut suite = TestSuite::new(name);
            if let Some(time) = run.specs_time {
                suite.set_time(time);
            }
            suite.add_test_cases(cases.iter().cloned());
            report.add_test_suite(suite);
        }
        report.to_string().context("cannot render JUnit XML")
    }

    /// Writes `junit.xml`, `summary.json`, `summary.md` and `summary.html` into `out`, creating
    /// it.
    pub fn write(&self, out: &Utf8Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {out}"))?;
        let json = serde_json::to_string_pretty(&self.json())? + "\n";
        let files = [
            ("junit.xml", self.junit()?),
            ("summary.json", json),
            ("summary.md", self.markdown()),
            ("summary.html", self.html()),
        ];
        for (name, text) in files {
            let path = out.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {path}"))?;
        }
        Ok(())
    }
}

impl Run {
    fn read(dir: &Utf8Path) -> anyhow::Result<Run> {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{path} is not valid JSON"))?;
        let schema = value.get("schema").cloned().unwrap_or_default();
        if !schema.as_u64().is_some_and(|n| REPORT_SCHEMAS.contains(&n)) {
            bail!("{path} has schema {schema}, this xtask reads schemas {REPORT_SCHEMAS:?}");
        }
        let report = ReportJson::deserialize(&value).with_context(|| format!("{path} is not an E2E report"))?;
        let view = RunView::from_json(&value).with_context(|| format!("{path} is not an E2E report"))?;
        let makespan = seconds(report.makespan_s).with_context(|| format!("{path}: makespan_s"))?;
        let up = seconds(report.up_s.unwrap_or(report.makespan_s)).with_context(|| format!("{path}: up_s"))?;
        let specs_time = match report.tasks.iter().find(|t| t.id == SPECS).and_then(|t| t.duration_s) {
            Some(s) => Some(seconds(s).with_context(|| format!("{path}: the specs task's duration_s"))?),
            None => None,
        };
        let junit = dir.join("junit.xml");
        let specs = if junit.is_file() { Some(read_junit(&junit)?) } else { None };
        // Schema 1 had no service: its title was `<service> end-to-end`.
        let title = &report.title;
        let service = report.service.unwrap_or_else(|| title.strip_suffix(" end-to-end").unwrap_or(title).to_owned());
        Ok(Run {
            dir: dir.to_owned(),
            service,
            title: report.title,
            run_id: report.run_id,
            outcome: report.outcome,
            failure: report.summary,
            makespan,
            up,
            specs_time,
            critical_path: report.critical_path,
            specs,
            view,
        })
    }

    /// Until the specs ended, minus their time: bringing the environment up.
    pub fn setup(&self) -> Duration {
        self.up.saturating_sub(self.specs_time.unwrap_or_default())
    }

    pub fn counts(&self) -> Option<Counts> {
        let cases = self.specs.as_ref()?;
        let mut counts = Counts::default();
        for case in cases {
            match case.status {
                TestCaseStatus::Success { .. } => counts.passed += 1,
                TestCaseStatus::NonSuccess { .. } => counts.failed += 1,
                TestCaseStatus::Skipped { .. } => counts.ignored += 1,
            }
        }
        Some(counts)
    }

    pub fn failed_specs(&self) -> impl Iterator<Item = &str> {
        let cases = self.specs.as_deref().unwrap_or_default();
        cases.iter().filter(|c| matches!(c.status, TestCaseStatus::NonSuccess { .. })).map(|c| c.name.as_str())
    }
}

/// The fields of `report.json` the summary uses.
#[derive(Deserialize)]
struct ReportJson {
    service: Option<String>,
    title: String,
    run_id: String,
    outcome: String,
    summary: Option<String>,
    makespan_s: f64,
    up_s: Option<f64>,
    critical_path: Vec<String>,
    tasks: Vec<TaskJson>,
}

#[derive(Deserialize)]
struct TaskJson {
    id: String,
    duration_s: Option<f64>,
}

fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{s} is not a duration in seconds"))
}

/// `dir` itself when it has a run's `report.json`, else its subdirectories that have one (as
/// `e2e all`'s directory does, whose own report is of all the runs).
fn report_dirs(dir: &Utf8Path) -> anyhow::Result<Vec<Utf8PathBuf>> {
    if dir.join("report.json").is_file() && !is_all(dir) {
        return Ok(vec![dir.to_owned()]);
    }
    let mut found = Vec::new();
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
        let path = entry.with_context(|| format!("cannot read {dir}"))?.into_path();
        if path.join("report.json").is_file() {
            found.push(path);
        } else if path.join("junit.xml").is_file() && !path.join("summary.json").is_file() {
            // Written after report.json, so the run's report is incomplete; a merged output (it
            // has summary.json) is not a run.
            bail!("{path}/report.json is missing (there is a junit.xml)");
        }
    }
    if found.is_empty() {
        bail!("no report.json in {dir} or in a directory in it");
    }
    found.sort();
    Ok(found)
}

/// Whether `dir/report.json` is `e2e all`'s report of its runs.
fn is_all(dir: &Utf8Path) -> bool {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|report| report["service"] == "all")
}

/// Every `<testcase>` in a JUnit file, whatever suites hold them.
fn read_junit(path: &Utf8Path) -> anyhow::Result<Vec<TestCase>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let doc = roxmltree::Document::parse(&text).with_context(|| format!("{path} is not valid XML"))?;
    Ok(doc.descendants().filter(|n| n.has_tag_name("testcase")).map(test_case).collect())
}

fn test_case(node: roxmltree::Node) -> TestCase {
    let outcome = node.children().find(|c| ["failure", "error", "skipped"].iter().any(|t| c.has_tag_name(*t)));
    let status = match outcome {
        None => TestCaseStatus::success(),
        Some(element) => {
            let mut status = match element.tag_name().name() {
                "failure" => TestCaseStatus::non_success(NonSuccessKind::Failure),
                "error" => TestCaseStatus::non_success(NonSuccessKind::Error),
                _ => TestCaseStatus::skipped(),
            };
            if let Some(message) = element.attribute("message") {
                status.set_message(message);
            }
            if let Some(ty) = element.attribute("type") {
                status.set_type(ty);
            }
            let text: String = element.descendants().filter_map(|n| n.is_text().then(|| n.text()).flatten()).collect();
            if !text.trim().is_empty() {
                status.set_description(text.trim());
            }
            status
        }
    };
    let mut case = TestCase::new(node.attribute("name").unwrap_or_default(), status);
    if let Some(classname) = node.attribute("classname") {
        case.set_classname(classname);
    }
    if let Some(time) = node.attribute("time").and_then(|t| Duration::try_from_secs_f64(t.parse().ok()?).ok()) {
        case.set_time(time);
    }
    case
}

fn counts_text(counts: Option<Counts>) -> [String; 3] {
    match counts {
        Some(c) => [c.passed.to_string(), c.failed.to_string(), c.ignored.to_string()],
        None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(dir: &Utf8Path) -> anyhow::Result<Summary> {
        summarize(&[dir.to_owned()])
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> Utf8PathBuf {
        let dir = Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
            .join(format!("xtask-report-merge-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A report directory as `cargo xtask e2e` writes it, with the fields the summary reads and
    /// a few it does not.
    fn run_dir(parent: &Utf8Path, service: &str, outcome: &str, makespan: f64, specs: f64, junit: &str) -> Utf8PathBuf {
        let run_id = format!("20261126-120000-{:0>6}", service.len());
        let dir = parent.join(format!("e2e-{service}"));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let report = json!({
            "schema": 1,
            "title": format!("{service} end-to-end"),
            "run_id": run_id,
            "strategy": "dag",
            "jobs": 2,
            "outcome": outcome,
            "summary": (outcome != "ok").then_some("failed 1 of 12, cancelled 0, not started 0"),
            "makespan_s": makespan,
            "critical_path": ["cluster", "namespace", service, "specs"],
            "tasks": [
                {"id": "cluster", "status": "ok", "duration_s": makespan - specs - 10.0},
                {"id": "build-specs", "status": "cached", "duration_s": 0.2},
                {"id": "specs", "status": if outcome == "ok" { "ok" } else { "failed" }, "duration_s": specs},
            ],
        });
        std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
        std::fs::write(dir.join("junit.xml"), junit).unwrap();
        dir
    }

    const GATEWAY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="remedy-e2e" tests="3" failures="0" errors="0">
    <testsuite name="gateway" tests="3" disabled="0" errors="0" failures="0">
        <testcase name="an_alert_creates_a_request">
        </testcase>
        <testcase name="a_duplicate_raises_the_count">
        </testcase>
        <testcase name="a_spec_for_later">
            <skipped/>
        </testcase>
    </testsuite>
</testsuites>
"#;

    const DATASTORAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="remedy-e2e" tests="2" failures="1" errors="0">
    <testsuite name="datastorage" tests="2" disabled="0" errors="0" failures="1">
        <testcase name="an_event_is_stored">
        </testcase>
        <testcase name="a_repeated_event_id_is_stored_once">
            <failure type="failure">expected 200, got 201 &amp; more</failure>
        </testcase>
    </testsuite>
</testsuites>
"#;

    /// Two services in a folder of artifacts: gateway ok, datastorage with a failing spec.
    fn artifacts(name: &str) -> Utf8PathBuf {
        let dir = scratch(name);
        run_dir(&dir, "gateway", "ok", 93.5, 31.5, GATEWAY);
        run_dir(&dir, "datastorage", "failed", 70.25, 12.0, DATASTORAGE);
        dir
    }

    #[test]
    fn merges_the_runs_of_an_artifacts_folder() {
        let dir = artifacts("merge");
        let summary = merge(&dir).unwrap();
        let services: Vec<_> = summary.runs.iter().map(|r| r.service.as_str()).collect();
        assert_eq!(services, ["datastorage", "gateway"]);
        assert_eq!(summary.totals(), Counts { passed: 3, failed: 1, ignored: 1 });
        assert_eq!(summary.runs[1].setup(), Duration::from_secs(62));

        let out = dir.join("merged");
        summary.write(&out).unwrap();
        let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!((root.attribute("tests"), root.attribute("failures")), (Some("5"), Some("1")), "{xml}");
        let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
        let names: Vec<_> =
            suites.iter().map(|s| (s.attribute("name").unwrap(), s.attribute("tests").unwrap())).collect();
        assert_eq!(names, [("datastorage", "2"), ("gateway", "3")]);
        let failure = doc.descendants().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(failure.text(), Some("expected 200, got 201 & more"));
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("skipped")).count(), 1);

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["totals"]["specs"], json!({"passed": 3, "failed": 1, "ignored": 1}));
        assert_eq!(json["runs"][0]["failed_specs"], json!(["a_repeated_event_id_is_stored_once"]));
        assert_eq!(json["runs"][1]["specs_s"], 31.5);
        assert_eq!(json["runs"][1]["setup_s"], 62.0);
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("| **all** | **failed** | | | | 3 | 1 | 1 | |"), "{md}");
        let page = std::fs::read_to_string(out.join("summary.html")).unwrap();
        let table = page.find("<td><a href=\"#r0\">datastorage</a></td><td class=\"failed\">failed</td>").expect(&page);
        let sections: Vec<usize> =
            ["<section id=\"r0\">", "<section id=\"r1\">"].map(|s| page.find(s).unwrap()).to_vec();
        assert!(table < sections[0] && sections[0] < sections[1], "the table, then a section per run");
        assert!(
            page[sections[0]..sections[1]]
                .contains("<h2>datastorage end-to-end <span class=\"failed\">failed</span></h2>")
        );
        assert!(
            page.contains("data-log=\"r1-log-cluster\"") && page.contains("<details id=\"r1-log-cluster\">"),
            "{page}"
        );

        // The merged output does not count as a run when merged again.
        assert_eq!(merge(&dir).unwrap().runs.len(), 2);
    }

    #[test]
    fn a_schema_2_report_names_its_service_and_when_teardown_began() {
        let dir = scratch("schema2");
        let run = run_dir(&dir, "gateway", "ok", 93.5, 31.5, GATEWAY);
        let mut report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
        report["schema"] = json!(2);
        report["service"] = json!("gateway");
        report["title"] = json!("a title that is not the service's");
        report["up_s"] = json!(90.5);
        std::fs::write(run.join("report.json"), report.to_string()).unwrap();
        // The directory of `e2e all`, whose own report is of every run, holds runs.
        std::fs::write(dir.join("report.json"), json!({"schema": 2, "service": "all"}).to_string()).unwrap();
        let summary = merge(&dir).unwrap();
        assert_eq!(summary.runs.len(), 1);
        assert_eq!(summary.runs[0].service, "gateway");
        assert_eq!(summary.runs[0].setup(), Duration::from_secs(59), "90.5 s up, 31.5 s of specs");
        assert_eq!(summary.runs[0].makespan, Duration::from_secs_f64(93.5), "the total has teardown");
    }

    #[test]
    fn prints_one_table_across_services() {
        let dir = artifacts("table");
        let table = merge(&dir).unwrap().table();
        let expected = format!(
            "\
service                  outcome  setup    specs   total   passed failed ignored  report
datastorage              failed   58.2s    12.0s   1m10s        1      1       0  {dir}/e2e-datastorage/report.md
gateway                  ok       1m02s    31.5s   1m33s        2      0       1  {dir}/e2e-gateway/report.md
all                      failed                                 3      1       1
datastorage: failed 1 of 12, cancelled 0, not started 0
datastorage: spec failed: a_repeated_event_id_is_stored_once
"
        );
        assert_eq!(table, expected);
    }

    #[test]
    fn fails_on_a_failed_run_or_spec_only() {
        let dir = artifacts("exit");
        assert!(!merge(&dir).unwrap().ok());
        assert!(merge(&dir.join("e2e-gateway")).unwrap().ok());
        // An ok outcome with a failed spec still fails.
        let odd = scratch("exit-odd");
        let run = run_dir(&odd, "datastorage", "ok", 10.0, 5.0, DATASTORAGE);
        assert!(!merge(&run).unwrap().ok());
        // No junit.xml: the specs did not run; the outcome decides.
        std::fs::remove_file(dir.join("e2e-gateway/junit.xml")).unwrap();
        let summary = merge(&dir.join("e2e-gateway")).unwrap();
        assert!(summary.ok());
        assert!(summary.table().lines().nth(1).unwrap().contains("-      -       -"), "{}", summary.table());
    }

    #[test]
    fn an_expected_service_without_a_run_fails_the_merge() {
        let dir = scratch("expect");
        run_dir(&dir, "gateway", "ok", 93.5, 31.5, GATEWAY);
        let mut summary = merge(&dir).unwrap();
        assert!(summary.ok());
        let [gateway, datastorage] =
            ["gateway", "datastorage"].map(|name| crate::catalog::catalog().get(name).unwrap());
        summary.expect(&[gateway, datastorage, gateway, datastorage]);
        assert_eq!(summary.missing, ["datastorage"]);
        assert!(!summary.ok());
        let table = summary.table();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(
            lines[2], "datastorage              missing  -        -       -            -      -       -",
            "{table}"
        );
        assert_eq!(lines[3].split_whitespace().take(2).collect::<Vec<_>>(), ["all", "failed"], "{table}");
        assert_eq!(lines[4], format!("datastorage: {MISSING}"));
        assert_eq!(summary.json()["missing"], json!(["datastorage"]));
        assert_eq!(summary.json()["outcome"], "failed");
        assert!(summary.markdown().contains("| datastorage | missing |"), "{}", summary.markdown());

        summary.expect(&flags::Selection::All.services());
        assert_eq!(
            summary.missing,
            ["signalprocessing", "datastorage", "remediationorchestrator", "workflowexecution"]
        );
        summary.expect(&[gateway]);
        assert!(summary.missing.is_empty() && summary.ok());
    }

    #[test]
    fn malformed_or_missing_reports_are_one_line_errors_naming_the_file() {
        let dir = artifacts("malformed");
        let report = dir.join("e2e-gateway/report.json");
        let error = |dir: &Utf8Path| format!("{:#}", merge(dir).unwrap_err());

        std::fs::write(&report, "{\"schema\": 1, \"title\": ").unwrap();
        let err = error(&dir);
        assert!(err.starts_with(&format!("{report} is not valid JSON: ")) && !err.contains('\n'), "{err}");

        std::fs::write(&report, r#"{"schema": 1, "title": "gateway end-to-end"}"#).unwrap();
        let err = error(&dir);
        assert!(err.starts_with(&format!("{report} is not an E2E report: missing field")), "{err}");

        std::fs::write(&report, r#"{"schema": 3}"#).unwrap();
        assert_eq!(error(&dir), format!("{report} has schema 3, this xtask reads schemas [1, 2]"));

        std::fs::remove_file(&report).unwrap();
        assert_eq!(error(&dir), format!("{report} is missing (there is a junit.xml)"));

        let empty = scratch("malformed-empty");
        assert_eq!(error(&empty), format!("no report.json in {empty} or in a directory in it"));
        let err = error(&empty.join("absent"));
        assert!(err.starts_with(&format!("cannot read {empty}/absent: ")) && !err.contains('\n'), "{err}");
    }
}
