//! Function executors: where user code runs.
//!
//! Calls run in *jobs* on the runtime's blocking thread pool, never on the actor
//! thread, so a blocking or CPU-heavy function cannot stall the node's actors. A job
//! holds one worker slot (or one resource reservation) and runs a batch of ready calls
//! back to back; after each successful call it runs the function's *chain successor*
//! (a dependent whose only dependency is that call, with the same cost and no
//! placement or timeout of its own) right away, on the same thread, instead of handing
//! the result back to the coordinator first. Outcomes go back to the coordinator in one
//! message per job.
//!
//! A job runs its first [`FREE_CALLS`] calls whatever they take (its first call only, on
//! a reservation); past them, once it has run for [`JOB_BUDGET`], it hands the calls of
//! its batch it has not started back to the coordinator (which queues them again), so
//! that a large batch of slow calls does not keep the rest of the batch off the other
//! slots or reservations.
//!
//! Not an actor per call: starting an actor costs microseconds and a message round
//! trip ~0.4 µs, while the budget for a trivial function is under 1 µs all included.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handoff_core::{CallError, Code, NO_NEXT, NodeId, ValidatedDag, Value};
use tokio::sync::mpsc;

use crate::events::now_micros;
use crate::run::RunEvent;

/// The calls of its batch a job runs whatever the time they take.
pub(crate) const FREE_CALLS: usize = 64;

/// How long a job runs calls of its batch past the first [`FREE_CALLS`] before it hands
/// the rest back (a chain successor still runs once its dependency has).
pub(crate) const JOB_BUDGET: Duration = Duration::from_micros(500);

/// What every job of one execution shares; immutable but for the cancel flag.
pub(crate) struct RunShared {
    pub(crate) dag: ValidatedDag,
    /// The code of each function, by index (`None` where only other nodes have it).
    pub(crate) codes: Vec<Option<Code>>,
    /// The chain successor of each function, or [`NO_NEXT`].
    pub(crate) chain_next: Vec<u32>,
    /// Set when the execution is cancelled or has failed.
    pub(crate) cancelled: Arc<AtomicBool>,
    /// Record when each call starts and ends (for events).
    pub(crate) timestamps: bool,
    /// The execution's `tracing` span (`dag`), parent of the attempts' spans.
    pub(crate) span: tracing::Span,
    /// Open a `tracing` span per attempt (decided once per execution: only when a
    /// subscriber listens at debug level, so the hot path pays nothing otherwise).
    pub(crate) attempt_spans: bool,
    pub(crate) events: mpsc::Sender<RunEvent>,
    /// The node's count of calls nobody waits for any more.
    pub(crate) abandoned: Arc<Abandoned>,
}

/// The calls running on a node's threads that nobody waits for any more (timed out, or
/// their execution cancelled or failed, their code not looking at `is_cancelled()`),
/// and how many may be before the node starts no new call. Each such thread is one the
/// runtime's blocking pool cannot use; without a bound they could take all of them and
/// the next execution would wait forever, silently.
#[derive(Debug)]
pub(crate) struct Abandoned {
    count: AtomicUsize,
    limit: usize,
}

/// A job's thread: still running, abandoned (counted in [`Abandoned`]) or returned.
pub(crate) struct JobLife(AtomicU8);

const RUNNING: u8 = 0;
const ABANDONED: u8 = 1;
const RETURNED: u8 = 2;

impl Abandoned {
    pub(crate) fn new(limit: usize) -> Self {
        Abandoned {
            count: AtomicUsize::new(0),
            limit: limit.max(1),
        }
    }

    /// The reason no new call may start here, if the bound is reached.
    pub(crate) fn full(&self) -> Option<String> {
        let count = self.count.load(Ordering::Relaxed);
        (count >= self.limit).then(|| {
            format!(
                "{count} calls that timed out or were cancelled are still running on this node's threads (the limit is {}); no new call starts here until they return",
                self.limit
            )
        })
    }

