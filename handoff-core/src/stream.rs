//! Stream plans: a validated DAG laid out as a line of long-lived stages that many
//! items flow through.
//!
//! Each item is a *row*: one slot per input and per regular function. The row enters
//! with its input slots filled and visits the stages in the DAG's topological order;
//! each stage reads its arguments from the row (evaluating the inline functions it
//! needs on the way), writes its result into its own slot, and clears the slots no
//! later stage reads. The outputs are the slots of the *sinks*: inputs and regular
//! functions that no regular function consumes.

use serde::{Deserialize, Serialize};

use crate::dag::ValidatedDag;
use crate::function::FunctionKind;
use crate::ids::{DagId, FunctionId};

/// Why a DAG cannot be streamed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamPlanError {
    /// The DAG has no input (`Function::input`): nothing could be pushed into it.
    #[error("DAG `{dag}` has no stream input (`Function::input`), so nothing can be pushed")]
    NoInput {
        /// The DAG.
        dag: DagId,
    },
}

/// Where a stage reads one argument from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgSource {
    /// A slot of the row (an input's value or an earlier stage's result).
    Slot(usize),
    /// The result of the `n`-th inline evaluation of the stage.
    Inline(usize),
}

/// One inline function a stage evaluates before its own code, per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineEval {
    /// The inline function's index in the DAG.
    pub function: usize,
    /// Where each of its arguments comes from, in order.
    pub args: Vec<ArgSource>,
}

/// One stage: a regular function of the DAG. It travels to the node that runs a stage
/// worker placed elsewhere, so it is serializable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlan {
    /// The function's index in the DAG.
    pub function: usize,
    /// The inline functions it evaluates first, in order (each after those it takes).
    pub inline: Vec<InlineEval>,
    /// Where each of its arguments comes from, in order.
    pub args: Vec<ArgSource>,
    /// The slot its result is written to.
    pub slot: usize,
    /// The slots no later stage reads and no output needs: cleared after this stage.
    pub releases: Vec<usize>,
}

/// A validated DAG compiled for stream mode (see the module documentation).
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::{Dag, Function, StreamPlan};
/// let dag = Dag::new()
///     .with(Function::input("x"))
///     .with(Function::new("double", "double").arg("x"))
///     .with(Function::new("show", "show").arg("double"))
///     .validate()?;
/// let plan = StreamPlan::compile(&dag)?;
/// assert_eq!(plan.stages().len(), 2);
/// assert_eq!(plan.sinks().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamPlan {
    dag: ValidatedDag,
    slot_count: usize,
    inputs: Vec<(usize, usize)>,
    stages: Vec<StagePlan>,
    sinks: Vec<(usize, usize)>,
}

impl StreamPlan {
    /// Lays the DAG out as stages.
    pub fn compile(dag: &ValidatedDag) -> Result<StreamPlan, StreamPlanError> {
        let n = dag.len();
        let mut slots: Vec<Option<usize>> = vec![None; n];
        let mut slot_count = 0;
        for (i, f) in dag.functions().iter().enumerate() {
            if !f.is_inline() {
                slots[i] = Some(slot_count);
                slot_count += 1;
            }
        }
        let inputs: Vec<(usize, usize)> = (0..n)
            .filter(|&i| dag.function(i).is_input())
            .filter_map(|i| Some((i, slots[i]?)))
            .collect();
        if inputs.is_empty() {
            return Err(StreamPlanError::NoInput {
                dag: dag.id().clone(),
            });
        }
        let sinks: Vec<(usize, usize)> = (0..n)
            .filter(|&i| !dag.function(i).is_inline() && dag.dependents(i).is_empty())
            .filter_map(|i| Some((i, slots[i]?)))
            .collect();

        let regular: Vec<usize> = (0..n)
            .filter(|&i| dag.function(i).kind() == FunctionKind::Regular)
            .collect();
        // The last stage (by position) reading each slot.
        let mut last_reader: Vec<Option<usize>> = vec![None; slot_count];
        for (position, &i) in regular.iter().enumerate() {
            for &d in dag.deps(i) {
                if let Some(slot) = slots[d as usize] {
                    last_reader[slot] = Some(position);
                }
            }
        }
        let mut is_sink = vec![false; slot_count];
        for &(_, slot) in &sinks {
            is_sink[slot] = true;
        }
        let source = |a: usize, inline: &[InlineEval]| match slots[a] {
            Some(slot) => ArgSource::Slot(slot),
            None => ArgSource::Inline(
                inline
                    .iter()
                    .position(|e| e.function == a)
                    .unwrap_or(usize::MAX),
            ),
        };
        let mut stages = Vec::with_capacity(regular.len());
        for (position, &i) in regular.iter().enumerate() {
            // The inline functions reached through inline arguments, in DAG order (which
            // is topological, so each comes after the inline functions it takes).
            let mut needed: Vec<usize> = Vec::new();
            let mut stack: Vec<usize> = dag.args(i).iter().map(|&a| a as usize).collect();
            while let Some(a) = stack.pop() {
                if slots[a].is_none() && !needed.contains(&a) {
                    needed.push(a);
                    stack.extend(dag.args(a).iter().map(|&b| b as usize));
                }
            }
            needed.sort_unstable();
            let mut inline: Vec<InlineEval> = Vec::with_capacity(needed.len());
            for a in needed {
                let args = dag
                    .args(a)
                    .iter()
                    .map(|&b| source(b as usize, &inline))
                    .collect();
                inline.push(InlineEval { function: a, args });
            }
            let args = dag
                .args(i)
                .iter()
                .map(|&a| source(a as usize, &inline))
                .collect();
            let releases = (0..slot_count)
                .filter(|&s| last_reader[s] == Some(position) && !is_sink[s])
                .collect();
            stages.push(StagePlan {
                function: i,
                inline,
                args,
                slot: slots[i].unwrap_or(usize::MAX),
                releases,
            });
        }
        Ok(StreamPlan {
            dag: dag.clone(),
            slot_count,
            inputs,
            stages,
            sinks,
        })
    }

