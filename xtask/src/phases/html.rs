//! `report.html`: a run's report as one self-contained page (inline CSS, a little inline script,
//! nothing fetched): the failure and its log tail first, the timeline with each bar opening its
//! task's log, the critical path, the phases, the specs and every task's log, collapsed.
//! `report merge` puts several runs' sections on one page.

use std::fmt::Write as _;

use camino::{Utf8Component, Utf8Path};

use super::progress::human;
use super::svg::{self, Bars};
use super::view::{RunView, TaskView, secs};

/// The most of a log a page embeds: its end.
pub const LOG_LIMIT: usize = 64 * 1024;

/// How many of a failed task's last log lines the top of the page shows.
const FAILURE_LINES: usize = 30;

const STYLE: &str = "
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right}tr[data-log]{cursor:pointer}tr[data-log]:hover{background:#f4f4f4}
.failed{color:#b00020;font-weight:bold}.ok,.passed{color:#176a1e}
.failure{border:2px solid #d62728;background:#fff5f5;padding:.5em 1em;margin:1em 0}
pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:32em;font-size:12px;white-space:pre-wrap}
details{margin:.3em 0}summary{cursor:pointer}details[open]>summary{font-weight:bold}
svg{max-width:100%;height:auto}.bar{cursor:pointer}.bar:focus{outline:none;stroke:#1f77b4;stroke-width:3}
.note{color:#555}
";

/// Opens the `<details>` a bar or a row names (`data-log`), and the one the address names; says
/// under the timeline what the bar in focus or under the pointer did.
const SCRIPT: &str = "
function openLog(id){var d=document.getElementById(id);if(!d)return;d.open=true;d.scrollIntoView({block:'start'});}
function target(e){return e.target&&e.target.closest?e.target.closest('[data-log]'):null;}
document.addEventListener('click',function(e){var t=target(e);if(t){e.preventDefault();openLog(t.getAttribute('data-log'));}});
document.addEventListener('keydown',function(e){var t=target(e);if(t&&(e.key==='Enter'||e.key===' ')){e.preventDefault();openLog(t.getAttribute('data-log'));}});
function tell(e){var t=target(e),svg=t&&t.closest('svg'),title=t&&t.querySelector('title');if(svg&&title&&svg.nextElementSibling){svg.nextElementSibling.textContent=title.textContent;}}
document.addEventListener('focusin',tell);document.addEventListener('mouseover',tell);
if(location.hash){openLog(decodeURIComponent(location.hash.slice(1)));}
";

/// Text for HTML (and SVG): the five characters markup gives meaning to, escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}<script>{SCRIPT}</script>\n</body>\n</html>\n",
        escape(title)
    )
}

/// The page of one run, whose report directory is `dir`.
pub fn run_page(view: &RunView, dir: &Utf8Path) -> String {
    page(&view.title, &section(view, dir, "", 1))
}

/// One run's part of a page. `prefix` makes its element ids unique on a page of several runs;
/// `level` is its heading's.
pub fn section(view: &RunView, dir: &Utf8Path, prefix: &str, level: u8) -> String {
    let (h, sub) = (level, level + 1);
    let mut out = String::new();
    let outcome = escape(&view.outcome);
    let _ = writeln!(out, "<h{h}>{} <span class=\"{outcome}\">{outcome}</span></h{h}>", escape(&view.title));
    let _ = writeln!(
        out,
        "<p>Run <code>{}</code>, strategy {}, jobs {}, started {}: took {}.</p>",
        escape(&view.run_id),
        escape(&view.strategy),
        view.jobs,
        escape(&view.started_at),
        human(secs(view.makespan_s))
    );
    out.push_str(&failures(view, dir, prefix));
    if let Some(history) = &view.history {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(&history.comparison(view.makespan_s).summary()));
    }
    let _ = writeln!(
        out,
        "<h{sub}>Timeline</h{sub}>\n{}<p class=\"note\" aria-live=\"polite\">Point at a bar or focus it (Tab) for its times; \
         click it or press Enter for its log.</p>",
        svg::timeline(view, Bars::Linked { prefix })
    );
    let chain: Vec<String> = view.critical_path.iter().map(|id| link(prefix, id, id)).collect();
    let _ = writeln!(
        out,
        "<h{sub}>Critical path ({})</h{sub}>\n<p>{}</p>",
        human(secs(view.critical_path_s)),
        chain.join(" &rarr; ")
    );
    out.push_str(&phases(view, sub));
    out.push_str(&specs(view, sub));
    out.push_str(&tasks(view, prefix, sub));
    let _ = writeln!(out, "<h{sub}>Logs</h{sub}>");
    for task in &view.tasks {
        out.push_str(&log_details(task, dir, prefix));
    }
    out
}

/// A link to a task's log.
fn link(prefix: &str, id: &str, text: &str) -> String {
    format!("<a href=\"#{}log-{}\" data-log=\"{0}log-{1}\">{}</a>", escape(prefix), escape(id), escape(text))
}

/// For a run that failed: its summary, each failed task's error and log tail, the failed specs.
fn failures(view: &RunView, dir: &Utf8Path, prefix: &str) -> String {
    let failed_specs: Vec<_> = view.specs.iter().filter(|s| s.outcome == "failed").collect();
    if view.summary.is_none() && failed_specs.is_empty() {
        return String::new();
    }
    let mut out = String::from("<div class=\"failure\">\n");
    if let Some(summary) = &view.summary {
        let _ = writeln!(out, "<p class=\"failed\">{}</p>", escape(summary));
    }
    for task in view.failed_tasks() {
        let _ = writeln!(
            out,
            "<p>{} failed: {}</p>",
            link(prefix, &task.id, &task.label()),
            escape(task.error.as_deref().unwrap_or_default())
        );
        if let Some(text) = read_log(task, dir) {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(FAILURE_LINES)..].join("\n");
            let _ = writeln!(out, "<pre>{}</pre>", escape(&tail));
        }
    }
    for spec in failed_specs {
        let _ = writeln!(out, "<p>spec failed: <code>{}</code></p>", escape(&spec.name));
        if let Some(failure) = &spec.failure {
            let _ = writeln!(out, "<pre>{}</pre>", escape(failure));
        }
    }
    out.push_str("</div>\n");
    out
}

