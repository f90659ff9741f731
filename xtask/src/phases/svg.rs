//! `timeline.svg`: a Gantt chart, one row per task, coloured by phase, critical path outlined.
//! `report.html` inlines the same chart with each bar linked to its task's log.

use std::fmt::Write as _;

use super::html::escape;
use super::plan::Phase;
use super::progress::human;
use super::view::{RunView, secs};

const LABEL_W: f64 = 250.0;
const CHART_W: f64 = 760.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 48.0;

/// Whether the chart stands alone or is part of a page, where each bar can be focused and
/// opens its task's log.
#[derive(Clone, Copy)]
pub enum Bars<'a> {
    Standalone,
    /// In a page: the bar of task `id` opens the element `<prefix>log-<id>`.
    Linked {
        prefix: &'a str,
    },
}

fn colour(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::Cluster) => "#4e79a7",
        Some(Phase::Images) => "#f28e2b",
        Some(Phase::Infra) => "#59a14f",
        Some(Phase::Services) => "#b07aa1",
        Some(Phase::Tests) => "#76b7b2",
        Some(Phase::Teardown) => "#9c755f",
        None => "#bab0ac",
    }
}

/// A tick spacing of 1, 2 or 5 times a power of ten giving at most ten ticks.
fn tick_step(total_secs: f64) -> f64 {
    let raw = (total_secs / 10.0).max(0.001);
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * base).find(|&s| s >= raw).unwrap_or(10.0 * base)
}

pub fn timeline(view: &RunView, bars: Bars<'_>) -> String {
    let rows = view.tasks.len() as f64;
    let total = view.makespan_s.max(0.001);
    let x = |secs: f64| LABEL_W + CHART_W * secs / total;
    let legend_y = TOP + ROW_H * rows + 28.0;
    let height = legend_y + 30.0;
    let width = LABEL_W + CHART_W + 30.0;

    let mut svg = String::new();
    let namespace = match bars {
        Bars::Standalone => r#" xmlns="http://www.w3.org/2000/svg""#,
        Bars::Linked { .. } => "",
    };
    let _ = writeln!(
        svg,
        r#"<svg{namespace} width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" aria-label="timeline">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{} ({} strategy): {}</text>"#,
        escape(&view.title),
        escape(&view.strategy),
        human(secs(view.makespan_s))
    );

    let step = tick_step(total);
    let mut tick = 0.0;
    while tick <= total + 1e-9 {
        let tx = x(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#ddd"/><text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555">{}s</text>"##,
            TOP - 6.0,
            TOP + ROW_H * rows,
            TOP - 10.0,
            (tick * 1000.0).round() / 1000.0
        );
        tick += step;
    }

    for (row, task) in view.tasks.iter().enumerate() {
        let y = TOP + ROW_H * row as f64;
        let label = format!("{}{}", if task.critical { "* " } else { "" }, task.label());
        let fill = if task.status == "not_started" { "#999" } else { "#000" };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end" fill="{fill}"{}>{}</text>"#,
            LABEL_W - 8.0,
            y + 15.0,
            if task.critical { r#" font-weight="bold""# } else { "" },
            escape(&label)
        );
        let Some((start, end)) = task.span() else {
            continue;
        };
        let (x0, x1) = (x(start.as_secs_f64()), x(end.as_secs_f64()));
        let stroke = match (task.status.as_str(), task.critical) {
            ("failed", _) => r##" stroke="#d62728" stroke-width="2.5""##,
            (_, true) => r##" stroke="#000" stroke-width="2""##,
            _ => "",
        };
        let opacity = match task.status.as_str() {
            "cancelled" | "cached" => "0.45",
            _ => "1",
        };
        let link = match bars {
            Bars::Standalone => String::new(),
            Bars::Linked { prefix } => format!(
                r#" class="bar" tabindex="0" role="button" data-log="{}log-{}""#,
                escape(prefix),
                escape(&task.id)
            ),
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{}" fill-opacity="{opacity}"{stroke}{link}><title>{} {}: {} from {} ({})</title></rect>"#,
            y + 3.0,
            (x1 - x0).max(1.0),
            ROW_H - 6.0,
            colour(task.phase()),
            escape(&task.label()),
            escape(&task.status_name()),
            human(end.saturating_sub(start)),
            human(start),
            escape(&task.kind)
        );
    }

    let mut lx = 10.0;
    for phase in Phase::ALL {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            legend_y - 10.0,
            colour(Some(phase)),
            lx + 16.0,
            legend_y,
            phase.name()
        );
        lx += 90.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{lx}" y="{}" width="12" height="12" fill="white" stroke="#000" stroke-width="2"/><text x="{}" y="{legend_y}">critical path (*)</text>"##,
        legend_y - 10.0,
        lx + 16.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::phases::plan::{Kind, Plan, Task};
    use crate::phases::scheduler::{RunRecord, Status, Strategy, TaskRecord};

    #[test]
    fn timeline_is_well_formed_svg_with_one_bar_per_started_task() {
        let plan = Plan::new(vec![
            Task::new("create <cluster> & co", Phase::Cluster, Kind::Process),
            Task::new("build", Phase::Images, Kind::Build),
            Task::new("deploy", Phase::Services, Kind::Api).after(&["create <cluster> & co", "build"]),
            Task::new("never", Phase::Tests, Kind::Process).after(&["deploy"]),
        ])
        .unwrap();
        let rec = |status, s: u64, e: u64| TaskRecord {
            status,
            start: Some(Duration::from_millis(s)),
            end: Some(Duration::from_millis(e)),
            ..TaskRecord::default()
        };
        let not_started = TaskRecord::default();
        let run = RunRecord {
            strategy: Strategy::Dag,
            jobs: 2,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            up: Duration::from_millis(3000),
            makespan: Duration::from_millis(3000),
            interrupted: false,
            tasks: vec![
                rec(Status::Ok, 0, 2000),
                rec(Status::Ok, 0, 500),
                rec(Status::Failed, 2001, 3000),
                not_started,
            ],
        };
        let report = crate::phases::report::Report::new("gateway", "gateway e2e", "run", &plan, &run);
        let svg = timeline(&RunView::from_json(&report.json()).unwrap(), Bars::Standalone);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
        let bars: Vec<_> =
            doc.descendants().filter(|n| n.has_tag_name("rect") && n.attribute("rx").is_some()).collect();
        assert_eq!(bars.len(), 3, "one bar per task that ran");
        assert!(svg.contains("create &lt;cluster&gt; &amp; co"));
        let outlined: Vec<_> = bars.iter().filter(|b| b.attribute("stroke").is_some()).collect();
        assert_eq!(outlined.len(), 2, "the critical cluster bar and the failed deploy bar");
        let widths: Vec<f64> = bars.iter().map(|b| b.attribute("width").unwrap().parse().unwrap()).collect();
        assert!((widths[0] - CHART_W * 2.0 / 3.0).abs() < 0.2, "{widths:?}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(9.0), 1.0);
        assert_eq!(tick_step(45.0), 5.0);
        assert_eq!(tick_step(330.0), 50.0);
        assert!((tick_step(0.5) - 0.05).abs() < 1e-12);
    }
}
