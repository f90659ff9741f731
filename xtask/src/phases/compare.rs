//! How a run compares with the previous runs of its environment on this machine: its total
//! against their median, and the tasks that moved most against theirs.

use std::time::Duration;

use super::progress::human;

/// How many tasks a comparison names.
const MOVED: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// How many previous runs the usual total is the median of.
    pub runs: usize,
    pub usual: Duration,
    pub took: Duration,
    /// The tasks that moved most, most first.
    pub moved: Vec<Moved>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub id: String,
    /// The median of its previous durations.
    pub before: Duration,
    /// This run's.
    pub after: Duration,
}

/// The comparison of a run that took `took` with the previous ones, whose totals' median is
/// `usual` (with how many runs); `tasks` are each task's usual duration and this run's, where
/// known. Without a previous run there is nothing to say.
pub fn compare<'a>(
    usual: Option<(Duration, usize)>,
    took: Duration,
    tasks: impl IntoIterator<Item = (&'a str, Option<Duration>, Option<Duration>)>,
) -> Option<Comparison> {
    let (usual, runs) = usual.filter(|&(_, runs)| runs > 0)?;
    let mut moved: Vec<Moved> = tasks
        .into_iter()
        .filter_map(|(id, before, after)| Some(Moved { id: id.to_owned(), before: before?, after: after? }))
        .filter(|m| m.change() >= Duration::from_millis(1))
        .collect();
    moved.sort_by(|a, b| b.change().cmp(&a.change()).then_with(|| a.id.cmp(&b.id)));
    moved.truncate(MOVED);
    Some(Comparison { runs, usual, took, moved })
}

impl Moved {
    fn change(&self) -> Duration {
        self.after.abs_diff(self.before)
    }
}

/// `+1.2s` or `-850ms`.
fn signed(before: Duration, after: Duration) -> String {
    let sign = if after >= before { '+' } else { '-' };
    format!("{sign}{}", human(after.abs_diff(before)))
}

impl Comparison {
    /// `took 1m10s, usually 1m02s over the last 5 runs here (+8.0s); moved most: datastorage
    /// 2.4s -> 9.8s (+7.4s)`.
    pub fn summary(&self) -> String {
        let runs = if self.runs == 1 { "the last run".to_owned() } else { format!("the last {} runs", self.runs) };
        let mut line = format!(
            "took {}, usually {} over {runs} here ({})",
            human(self.took),
            human(self.usual),
            signed(self.usual, self.took)
        );
        if !self.moved.is_empty() {
            let moved: Vec<String> = self
                .moved
                .iter()
                .map(|m| format!("{} {} -> {} ({})", m.id, human(m.before), human(m.after), signed(m.before, m.after)))
                .collect();
            line.push_str(&format!("; moved most: {}", moved.join(", ")));
        }
        line
    }

    pub fn json(&self) -> serde_json::Value {
        let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        let moved: Vec<_> = self
            .moved
            .iter()
            .map(|m| serde_json::json!({"id": m.id, "before_s": secs(m.before), "after_s": secs(m.after)}))
            .collect();
        serde_json::json!({"runs": self.runs, "usual_s": secs(self.usual), "moved": moved})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Option<Duration> {
        Some(Duration::from_secs_f64(secs))
    }

    #[test]
    fn without_a_previous_run_there_is_nothing_to_say() {
        assert_eq!(compare(None, Duration::from_secs(9), [("build", s(1.0), s(2.0))]), None);
        assert_eq!(compare(Some((Duration::from_secs(5), 0)), Duration::from_secs(9), []), None);
    }

    #[test]
    fn the_three_tasks_that_moved_most_either_way() {
        let tasks = [
            ("cluster", s(60.0), s(58.0)),
            ("build-image-gateway", s(2.0), s(30.0)),
            ("specs", s(40.0), s(20.0)),
            ("crds", s(1.0), s(1.0)),
            ("new-task", None, s(5.0)),
            ("never-ran", s(9.0), None),
            ("redis", s(3.0), s(6.5)),
        ];
        let c = compare(Some((s(100.0).unwrap(), 4)), s(112.0).unwrap(), tasks).unwrap();
        let ids: Vec<&str> = c.moved.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["build-image-gateway", "specs", "redis"]);
        assert_eq!(
            c.summary(),
            "took 1m52s, usually 1m40s over the last 4 runs here (+12.0s); moved most: \
             build-image-gateway 2.0s -> 30.0s (+28.0s), specs 40.0s -> 20.0s (-20.0s), redis 3.0s -> 6.5s (+3.5s)"
        );
        assert_eq!(c.json()["moved"][1], serde_json::json!({"id": "specs", "before_s": 40.0, "after_s": 20.0}));
    }

    #[test]
    fn one_previous_run_and_nothing_moved() {
        let c = compare(Some((s(10.0).unwrap(), 1)), s(9.5).unwrap(), [("crds", s(1.0), s(1.0))]).unwrap();
        assert_eq!(c.summary(), "took 9.5s, usually 10.0s over the last run here (-500ms)");
    }
}
