//! The shortest makespan a plan's pools allow, to measure a schedule against: build tasks share
//! `jobs` slots, every other task starts as soon as its dependencies have ended (its pool has a
//! slot for each). Teardown, which follows everything, is left out.
//!
//! Exact when the plan has few build tasks: every order of the builds is tried, each scheduled
//! as early as the slots allow (the serial schedule generation scheme, whose schedules over all
//! orders include a shortest one). Otherwise a bound no schedule can beat.

use std::time::Duration;

use super::plan::{Kind, Plan};

/// Up to this many build tasks the search is exact (9! orders at most).
const EXACT_UP_TO: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Best {
    /// No schedule is shorter, and one is this long.
    Exact(Duration),
    /// No schedule is shorter.
    AtLeast(Duration),
}

impl Best {
    pub fn duration(self) -> Duration {
        match self {
            Best::Exact(d) | Best::AtLeast(d) => d,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Best::Exact(_) => "the best schedule, found by search",
            Best::AtLeast(_) => "a lower bound (too many builds to search)",
        }
    }
}

/// The best makespan of `plan`'s tasks before teardown with `jobs` build slots, from each
/// task's estimate.
pub fn best(plan: &Plan, jobs: usize) -> Best {
    let up: Vec<usize> = (0..plan.len()).filter(|&i| !plan.tasks()[i].is_teardown()).collect();
    let builds = up.iter().filter(|&&i| plan.tasks()[i].kind == Kind::Build).count();
    if builds <= EXACT_UP_TO {
        let mut search = Search { plan, jobs: jobs.max(1), best: Duration::MAX };
        search.extend(&mut Partial::new(plan));
        Best::Exact(search.best)
    } else {
        Best::AtLeast(lower_bound(plan, jobs.max(1)))
    }
}

/// A schedule under construction: when each scheduled task starts and ends, and the build
/// slots' busy intervals.
#[derive(Clone)]
struct Partial {
    end: Vec<Option<Duration>>,
    busy: Vec<(Duration, Duration)>,
}

impl Partial {
    fn new(plan: &Plan) -> Partial {
        Partial { end: vec![None; plan.len()], busy: Vec::new() }
    }

    /// When every dependency of `i` has ended, if all have been scheduled.
    fn release(&self, plan: &Plan, i: usize) -> Option<Duration> {
        plan.deps(i).iter().try_fold(Duration::ZERO, |at, &d| Some(at.max(self.end[d]?)))
    }

    /// Schedules every task that needs no slot as early as its dependencies allow.
    fn settle(&mut self, plan: &Plan) {
        loop {
            let ready: Vec<(usize, Duration)> = up(plan)
                .filter(|&i| self.end[i].is_none() && plan.tasks()[i].kind != Kind::Build)
                .filter_map(|i| Some((i, self.release(plan, i)?)))
                .collect();
            if ready.is_empty() {
                return;
            }
            for (i, at) in ready {
                self.end[i] = Some(at + plan.tasks()[i].estimate);
            }
        }
    }

    /// Puts build `i` into the earliest gap, at or after its release, where fewer than `jobs`
    /// builds run for its whole duration.
    fn place(&mut self, plan: &Plan, jobs: usize, i: usize, release: Duration) {
        let length = plan.tasks()[i].estimate;
        let mut candidates: Vec<Duration> = std::iter::once(release)
            .chain(self.busy.iter().map(|&(_, end)| end).filter(|&end| end > release))
            .collect();
        candidates.sort();
        let fits = |start: Duration| {
            let end = start + length;
            // The most builds running at once within [start, end) is reached at its start or
            // at a start of another build inside it.
            let points =
                std::iter::once(start).chain(self.busy.iter().map(|&(s, _)| s).filter(|&s| s > start && s < end));
            points.map(|t| self.busy.iter().filter(|&&(s, e)| s <= t && t < e).count()).max().unwrap_or(0) < jobs
        };
        let start = candidates.into_iter().find(|&t| fits(t)).expect("after the last build ends a slot is free");
        self.busy.push((start, start + length));
        self.end[i] = Some(start + length);
    }

    fn makespan(&self) -> Duration {
        self.end.iter().flatten().copied().max().unwrap_or_default()
    }
}

fn up(plan: &Plan) -> impl Iterator<Item = usize> + '_ {
    (0..plan.len()).filter(|&i| !plan.tasks()[i].is_teardown())
}

struct Search<'a> {
    plan: &'a Plan,
    jobs: usize,
    best: Duration,
}

