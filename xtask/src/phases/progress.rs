//! Progress while a plan runs: live spinner lines on a terminal, plain timestamped lines
//! otherwise (`12:03:04.120 start images/build-gateway`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::plan::Task;
use super::scheduler::{Status, TaskRecord};

pub trait Progress {
    fn started(&mut self, task: &Task);
    fn finished(&mut self, task: &Task, record: &TaskRecord);
    /// How long the run is expected to take still, from the tasks' expected durations and
    /// what runs now; told before each start and end.
    fn left(&mut self, _left: Duration) {}
}

/// Live lines when stderr is a terminal and CI is not set, plain lines otherwise.
pub fn for_stderr() -> Box<dyn Progress> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if !ci && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Box::new(Live::default())
    } else {
        Box::new(Plain::new(Box::new(std::io::stderr())))
    }
}

/// Formats a duration the way reports show it: `850ms`, `12.3s`, `2m36s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

fn clock() -> String {
    jiff::Zoned::now().strftime("%H:%M:%S%.3f").to_string()
}

/// `ok images/build-gateway 6.4s`, with what it usually takes when past runs say, and the
/// error of a failed one.
fn outcome_line(task: &Task, record: &TaskRecord) -> String {
    let took = record.elapsed().map(human).unwrap_or_default();
    let mut line = format!("{:<9} {} {took}", record.status.name(), task.label());
    if task.estimate_from.is_some() && record.elapsed().is_some() {
        line.push_str(&format!(" (usually {})", human(task.estimate)));
    }
    if let Some(error) = &record.error {
        line.push_str(&format!(": {error}"));
    }
    line
}

pub struct Plain {
    pub out: Box<dyn Write + Send>,
    /// The last expected time left, printed with each task's end.
    pub left: Option<Duration>,
}

impl Plain {
    pub fn new(out: Box<dyn Write + Send>) -> Plain {
        Plain { out, left: None }
    }
}

impl Progress for Plain {
    fn started(&mut self, task: &Task) {
        let _ = writeln!(self.out, "{} start     {}", clock(), task.label());
    }

    fn finished(&mut self, task: &Task, record: &TaskRecord) {
        let left = self.left.map(|left| format!("; about {} left", human(left))).unwrap_or_default();
        let _ = writeln!(self.out, "{} {}{left}", clock(), outcome_line(task, record));
    }

    fn left(&mut self, left: Duration) {
        self.left = Some(left);
    }
}

/// One line as each of `tasks` ends, nothing else: a watch pass's, which reruns only those.
pub struct Ends {
    pub out: Box<dyn Write + Send>,
    pub tasks: HashSet<String>,
}

impl Progress for Ends {
    fn started(&mut self, _: &Task) {}

    fn finished(&mut self, task: &Task, record: &TaskRecord) {
        if self.tasks.contains(&task.id) {
            let _ = writeln!(self.out, "  {}", outcome_line(task, record));
        }
    }
}

#[derive(Default)]
pub struct Live {
    bars: MultiProgress,
    running: HashMap<String, ProgressBar>,
    /// The expected time left, the first line.
    eta: Option<ProgressBar>,
}

impl Progress for Live {
    fn left(&mut self, left: Duration) {
        let bars = &self.bars;
        let eta = self.eta.get_or_insert_with(|| {
            let bar = bars.insert(0, ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
            bar
        });
        eta.set_message(format!("about {} left", human(left)));
    }

    fn started(&mut self, task: &Task) {
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
        bar.set_message(task.label());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.running.insert(task.id.clone(), bar);
    }

    fn finished(&mut self, task: &Task, record: &TaskRecord) {
        if let Some(bar) = self.running.remove(&task.id) {
            bar.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
            let line = outcome_line(task, record);
            if record.status == Status::Failed {
                bar.abandon_with_message(line);
            } else {
                bar.finish_with_message(line);
            }
        }
    }
}

/// Discards progress; for callers that only want the record.
#[cfg(test)]
pub struct Quiet;

#[cfg(test)]
impl Progress for Quiet {
    fn started(&mut self, _: &Task) {}
    fn finished(&mut self, _: &Task, _: &TaskRecord) {}
}