    /// Counts the job as abandoned, unless its thread has returned already (once).
    pub(crate) fn abandon(&self, life: &JobLife) {
        if life
            .0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The job's thread returned: it no longer counts.
    fn returned(&self, life: &JobLife) {
        if life.0.swap(RETURNED, Ordering::AcqRel) == ABANDONED {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl JobLife {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(JobLife(AtomicU8::new(RUNNING)))
    }
}

/// One call to run: a function, its attempt number and the values of its dependencies
/// (aligned with `dag.deps(index)`).
pub(crate) struct Call {
    pub(crate) index: u32,
    pub(crate) attempt: u32,
    pub(crate) deps: Vec<Value>,
}

/// What a job holds while it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hold {
    /// One of the execution's worker slots (functions without a cost).
    Slot,
    /// A reservation granted by the resource manager.
    Reservation(crate::resource_manager::GrantId),
}

/// A batch of calls run back to back on one thread.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) calls: Vec<Call>,
    pub(crate) node: NodeId,
    /// Set when this job's attempt timed out.
    pub(crate) token: Arc<AtomicBool>,
    /// Whether its thread is running, abandoned or returned.
    pub(crate) life: Arc<JobLife>,
    /// The calls of its batch it runs whatever the time they take: [`FREE_CALLS`] in a
    /// slot, 1 on a reservation (whose waiting calls other reservations may take).
    pub(crate) free_calls: usize,
}

/// The outcome of one attempt.
pub(crate) struct Outcome {
    pub(crate) index: u32,
    pub(crate) attempt: u32,
    pub(crate) started_micros: u64,
    pub(crate) finished_micros: u64,
    /// The value, or `None` when it stays on the (remote) node that ran it.
    pub(crate) result: Result<Option<Value>, CallError>,
    /// The size of the value's MessagePack form when known (values made elsewhere), else 0.
    pub(crate) size: u64,
}

/// What a job reports when it ends.
pub(crate) struct JobReport {
    pub(crate) job: u64,
    pub(crate) outcomes: Vec<Outcome>,
    /// Calls of the batch that were not started: the job stops at the first failure
    /// (or when the execution is cancelled) and hands the rest back.
    pub(crate) unrun: Vec<u32>,
    /// Calls of the batch handed back unstarted because the job ran past
    /// [`JOB_BUDGET`]: still scheduled, they only wait for a slot again.
    pub(crate) returned: Vec<u32>,
    pub(crate) node: NodeId,
}

/// Tells user code whether its call should stop: the execution was cancelled, or the
/// attempt ran past its timeout. Cooperative: Handoff cannot stop a running thread.
///
/// ```
/// # mod handoff { pub use handoff_actors::*; pub use handoff_core::*; }
/// use handoff::CancellationToken;
/// // Outside a call there is no token.
/// assert!(CancellationToken::current().is_none());
/// assert!(!handoff::is_cancelled());
/// ```
#[derive(Debug, Clone)]
pub struct CancellationToken {
    pub(crate) run: Arc<AtomicBool>,
    pub(crate) attempt: Arc<AtomicBool>,
}

impl CancellationToken {
    /// The token of the call running on this thread, if any.
    pub fn current() -> Option<CancellationToken> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// True once the call should stop.
    pub fn is_cancelled(&self) -> bool {
        self.run.load(Ordering::Relaxed) || self.attempt.load(Ordering::Relaxed)
    }
}

thread_local! {
    pub(crate) static CURRENT: RefCell<Option<CancellationToken>> = const { RefCell::new(None) };
}

/// True when the call running on this thread should stop (see [`CancellationToken`]).
pub fn is_cancelled() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    })
}

/// Clears the thread's token when the job ends, even if it unwinds.
pub(crate) struct TokenScope;

