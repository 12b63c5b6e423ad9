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
    /// Functions that were ready or running, unfinished, when the execution ended (a
    /// failure or a cancellation stopped them); none are counted as running after the end.
    pub stopped: usize,
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
            EventKind::Ended { ok } => {
                self.ended = Some(*ok);
                // Nothing runs after the end: what had not finished was stopped.
                self.stopped = self.active.len().saturating_sub(self.finished.len());
                let finished = &self.finished;
                self.active.retain(|f| finished.contains(f));
            }
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

    /// Functions not ready yet (after the end: never started).
    pub fn pending(&self) -> usize {
        self.total.saturating_sub(self.active.len() + self.stopped)
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
        if self.stopped > 0 {
            write!(f, ", {} stopped unfinished", self.stopped)?;
        }
        if self.missed > 0 {
            write!(f, ", {} events missed", self.missed)?;
        }
        Ok(())
    }
}

/// How often the bar's counts are redrawn while events keep it busy or none come.
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub const REFRESH: std::time::Duration = std::time::Duration::from_millis(200);

/// Draws a progress bar on standard error for an execution of `total` functions until
/// `events` ends: done out of total, the rate, and running / pending / failed, redrawn
/// every [`REFRESH`]. Returns the final tally. `events` is any stream of events: an
/// execution's [`EventStream`](crate::EventStream), or one you tee to log the events too.
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub async fn show<S>(events: S, total: usize) -> Tally
where
    S: futures::Stream<Item = Event>,
{
    let bar = indicatif::ProgressBar::new(total as u64).with_style(style());
    show_on(bar, events, total).await
}

/// [`show`] on a bar of your own (another draw target, a `MultiProgress`, …).
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub async fn show_on<S>(bar: indicatif::ProgressBar, events: S, total: usize) -> Tally
where
    S: futures::Stream<Item = Event>,
{
    use futures::StreamExt;

    let mut events = std::pin::pin!(events);
    let mut tally = Tally::new(total);
    bar.set_length(total as u64);
    bar.set_message(tally.to_string());
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                tally.observe(&event);
                bar.set_position(tally.done as u64);
                if matches!(
                    event.kind,
                    EventKind::Failed { .. } | EventKind::Lagged { .. } | EventKind::Ended { .. }
                ) {
                    bar.set_message(tally.to_string());
                }
            }
            // The counts are redrawn on a timer, whatever the event rate.
            _ = refresh.tick() => bar.set_message(tally.to_string()),
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

    #[test]
    fn nothing_runs_after_a_failed_end() {
        let f = |s: &str| FunctionId::new(s);
        let mut tally = Tally::new(4);
        for name in ["a", "b", "c"] {
            tally.observe(&event(EventKind::Ready { function: f(name) }));
        }
        tally.observe(&event(EventKind::Finished {
            function: f("a"),
            attempt: 1,
            node: NodeId::new("n"),
        }));
        assert_eq!(tally.running(), 2);
        tally.observe(&event(EventKind::Ended { ok: false }));
        assert_eq!((tally.running(), tally.stopped, tally.done), (0, 2, 1));
        assert_eq!(
            tally.to_string(),
            "0 running, 1 pending, 0 failed attempts, 2 stopped unfinished"
        );
    }

    /// The bar's counts are redrawn on a timer while no event comes: a function that
    /// became ready shows as running before anything finishes.
    #[cfg(feature = "progress")]
    #[tokio::test(start_paused = true)]
    async fn the_bar_redraws_its_counts_on_a_timer() {
        let (mut tx, rx) = futures::channel::mpsc::channel(8);
        let bar = indicatif::ProgressBar::hidden();
        let task = tokio::spawn(show_on(bar.clone(), rx, 3));
        futures::SinkExt::send(
            &mut tx,
            event(EventKind::Ready {
                function: FunctionId::new("a"),
            }),
        )
        .await
        .expect("send");
        tokio::time::sleep(REFRESH * 2).await;
        assert_eq!(bar.message(), "1 running, 2 pending, 0 failed attempts");
        drop(tx);
        let tally = task.await.expect("the bar's task");
        assert_eq!(tally.running(), 1);
    }
}
