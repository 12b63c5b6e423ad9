//! Progress of an execution, from its event stream: a [`Tally`] of done, running,
//! pending and failed functions, and (with the `progress` cargo feature) a live
//! terminal progress bar drawn with `indicatif`.
//!
//! ```no_run
//! # #[cfg(feature = "progress")]
//! # async fn watch(node: handoff::NodeHandle, dag: handoff::ValidatedDag) -> Result<(), handoff::ExecuteError> {
//! use handoff::ExecuteOptions;
//!
//! let total = dag.regular_len();
//! let mut handle = node.submit(dag, ExecuteOptions::default().events(1 << 16)).await?;
//! let events = handle.events().expect("asked for events");
//! let bar = actix::spawn(handoff::progress::show(events, total));
//! let done = handle.await?;
//! let tally = bar.await.expect("the bar's task");
//! println!("{} done, {} failed attempts", tally.done, tally.failed_attempts);
//! # Ok(()) }
//! ```

use std::collections::HashSet;

use crate::{Event, EventKind, FunctionId};

/// Where an execution stands, counted from its events.
///
/// A function is *pending* until it is ready (its dependencies finished) or starts,
/// *running* from then until it finishes (this includes waiting for a slot or for
/// resources), and *done* once it has finished. A consumer that fell behind misses
/// events ([`EventKind::Lagged`]); `missed` counts them, and the counts are then low
/// until the end.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// The execution's regular functions.
    pub total: usize,
    /// Functions finished.
    pub done: usize,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: usize,
    /// Events the consumer missed.
    pub missed: u64,
    /// `Some(ok)` once the execution has ended.
    pub ended: Option<bool>,
    active: HashSet<FunctionId>,
    finished: HashSet<FunctionId>,
}

impl Tally {
    /// Nothing seen yet, out of `total` functions.
    pub fn new(total: usize) -> Self {
        Tally {
            total,
            ..Tally::default()
        }
    }

    /// Counts one event.
    pub fn observe(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Ready { function } | EventKind::Started { function, .. } => {
                self.activate(function);
            }
            EventKind::Finished { function, .. } => {
                self.activate(function);
                if self.finished.insert(function.clone()) {
                    self.done += 1;
                }
            }
            // Its value was lost with a node: it runs again.
            EventKind::Recomputing { function, .. } if self.finished.remove(function) => {
                self.done -= 1;
            }
            EventKind::Failed { .. } => self.failed_attempts += 1,
            EventKind::Lagged { missed } => self.missed += missed,
            EventKind::Ended { ok } => self.ended = Some(*ok),
            _ => {}
        }
    }

    /// Marks a function ready or running (cloning its id only the first time).
    fn activate(&mut self, function: &FunctionId) {
        if !self.active.contains(function) {
            self.active.insert(function.clone());
        }
    }

    /// Functions ready or running, not finished.
    pub fn running(&self) -> usize {
        self.active.len().saturating_sub(self.finished.len())
    }

    /// Functions not ready yet.
    pub fn pending(&self) -> usize {
        self.total.saturating_sub(self.active.len())
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} running, {} pending, {} failed attempts",
            self.running(),
            self.pending(),
            self.failed_attempts
        )?;
        if self.missed > 0 {
            write!(f, ", {} events missed", self.missed)?;
        }
        Ok(())
    }
}

/// Draws a progress bar on standard error for an execution of `total` functions until
/// its event stream ends: done out of total, the rate, and running / pending / failed.
/// Returns the final tally.
#[cfg(feature = "progress")]
pub async fn show(events: crate::EventStream, total: usize) -> Tally {
    let bar = indicatif::ProgressBar::new(total as u64).with_style(style());
    show_on(bar, events, total).await
}

/// [`show`] on a bar of your own (another draw target, a `MultiProgress`, …).
#[cfg(feature = "progress")]
pub async fn show_on(
    bar: indicatif::ProgressBar,
    mut events: crate::EventStream,
    total: usize,
) -> Tally {
    use futures::StreamExt;

    let mut tally = Tally::new(total);
    bar.set_length(total as u64);
    while let Some(event) = events.next().await {
        tally.observe(&event);
        // The bar redraws at most a few times a second, whatever the event rate.
        bar.set_position(tally.done as u64);
        if matches!(
            event.kind,
            EventKind::Failed { .. } | EventKind::Lagged { .. } | EventKind::Ended { .. }
        ) || tally.done.is_multiple_of(256)
        {
            bar.set_message(tally.to_string());
        }
    }
    let outcome = match tally.ended {
        Some(true) => "done",
        Some(false) => "failed or cancelled",
        None => "stopped",
    };
    bar.abandon_with_message(format!("{outcome}: {tally}"));
    tally
}

#[cfg(feature = "progress")]
fn style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} done ({per_sec}) {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DagId, NodeId};

    fn event(kind: EventKind) -> Event {
        Event {
            at_micros: 0,
            dag: DagId::new("d"),
            kind,
        }
    }

    #[test]
    fn counts_follow_the_events() {
        let f = |s: &str| FunctionId::new(s);
        let node = NodeId::new("n");
        let mut tally = Tally::new(3);
        assert_eq!((tally.pending(), tally.running(), tally.done), (3, 0, 0));
        tally.observe(&event(EventKind::Ready { function: f("a") }));
        assert_eq!((tally.pending(), tally.running(), tally.done), (2, 1, 0));
        let failed = EventKind::Failed {
            function: f("a"),
            attempt: 1,
            node: node.clone(),
            error: handoff_core::CallError::TimedOut {
                code: "x".into(),
                after: std::time::Duration::from_secs(1),
            },
        };
        tally.observe(&event(failed));
        let finished = |function: &str| EventKind::Finished {
            function: f(function),
            attempt: 1,
            node: node.clone(),
        };
        tally.observe(&event(finished("a")));
        tally.observe(&event(finished("a")));
        // A chain successor is seen first when it finishes.
        tally.observe(&event(finished("b")));
        assert_eq!((tally.pending(), tally.running(), tally.done), (1, 0, 2));
        assert_eq!(tally.failed_attempts, 1);
        tally.observe(&event(EventKind::Lagged { missed: 5 }));
        tally.observe(&event(EventKind::Ended { ok: false }));
        assert_eq!(tally.ended, Some(false));
        assert_eq!(
            tally.to_string(),
            "0 running, 1 pending, 1 failed attempts, 5 events missed"
        );
    }
}