fn phases(view: &RunView, h: u8) -> String {
    let mut out =
        format!("<h{h}>Phases</h{h}>\n<table>\n<tr><th>phase</th><th>tasks</th><th>wall</th><th>sum</th></tr>\n");
    for row in &view.phases {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&row.phase),
            row.tasks,
            human(secs(row.wall_s)),
            human(secs(row.sum_s))
        );
    }
    let _ = writeln!(
        out,
        "<tr><th>total</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th></tr>\n</table>",
        view.tasks.len(),
        human(secs(view.makespan_s)),
        human(secs(view.sum_of_tasks_s))
    );
    out
}

/// The specs, failed ones first.
fn specs(view: &RunView, h: u8) -> String {
    if view.specs.is_empty() {
        return String::new();
    }
    let mut specs: Vec<_> = view.specs.iter().collect();
    specs.sort_by_key(|s| s.outcome != "failed");
    let mut out = format!("<h{h}>Specs</h{h}>\n<table>\n<tr><th>spec</th><th>outcome</th><th>time</th></tr>\n");
    for spec in specs {
        let outcome = escape(&spec.outcome);
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td class=\"{outcome}\">{outcome}</td><td class=\"n\">{}</td></tr>",
            escape(&spec.name),
            spec.time_s.map(|t| human(secs(t))).unwrap_or_default()
        );
    }
    out.push_str("</table>\n");
    out
}