    /// The DAG.
    pub fn dag(&self) -> &ValidatedDag {
        &self.dag
    }

    /// The number of slots of a row.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// The inputs: `(function index, slot)`, in the DAG's order.
    pub fn inputs(&self) -> &[(usize, usize)] {
        &self.inputs
    }

    /// The ids of the inputs, in the DAG's order.
    pub fn input_ids(&self) -> Vec<FunctionId> {
        self.inputs
            .iter()
            .map(|&(i, _)| self.dag.function(i).id().clone())
            .collect()
    }

    /// The stages, in the order an item visits them.
    pub fn stages(&self) -> &[StagePlan] {
        &self.stages
    }

    /// The outputs: `(function index, slot)` of every sink, in the DAG's order.
    pub fn sinks(&self) -> &[(usize, usize)] {
        &self.sinks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::Dag;
    use crate::function::Function;

    #[test]
    fn a_dag_without_input_cannot_stream() {
        let dag = Dag::with_id("d")
            .with(Function::new("a", "c"))
            .validate()
            .expect("valid");
        assert_eq!(
            StreamPlan::compile(&dag).err(),
            Some(StreamPlanError::NoInput { dag: "d".into() })
        );
    }

    #[test]
    fn stages_read_slots_and_inline_results_and_release_what_is_done() {
        let dag = Dag::new()
            .with(Function::input("x"))
            .with(Function::new("half", "h").arg("x").inline())
            .with(Function::new("a", "c").arg("half").arg("x"))
            .with(Function::new("b", "c").arg("a"))
            .validate()
            .expect("valid");
        let plan = StreamPlan::compile(&dag).expect("plan");
        assert_eq!(plan.slot_count(), 3);
        assert_eq!(plan.inputs(), &[(0, 0)]);
        let a = &plan.stages()[0];
        assert_eq!(a.inline.len(), 1);
        assert_eq!(a.inline[0].args, vec![ArgSource::Slot(0)]);
        assert_eq!(a.args, vec![ArgSource::Inline(0), ArgSource::Slot(0)]);
        assert_eq!(a.releases, vec![0]);
        let b = &plan.stages()[1];
        assert_eq!(b.args, vec![ArgSource::Slot(1)]);
        assert_eq!(b.releases, vec![1]);
        assert_eq!(plan.sinks(), &[(3, 2)]);
    }

    #[test]
    fn an_unconsumed_input_is_an_output() {
        let dag = Dag::new()
            .with(Function::input("x"))
            .with(Function::input("y"))
            .with(Function::new("a", "c").arg("x"))
            .validate()
            .expect("valid");
        let plan = StreamPlan::compile(&dag).expect("plan");
        let sinks: Vec<&str> = plan
            .sinks()
            .iter()
            .map(|&(i, _)| dag.function(i).id().as_str())
            .collect();
        assert_eq!(sinks, vec!["y", "a"]);
    }
}
