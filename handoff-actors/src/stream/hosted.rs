//! Stage workers that another node's stream placed here: opened by the first batch that
//! names them (their init code runs then, once), kept with their state between batches,
//! dropped when the stream closes them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::Addr;
use handoff_core::{CallError, CodeKind, NodeId, Registry, Resources, State};

use super::worker::Compute;
use super::{
    Item, NEXT_REQUESTER, StartStreamError, expected_kind, given, release, resolve, run_init,
};
use crate::remote::{StageAnswer, StageItem, StageSpec, reserve_here};
use crate::resource_manager::{GrantId, RequesterId, ResourceManager};

/// One stage worker run here for another node's stream: the stage's codes, resolved in
/// this node's registry, and the worker's state.
pub struct HostedStage {
    compute: Arc<Compute>,
    state: Option<State>,
    /// The stage's cost, reserved on this node's own tracker while the worker is open.
    grant: Option<(Addr<ResourceManager>, GrantId)>,
}

impl Drop for HostedStage {
    fn drop(&mut self) {
        if let Some((manager, grant)) = self.grant.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { release(&manager, vec![grant]).await });
        }
    }
}

impl std::fmt::Debug for HostedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedStage")
            .field("function", self.compute.function.id())
            .field("stateful", &self.state.is_some())
            .finish()
    }
}

/// A stream error as the call error a remote worker answers with.
fn call_error(error: StartStreamError, spec: &StageSpec) -> CallError {
    match error {
        StartStreamError::UnknownCode { code, .. } => CallError::UnknownCode { code },
        other => CallError::Failed {
            code: spec.function.code().clone(),
            message: other.to_string(),
        },
    }
}

impl HostedStage {
    /// Resolves the stage's codes in `registry`, reserves the stage's cost on this node
    /// (waiting while it is held by others) and runs its init code (on the blocking pool),
    /// as a stream does for each of its local workers.
    pub(crate) async fn open(
        registry: &Registry,
        manager: &Addr<ResourceManager>,
        local: &NodeId,
        spec: &StageSpec,
    ) -> Result<Self, CallError> {
        let f = &spec.function;
        let batch = f.batching().is_some();
        let kind = expected_kind(f.init_code().is_some(), batch);
        let code = resolve(registry, f, f.code(), kind, given(f, batch))
            .map_err(|e| call_error(e, spec))?;
        let mut inline = Vec::with_capacity(spec.inline.len());
        for g in &spec.inline {
            let resolved = resolve(registry, g, g.code(), CodeKind::Plain, given(g, false))
                .map_err(|e| call_error(e, spec))?;
            inline.push((g.clone(), resolved));
        }
        let grant = match f.cost().filter(|c| **c != Resources::new()) {
            Some(cost) => {
                let requester = RequesterId(NEXT_REQUESTER.fetch_add(1, Ordering::Relaxed));
                Some(reserve_here(manager, requester, local, f, cost.clone(), 0).await?)
            }
            None => None,
        };
        // Given back if the init fails.
        let mut opened = HostedStage {
            compute: Arc::new(Compute {
                plan: spec.plan.clone(),
                function: spec.function.clone(),
                code,
                inline,
            }),
            state: None,
            grant: grant.map(|g| (manager.clone(), g)),
        };
        opened.state = match opened.compute.function.init_code() {
            Some(init) => {
                let init = resolve(registry, &spec.function, init, CodeKind::Init, 0)
                    .map_err(|e| call_error(e, spec))?;
                Some(run_init(init).await?)
            }
            None => None,
        };
        Ok(opened)
    }

    /// Runs the stage on `items` (on the blocking pool, with the worker's state) and
    /// answers for each, in order.
    pub async fn run(&mut self, items: Vec<StageItem>) -> Vec<StageAnswer> {
        if items.is_empty() {
            return Vec::new();
        }
        let compute = Arc::clone(&self.compute);
        let mut state = self.state.take();
        let count = items.len();
        let items: Vec<Item> = items
            .into_iter()
            .map(|item| Item {
                seq: item.seq,
                row: Ok(item.row),
            })
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            let items = compute.run(items, state.as_mut());
            (items, state)
        })
        .await;
        let slot = self.compute.plan.slot;
        match joined {
            Ok((items, state)) => {
                self.state = state;
                items
                    .into_iter()
                    .map(|item| match item.row {
                        Ok(mut row) => match row.get_mut(slot).and_then(Option::take) {
                            Some(value) => StageAnswer::Done(value),
                            None => StageAnswer::Failed {
                                function: self.compute.function.id().clone(),
                                error: CallError::Failed {
                                    code: self.compute.code.name().clone(),
                                    message: "the stage left no result in the item's row"
                                        .to_owned(),
                                },
                            },
                        },
                        Err(error) => StageAnswer::Failed {
                            function: error.function,
                            error: error.error,
                        },
                    })
                    .collect()
            }
            // Calls are guarded, so this is the runtime shutting down: every item still
            // gets an answer; the state is lost.
            Err(error) => (0..count)
                .map(|_| StageAnswer::Failed {
                    function: self.compute.function.id().clone(),
                    error: CallError::Panicked {
                        code: self.compute.code.name().clone(),
                        message: error.to_string(),
                    },
                })
                .collect(),
        }
    }
}