/// Every task, a row each; a row opens the task's log.
fn tasks(view: &RunView, prefix: &str, h: u8) -> String {
    let mut out = format!(
        "<h{h}>Tasks</h{h}>\n<table>\n<tr><th>task</th><th>status</th><th>start</th><th>duration</th><th>usually</th><th>critical</th></tr>\n"
    );
    for task in &view.tasks {
        let status = escape(&task.status);
        let usually = match (task.expected_from, task.expected_s) {
            (Some(n), Some(s)) if n > 0 => human(secs(s)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr data-log=\"{}log-{}\"><td>{}</td><td class=\"{status}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{usually}</td><td>{}</td></tr>",
            escape(prefix),
            escape(&task.id),
            link(prefix, &task.id, &task.label()),
            escape(&task.status_name()),
            task.start_s.map(|s| human(secs(s))).unwrap_or_default(),
            task.duration_s.map(|s| human(secs(s))).unwrap_or_default(),
            if task.critical { "yes" } else { "" }
        );
    }
    out.push_str("</table>\n");
    out
}

/// A task's log, collapsed, with its end only when it is long.
fn log_details(task: &TaskView, dir: &Utf8Path, prefix: &str) -> String {
    let took = task.duration_s.map(|s| format!(", {}", human(secs(s)))).unwrap_or_default();
    let body = match read_log(task, dir) {
        None => "<p class=\"note\">no log</p>".to_owned(),
        Some(text) => {
            let (shown, cut) = tail(&text, LOG_LIMIT);
            let note = if cut {
                format!(
                    "<p class=\"note\">the last {} KiB of {} KiB: the whole log is {}</p>\n",
                    LOG_LIMIT / 1024,
                    text.len().div_ceil(1024),
                    escape(task.log.as_deref().unwrap_or_default())
                )
            } else {
                String::new()
            };
            format!("{note}<pre>{}</pre>", escape(shown))
        }
    };
    format!(
        "<details id=\"{}log-{}\"><summary>{} ({}{took})</summary>\n{body}\n</details>\n",
        escape(prefix),
        escape(&task.id),
        escape(&task.label()),
        escape(&task.status_name())
    )
}

/// The task's log, when its report names one inside `dir` that can be read.
fn read_log(task: &TaskView, dir: &Utf8Path) -> Option<String> {
    let log = Utf8Path::new(task.log.as_deref()?);
    if !inside(log) {
        return None;
    }
    let bytes = std::fs::read(dir.join(log)).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `path` is relative and stays below where it starts (a report from elsewhere must not
/// put another file on the page).
fn inside(path: &Utf8Path) -> bool {
    path.components().all(|c| matches!(c, Utf8Component::Normal(_)))
}

/// At most the last `limit` bytes of `text`, from a line's start, and whether any was left out.
fn tail(text: &str, limit: usize) -> (&str, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut from = text.len() - limit;
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let rest = &text[from..];
    let shown = rest.find('\n').map_or(rest, |newline| &rest[newline + 1..]);
    (shown, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_long_log_keeps_its_end_from_a_line_start() {
        assert_eq!(tail("short\n", 64), ("short\n", false));
        let text = "first line\nsecond line\nthird\n";
        assert_eq!(tail(text, 12), ("third\n", true));
        // A cut inside a character moves past it.
        let (shown, cut) = tail("ééé\nlast\n", 7);
        assert_eq!((shown, cut), ("last\n", true));
        let long = "x".repeat(LOG_LIMIT * 2);
        let (shown, cut) = tail(&long, LOG_LIMIT);
        assert!(cut && shown.len() <= LOG_LIMIT);
    }

    #[test]
    fn only_logs_inside_the_report_directory_are_read() {
        assert!(inside(Utf8Path::new("logs/cluster.log")));
        assert!(!inside(Utf8Path::new("../secrets/kubeconfig")));
        assert!(!inside(Utf8Path::new("/etc/passwd")));
        assert!(!inside(Utf8Path::new("logs/../../x")));
    }
}
