//! The bounded queue in front of a stage: chunks of items on a channel, counted in
//! items by a semaphore, shared by the stage's workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard, Semaphore, mpsc};

use super::Item;

/// The queue was closed: the stage's workers are gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// A stage's input queue. Senders hold a permit per item from the moment they enqueue
/// it until a worker takes it out, so no more than `capacity` items ever wait in it.
pub(crate) struct Queue {
    rx: Mutex<Receiving>,
    permits: Semaphore,
    capacity: usize,
    depth: AtomicUsize,
    peak: AtomicUsize,
}

/// The receiving side, locked by the worker gathering its next batch.
pub(crate) struct Receiving {
    rx: mpsc::Receiver<Vec<Item>>,
    /// Items received from the channel and not yet taken by a worker (they still hold
    /// their permits).
    carry: Vec<Item>,
}

impl Queue {
    /// A queue holding at most `capacity` items (at least 1), and its sending side:
    /// the queue closes when every clone of the sender is gone and it is empty.
    pub(crate) fn new(capacity: usize) -> (Arc<Queue>, QueueSender) {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        // Every message holds at least one item, so the channel never fills before the
        // semaphore does.
        let (tx, rx) = mpsc::channel(capacity);
        let queue = Arc::new(Queue {
            rx: Mutex::new(Receiving {
                rx,
                carry: Vec::new(),
            }),
            permits: Semaphore::new(capacity),
            capacity,
            depth: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let sender = QueueSender {
            tx,
            queue: Arc::clone(&queue),
        };
        (queue, sender)
    }

    /// The most items it holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The items waiting in it now.
    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// The most items that ever waited in it at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Locks the receiving side: one worker gathers at a time.
    pub(crate) async fn lock(&self) -> MutexGuard<'_, Receiving> {
        self.rx.lock().await
    }

    /// Takes up to `n` items out of the carry, giving their permits back.
    pub(crate) fn take(&self, receiving: &mut Receiving, n: usize) -> Vec<Item> {
        let n = n.min(receiving.carry.len());
        let rest = receiving.carry.split_off(n);
        let taken = std::mem::replace(&mut receiving.carry, rest);
        if n > 0 {
            self.depth.fetch_sub(n, Ordering::Relaxed);
            self.permits.add_permits(n);
        }
        taken
    }
}

/// The sending side of a [`Queue`]; cheap to clone.
#[derive(Clone)]
pub(crate) struct QueueSender {
    tx: mpsc::Sender<Vec<Item>>,
    queue: Arc<Queue>,
}

impl QueueSender {
    /// Enqueues `items` if there is room for all of them now; otherwise gives them back
    /// (`Ok(Some(items))`), nothing enqueued.
    pub(crate) fn try_send(&self, items: Vec<Item>) -> Result<Option<Vec<Item>>, Closed> {
        let queue = &self.queue;
        let n = items.len();
        if n > queue.capacity {
            return Ok(Some(items));
        }
        let permit = match queue.permits.try_acquire_many(n as u32) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Ok(Some(items)),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Closed),
        };
        // The channel never fills before the semaphore does (see `new`).
        match self.tx.try_send(items) {
            Ok(()) => {
                permit.forget();
                let depth = queue.depth.fetch_add(n, Ordering::Relaxed) + n;
                queue.peak.fetch_max(depth, Ordering::Relaxed);
                Ok(None)
            }
            Err(mpsc::error::TrySendError::Full(items)) => Ok(Some(items)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Enqueues `items`, waiting for room (in pieces of at most `capacity` items).
    pub(crate) async fn send(&self, mut items: Vec<Item>) -> Result<(), Closed> {
        let queue = &self.queue;
        while !items.is_empty() {
            let rest = if items.len() > queue.capacity {
                items.split_off(queue.capacity)
            } else {
                Vec::new()
            };
            let n = items.len();
            let permit = queue
                .permits
                .acquire_many(n as u32)
                .await
                .map_err(|_| Closed)?;
            permit.forget();
            let depth = queue.depth.fetch_add(n, Ordering::Relaxed) + n;
            queue.peak.fetch_max(depth, Ordering::Relaxed);
            if self.tx.send(items).await.is_err() {
                return Err(Closed);
            }
            items = rest;
        }
        Ok(())
    }
}

impl Receiving {
    /// The items received and not yet taken.
    pub(crate) fn carried(&self) -> usize {
        self.carry.len()
    }

    /// Waits for the next chunk; `false` when every sender is gone and nothing is left.
    pub(crate) async fn receive(&mut self) -> bool {
        match self.rx.recv().await {
            Some(chunk) => {
                self.carry.extend(chunk);
                true
            }
            None => false,
        }
    }

    /// Moves every chunk already in the channel into the carry, up to `limit` items.
    pub(crate) fn receive_ready(&mut self, limit: usize) {
        while self.carry.len() < limit {
            match self.rx.try_recv() {
                Ok(chunk) => self.carry.extend(chunk),
                Err(_) => break,
            }
        }
    }
}
