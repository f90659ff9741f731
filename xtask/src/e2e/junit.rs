//! The specs' results, from the JUnit report cargo-nextest writes for the run: copied to the
//! report directory, counted for the summary, and each spec with its time for the report.

use std::time::Duration;

use anyhow::Context;
use camino::Utf8Path;

use crate::phases::report::{SpecOutcome, SpecResult};
use crate::report_merge::Counts;

/// Reads nextest's report `from`, copies it to `to`, and returns the counts and every spec.
pub fn read(from: &Utf8Path, to: &Utf8Path) -> anyhow::Result<(Counts, Vec<SpecResult>)> {
    let xml = std::fs::read_to_string(from).with_context(|| format!("cannot read nextest's JUnit report {from}"))?;
    let specs = parse(&xml).with_context(|| format!("{from} is not valid JUnit XML"))?;
    std::fs::write(to, &xml).with_context(|| format!("cannot write {to}"))?;
    let mut counts = Counts::default();
    for spec in &specs {
        match spec.outcome {
            SpecOutcome::Passed => counts.passed += 1,
            SpecOutcome::Failed => counts.failed += 1,
            SpecOutcome::Ignored => counts.ignored += 1,
        }
    }
    Ok((counts, specs))
}

/// Every `<testcase>`: its name, whether it failed (a `failure` or `error` child, whose text or
/// message is what the runner said) or was skipped, and its time.
fn parse(xml: &str) -> anyhow::Result<Vec<SpecResult>> {
    let doc = roxmltree::Document::parse(xml)?;
    let cases = doc.descendants().filter(|n| n.has_tag_name("testcase"));
    Ok(cases
        .map(|case| {
            let child = |tag: &str| case.children().any(|c| c.has_tag_name(tag));
            let failed = case.children().find(|c| c.has_tag_name("failure") || c.has_tag_name("error"));
            let failure = failed.and_then(|element| {
                let text = element.text().map(str::trim).filter(|t| !t.is_empty());
                text.or(element.attribute("message")).map(str::to_owned)
            });
            let outcome = if failed.is_some() {
                SpecOutcome::Failed
            } else if child("skipped") {
                SpecOutcome::Ignored
            } else {
                SpecOutcome::Passed
            };
            let time = case.attribute("time").and_then(|t| Duration::try_from_secs_f64(t.parse().ok()?).ok());
            SpecResult { name: case.attribute("name").unwrap_or_default().to_owned(), outcome, time, failure }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As cargo-nextest 0.9 writes it.
    const NEXTEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="gateway" tests="3" failures="1" errors="0" uuid="0e9d" timestamp="2026-12-01T12:00:00.000+00:00" time="9.314">
    <testsuite name="remedy-e2e::gateway" tests="3" disabled="1" errors="0" failures="1">
        <testcase name="webhook::an_alert_creates_a_request" classname="remedy-e2e::gateway" timestamp="2026-12-01T12:00:00.100+00:00" time="1.250">
        </testcase>
        <testcase name="webhook::a_duplicate_raises_the_count" classname="remedy-e2e::gateway" timestamp="2026-12-01T12:00:00.200+00:00" time="9.031">
            <failure type="test failure with exit code 101">thread panicked at tests/gateway.rs:3:5: expected 202, got 200</failure>
        </testcase>
        <testcase name="a_spec_for_later" classname="remedy-e2e::gateway">
            <skipped/>
        </testcase>
    </testsuite>
</testsuites>
"#;

    #[test]
    fn every_spec_with_its_outcome_and_time() {
        let specs = parse(NEXTEST).unwrap();
        let outcomes: Vec<(&str, SpecOutcome, Option<Duration>)> =
            specs.iter().map(|s| (s.name.as_str(), s.outcome, s.time)).collect();
        assert_eq!(
            outcomes,
            [
                ("webhook::an_alert_creates_a_request", SpecOutcome::Passed, Some(Duration::from_millis(1250))),
                ("webhook::a_duplicate_raises_the_count", SpecOutcome::Failed, Some(Duration::from_millis(9031))),
                ("a_spec_for_later", SpecOutcome::Ignored, None),
            ]
        );
        assert_eq!(specs[1].failure.as_deref(), Some("thread panicked at tests/gateway.rs:3:5: expected 202, got 200"));
        assert_eq!((specs[0].failure.as_deref(), specs[2].failure.as_deref()), (None, None));
        let dir = camino::Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap());
        let (from, to) = (
            dir.join(format!("nextest-{}.xml", std::process::id())),
            dir.join(format!("junit-{}.xml", std::process::id())),
        );
        std::fs::write(&from, NEXTEST).unwrap();
        let (counts, _) = read(&from, &to).unwrap();
        assert_eq!(counts, Counts { passed: 1, failed: 1, ignored: 1 });
        assert_eq!(std::fs::read_to_string(&to).unwrap(), NEXTEST);
        let _ = (std::fs::remove_file(from), std::fs::remove_file(to));
        assert!(parse("<testsuites").is_err());
    }
}