impl Drop for TokenScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl RunShared {
    /// Starts a job on the blocking pool.
    pub(crate) fn spawn(self: &Arc<Self>, job: Job) {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || shared.run(job));
    }

    fn stopped(&self, token: &AtomicBool) -> bool {
        self.cancelled.load(Ordering::Relaxed) || token.load(Ordering::Relaxed)
    }

    fn run(&self, job: Job) {
        let Job {
            id,
            calls,
            node,
            token,
            life,
            free_calls,
        } = job;
        // However the job ends (a panic included), its thread no longer counts.
        struct Returned<'a>(&'a Abandoned, Arc<JobLife>);
        impl Drop for Returned<'_> {
            fn drop(&mut self) {
                self.0.returned(&self.1);
            }
        }
        let _returned = Returned(&self.abandoned, life);
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(CancellationToken {
                run: Arc::clone(&self.cancelled),
                attempt: Arc::clone(&token),
            })
        });
        let scope = TokenScope;
        let mut outcomes = Vec::with_capacity(calls.len());
        let batch = calls.len();
        let mut calls = calls.into_iter();
        let mut next: Option<Call> = None;
        // Only a batch longer than the free calls can run out of time.
        let free_calls = free_calls.max(1);
        let started = (batch > free_calls).then(Instant::now);
        let mut over_budget = false;
        loop {
            if self.stopped(&token) {
                break;
            }
            let call = match next.take() {
                Some(call) => call,
                None => {
                    // Past the free calls, the clock is read before each call of the batch.
                    if let Some(started) = started
                        && batch - calls.len() >= free_calls
                        && !calls.as_slice().is_empty()
                        && started.elapsed() >= JOB_BUDGET
                    {
                        over_budget = true;
                        break;
                    }
                    let Some(call) = calls.next() else {
                        break;
                    };
                    call
                }
            };
            let (index, attempt) = (call.index, call.attempt);
            let started_micros = if self.timestamps { now_micros() } else { 0 };
            let result = if self.attempt_spans {
                let span = tracing::debug_span!(
                    parent: &self.span,
                    "attempt",
                    dag = %self.dag.id(),
                    function = %self.dag.function(index as usize).id(),
                    attempt,
                    node = %node,
                );
                span.in_scope(|| self.call(call))
            } else {
                self.call(call)
            };
            let finished_micros = if self.timestamps { now_micros() } else { 0 };
            let failed = result.is_err();
            if let Ok(value) = &result {
                let successor = self.chain_next[index as usize];
                if successor != NO_NEXT {
                    next = Some(Call {
                        index: successor,
                        attempt: 1,
                        deps: vec![value.clone()],
                    });
                }
            }
            outcomes.push(Outcome {
                index,
                attempt,
                started_micros,
                finished_micros,
                result: result.map(Some),
                size: 0,
            });
            if failed {
                break;
            }
        }
        drop(scope);
        // A chain successor not yet started was never dispatched by the coordinator,
        // so it is handed back like the rest of the batch. Out of time, the job had no
        // chain successor left to run: the rest of the batch only waits for a slot again.
        let (unrun, returned) = if over_budget {
            (Vec::new(), calls.map(|c| c.index).collect())
        } else {
            let unrun = next.into_iter().chain(calls).map(|c| c.index).collect();
            (unrun, Vec::new())
        };
        let report = JobReport {
            job: id,
            outcomes,
            unrun,
            returned,
            node,
        };
        if self
            .events
            .blocking_send(RunEvent::Finished(report))
            .is_err()
        {
            // The coordinator has gone: it was cancelled, or the attempt timed out and
            // the execution ended without waiting for this thread.
            tracing::debug!(dag = %self.dag.id(), job = id, "a job ended after its execution");
        }
    }

    /// Evaluates one function: resolves its arguments (evaluating inline functions in
    /// place) and calls its code.
    fn call(&self, call: Call) -> Result<Value, CallError> {
        let index = call.index as usize;
        let deps = self.dag.deps(index);
        if self.dag.args(index) == deps {
            // Its arguments are its dependencies, each once and in order (none inline):
            // the call's values are the arguments as they are, no clone of each.
            return self.invoke(index, call.deps);
        }
        let mut done = Vec::new();
        self.eval(index, deps, &call.deps, &mut done)
    }

    /// Evaluates function `index` with its inline arguments, each inline function once
    /// (`done` holds those evaluated): diamonds of inline functions cost one call per
    /// function, not one per path.
    fn eval(
        &self,
        index: usize,
        deps: &[u32],
        values: &[Value],
        done: &mut Vec<(u32, Value)>,
    ) -> Result<Value, CallError> {
        let args = self.dag.args(index);
        let mut resolved = Vec::with_capacity(args.len());
        for &arg in args {
            let value = if self.dag.function(arg as usize).is_inline() {
                match done.iter().find(|(i, _)| *i == arg) {
                    Some((_, value)) => value.clone(),
                    None => {
                        let value = self.eval(arg as usize, deps, values, done)?;
                        done.push((arg, value.clone()));
                        value
                    }
                }
            } else {
                match deps.binary_search(&arg) {
                    Ok(pos) => values[pos].clone(),
                    Err(_) => unreachable!("a regular argument is always an effective dependency"),
                }
            };
            resolved.push(value);
        }
        self.invoke(index, resolved)
    }

    /// Calls function `index`'s code with its resolved arguments.
    fn invoke(&self, index: usize, resolved: Vec<Value>) -> Result<Value, CallError> {
        let function = self.dag.function(index);
        let params = function.parameters(resolved);
        match &self.codes[index] {
            Some(code) => code.call(params),
            // Only functions whose code this node has are run here.
            None => Err(CallError::UnknownCode {
                code: function.code().clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use handoff_core::{Dag, Function, Registry};

    use super::*;

    /// `n` independent functions, each sleeping `micros`, and what a job needs to run them.
    fn setup(n: usize, micros: u64) -> (Arc<RunShared>, mpsc::Receiver<RunEvent>) {
        let mut registry = Registry::new();
        registry
            .register("nap", move || {
                std::thread::sleep(Duration::from_micros(micros));
                1_i64
            })
            .expect("register");
        let mut dag = Dag::new();
        for i in 0..n {
            dag.add_function(Function::new(format!("f{i}"), "nap"));
        }
        let dag = dag.validate().expect("valid");
        let codes = dag
            .functions()
            .iter()
            .map(|f| registry.get(f.code().as_str()).ok().cloned())
            .collect();
        let (events, rx) = mpsc::channel(4);
        let shared = RunShared {
            chain_next: vec![NO_NEXT; dag.len()],
            codes,
            dag,
            cancelled: Arc::new(AtomicBool::new(false)),
            timestamps: false,
            span: tracing::Span::none(),
            attempt_spans: false,
            events,
            abandoned: Arc::new(Abandoned::new(1)),
        };
        (Arc::new(shared), rx)
    }

    fn job(n: usize) -> Job {
        let calls = (0..n as u32)
            .map(|index| Call {
                index,
                attempt: 1,
                deps: Vec::new(),
            })
            .collect();
        Job {
            id: 7,
            calls,
            node: NodeId::new("here"),
            token: Arc::new(AtomicBool::new(false)),
            life: JobLife::new(),
            free_calls: FREE_CALLS,
        }
    }

    fn report(rx: &mut mpsc::Receiver<RunEvent>) -> JobReport {
        match rx.try_recv() {
            Ok(RunEvent::Finished(report)) => report,
            _ => panic!("the job reported"),
        }
    }

    #[test]
    fn a_job_past_its_budget_hands_back_the_calls_it_has_not_started() {
        // 64 calls of 1 ms each take longer than the budget: the 65th is not started.
        assert!(Duration::from_millis(FREE_CALLS as u64) > JOB_BUDGET);
        let n = FREE_CALLS + 10;
        let (shared, mut rx) = setup(n, 1000);
        shared.run(job(n));
        let report = report(&mut rx);
        assert_eq!(report.job, 7);
        assert_eq!(report.outcomes.len(), FREE_CALLS);
        assert!(report.outcomes.iter().all(|o| o.result.is_ok()));
        let expected: Vec<u32> = (FREE_CALLS as u32..n as u32).collect();
        assert_eq!(report.returned, expected);
        assert!(report.unrun.is_empty());
    }

    #[test]
    fn a_job_within_its_free_calls_runs_them_all() {
        let (shared, mut rx) = setup(FREE_CALLS, 1000);
        shared.run(job(FREE_CALLS));
        let report = report(&mut rx);
        assert_eq!(report.outcomes.len(), FREE_CALLS);
        assert!(report.returned.is_empty());
        assert!(report.unrun.is_empty());
    }
}
