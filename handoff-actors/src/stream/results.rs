//! The results of a stream, in push order: a reorder buffer over what the last stage
//! sends, bounded by the stream's window of items in flight.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use handoff_core::{FromValue, FunctionId, Value, ValueError};
use tokio::sync::{Semaphore, mpsc};

use super::{Item, ItemError};

/// What one pushed item became: the values of the stream's outputs (its sinks: the
/// inputs and regular functions no function takes).
#[derive(Debug, Clone)]
pub struct StreamOutput {
    seq: u64,
    sinks: Arc<[FunctionId]>,
    values: Vec<Value>,
}

impl StreamOutput {
    /// The item's number: the order it was pushed in, from 0.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The value of the first output (the only one, in a stream with one sink).
    pub fn value(&self) -> Option<&Value> {
        self.values.first()
    }

    /// The first output read as a `T`.
    pub fn get<T: FromValue>(&self) -> Result<T, StreamOutputError> {
        let value = self.value().ok_or(StreamOutputError::NoOutput)?;
        T::from_value(value.clone()).map_err(StreamOutputError::Value)
    }

    /// The value of output `id`.
    pub fn value_of(&self, id: &str) -> Option<&Value> {
        let position = self.sinks.iter().position(|s| s.as_str() == id)?;
        self.values.get(position)
    }

    /// Output `id` read as a `T`.
    pub fn get_of<T: FromValue>(&self, id: &str) -> Result<T, StreamOutputError> {
        let value = self
            .value_of(id)
            .ok_or_else(|| StreamOutputError::NotAnOutput {
                id: FunctionId::new(id),
            })?;
        T::from_value(value.clone()).map_err(StreamOutputError::Value)
    }

    /// Every output: `(sink id, value)`, in the DAG's order.
    pub fn values(&self) -> impl Iterator<Item = (&FunctionId, &Value)> {
        self.sinks.iter().zip(&self.values)
    }
}

/// Why an output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamOutputError {
    /// The stream has no output.
    #[error("the stream has no output")]
    NoOutput,
    /// The id is not one of the stream's outputs.
    #[error("`{id}` is not an output of the stream")]
    NotAnOutput {
        /// The id asked for.
        id: FunctionId,
    },
    /// The value is not of the type asked for.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// The results of a stream, one per pushed item, in push order: a [`Stream`] of
/// `Result<StreamOutput, ItemError>`. It ends after the last item once the stream is
/// stopped (or its handle dropped) and drained.
///
/// Items are let into the stream only while fewer than its window are pushed and not
/// yet read from here: a stream whose results are not read stops accepting pushes.
/// Dropping this closes the stream for pushes.
pub struct StreamResults {
    rx: mpsc::Receiver<Vec<Item>>,
    /// Items received ahead of their turn, at `seq - next`.
    pending: VecDeque<Option<Item>>,
    next: u64,
    window: Arc<Semaphore>,
    sinks: Arc<[FunctionId]>,
    sink_slots: Arc<[usize]>,
}

impl StreamResults {
    pub(crate) fn new(
        rx: mpsc::Receiver<Vec<Item>>,
        window: Arc<Semaphore>,
        sinks: Arc<[FunctionId]>,
        sink_slots: Arc<[usize]>,
    ) -> Self {
        StreamResults {
            rx,
            pending: VecDeque::new(),
            next: 0,
            window,
            sinks,
            sink_slots,
        }
    }

    fn place(&mut self, item: Item) {
        let Some(offset) = item.seq.checked_sub(self.next) else {
            return;
        };
        let offset = offset as usize;
        if self.pending.len() <= offset {
            self.pending.resize_with(offset + 1, || None);
        }
        self.pending[offset] = Some(item);
    }

    fn output(&self, item: Item) -> Result<StreamOutput, ItemError> {
        let row = item.row?;
        let values = self
            .sink_slots
            .iter()
            .map(|&slot| {
                row.get(slot)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| Value::new(()))
            })
            .collect();
        Ok(StreamOutput {
            seq: item.seq,
            sinks: Arc::clone(&self.sinks),
            values,
        })
    }
}

impl Stream for StreamResults {
    type Item = Result<StreamOutput, ItemError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(Some(_)) = this.pending.front()
                && let Some(Some(item)) = this.pending.pop_front()
            {
                this.next += 1;
                this.window.add_permits(1);
                return Poll::Ready(Some(this.output(item)));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(items)) => {
                    for item in items {
                        this.place(item);
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for StreamResults {
    fn drop(&mut self) {
        self.window.close();
    }
}

impl std::fmt::Debug for StreamResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResults")
            .field("next", &self.next)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}
