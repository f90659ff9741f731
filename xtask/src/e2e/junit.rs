//! The specs' results as JUnit XML, read from the test runner's output in the specs task log.

use anyhow::Context;
use camino::Utf8Path;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::report_merge::Counts;

/// Reads libtest's `test <name> ... ok|FAILED|ignored` lines (and each failure's captured
/// output) from `log` and writes them to `junit` as one suite.
pub fn write(log: &Utf8Path, junit: &Utf8Path, suite: &str) -> anyhow::Result<Counts> {
    let text = std::fs::read_to_string(log).with_context(|| format!("cannot read {log}"))?;
    let (report, counts) = from_libtest(&text, suite);
    let xml = report.to_string().context("cannot render JUnit XML")?;
    std::fs::write(junit, xml).with_context(|| format!("cannot write {junit}"))?;
    Ok(counts)
}

fn from_libtest(text: &str, suite: &str) -> (Report, Counts) {
    let mut counts = Counts::default();
    let mut cases = Vec::new();
    for line in text.lines() {
        let Some((name, outcome)) = line.strip_prefix("test ").and_then(|rest| rest.rsplit_once(" ... ")) else {
            continue;
        };
        let status = match outcome.trim() {
            "ok" => {
                counts.passed += 1;
                TestCaseStatus::success()
            }
            "FAILED" => {
                counts.failed += 1;
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_description(failure_output(text, name));
                status
            }
            outcome if outcome.starts_with("ignored") => {
                counts.ignored += 1;
                TestCaseStatus::skipped()
            }
            _ => continue,
        };
        cases.push(TestCase::new(name, status));
    }
    let mut test_suite = TestSuite::new(suite);
    test_suite.add_test_cases(cases);
    let mut report = Report::new("remedy-e2e");
    report.add_test_suite(test_suite);
    (report, counts)
}

/// What libtest printed under `---- <name> stdout ----`.
fn failure_output(text: &str, name: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let Some(start) = text.find(&header) else { return String::new() };
    let body = &text[start + header.len()..];
    let end = body.find("\n---- ").or_else(|| body.find("\nfailures:")).unwrap_or(body.len());
    body[..end].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 3 tests
test a_spec_that_passes ... ok
test a_spec_that_fails ... FAILED
test a_spec_for_later ... ignored, needs a cluster

failures:

---- a_spec_that_fails stdout ----
thread 'a_spec_that_fails' panicked at tests/x.rs:3:5:
expected 201, got 500

failures:
    a_spec_that_fails

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s
";

    #[test]
    fn counts_and_renders_every_spec() {
        let (report, counts) = from_libtest(OUTPUT, "gateway");
        assert_eq!(counts, Counts { passed: 1, failed: 1, ignored: 1 });
        let xml = report.to_string().unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(cases.len(), 3);
        let failed = cases.iter().find(|c| c.attribute("name") == Some("a_spec_that_fails")).unwrap();
        let failure = failed.children().find(|n| n.has_tag_name("failure")).expect("a failure element");
        assert!(failure.text().unwrap_or_default().contains("expected 201, got 500"), "{xml}");
        assert!(cases.iter().any(|c| c.children().any(|n| n.has_tag_name("skipped"))));
    }
}