impl Search<'_> {
    /// Tries each build whose dependencies are scheduled as the next one, depth first.
    fn extend(&mut self, partial: &mut Partial) {
        partial.settle(self.plan);
        // No schedule below this one ends before what is already scheduled.
        if partial.makespan() >= self.best {
            return;
        }
        let next: Vec<(usize, Duration)> = up(self.plan)
            .filter(|&i| partial.end[i].is_none() && self.plan.tasks()[i].kind == Kind::Build)
            .filter_map(|i| Some((i, partial.release(self.plan, i)?)))
            .collect();
        if next.is_empty() {
            self.best = self.best.min(partial.makespan());
            return;
        }
        for (i, release) in next {
            let mut branch = partial.clone();
            branch.place(self.plan, self.jobs, i, release);
            self.extend(&mut branch);
        }
    }
}

/// No schedule beats the critical path, nor the builds' work spread over the slots from the
/// earliest moment a build can start to the latest a build can end.
fn lower_bound(plan: &Plan, jobs: usize) -> Duration {
    let (_, critical) = plan.critical_path_estimate();
    let remaining = plan.remaining();
    let mut head = vec![Duration::ZERO; plan.len()];
    for &i in plan.topological() {
        head[i] = plan.deps(i).iter().map(|&d| head[d] + plan.tasks()[d].estimate).max().unwrap_or_default();
    }
    let builds: Vec<usize> = up(plan).filter(|&i| plan.tasks()[i].kind == Kind::Build).collect();
    let Some(first) = builds.iter().map(|&i| head[i]).min() else { return critical };
    let tail = builds.iter().map(|&i| remaining[i] - plan.tasks()[i].estimate).min().unwrap_or_default();
    let work: Duration = builds.iter().map(|&i| plan.tasks()[i].estimate).sum();
    critical.max(first + work / jobs as u32 + tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::plan::{Phase, Task};

    fn plan(spec: &[(&str, Kind, u64, &[&str])]) -> Plan {
        let tasks = spec.iter().map(|(id, kind, ms, deps)| {
            let mut task = Task::new(*id, Phase::Images, *kind).after(deps);
            task.estimate = Duration::from_millis(*ms);
            task
        });
        Plan::new(tasks.collect()).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_slot_runs_the_builds_one_after_another_in_the_best_order() {
        // a (build 100) then x (api 300); b (build 100) alone. b first: 100 + 100 + 300 = 500;
        // a first: the api task overlaps b: 100 + 300 = 400.
        let p = plan(&[("a", Kind::Build, 100, &[]), ("b", Kind::Build, 100, &[]), ("x", Kind::Api, 300, &["a"])]);
        assert_eq!(best(&p, 1), Best::Exact(ms(400)));
        assert_eq!(best(&p, 2), Best::Exact(ms(400)), "the critical path, with a slot each");
    }

    #[test]
    fn the_search_finds_the_known_optimum_of_small_graphs() {
        // Two slots, four builds of 3, 3, 2, 2 and a tail after the first: LPT-like packing
        // gives 5 for the builds; the tail of 4 after `long` makes the best 3 + 4 = 7.
        let p = plan(&[
            ("long", Kind::Build, 300, &[]),
            ("long2", Kind::Build, 300, &[]),
            ("short", Kind::Build, 200, &[]),
            ("short2", Kind::Build, 200, &[]),
            ("tail", Kind::Process, 400, &["long"]),
        ]);
        assert_eq!(best(&p, 2), Best::Exact(ms(700)));
        assert_eq!(best(&p, 1), Best::Exact(ms(1000)), "the builds' work, long first so the tail overlaps the rest");
        // A chain cannot be sped up by slots.
        let chain =
            plan(&[("a", Kind::Build, 100, &[]), ("b", Kind::Build, 100, &["a"]), ("c", Kind::Build, 100, &["b"])]);
        assert_eq!(best(&chain, 3), Best::Exact(ms(300)));
    }

    #[test]
    fn with_too_many_builds_it_is_a_bound_no_schedule_beats() {
        let spec: Vec<(String, Kind, u64, Vec<&str>)> =
            (0..12).map(|i| (format!("b{i}"), Kind::Build, 100, vec![])).collect();
        let spec: Vec<(&str, Kind, u64, &[&str])> =
            spec.iter().map(|(id, k, d, deps)| (id.as_str(), *k, *d, &deps[..])).collect();
        let p = plan(&spec);
        assert_eq!(best(&p, 3), Best::AtLeast(ms(400)), "1200 ms of builds over 3 slots");
        assert_eq!(best(&p, 12), Best::AtLeast(ms(100)), "the critical path");
    }
}
