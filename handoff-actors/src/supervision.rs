//! Supervision: a panic in an actor's handler becomes a typed failure for the caller and a
//! supervised restart for the actor, never an unwind through the `System`'s thread.
//!
//! actix's `Supervisor` restarts an actor only when it *stops*, and restarts the same
//! instance (it calls `Supervised::restarting`, then starts a fresh context over the same
//! mailbox and address). So a handler runs its body through [`guarded`]: a panic is caught,
//! logged, the actor is stopped, and its supervisor restarts it with its state kept.
//! Messages queued meanwhile stay in the mailbox and are handled after the restart.
//! Anything spawned on the actor's context (`ctx.spawn`, `ctx.run_later`) is dropped by
//! the restart: what must outlive one (a timer, a send that waits for room) runs as a
//! task of its own that messages the actor's address.
//!
//! User code an actor calls (a resource tracker, an allocator) runs through
//! [`catch_user_code`]: its panic is a failed call, and the actor is not stopped.

use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::prelude::*;
use handoff_core::panic_message;

/// A handler of an actor panicked; the actor was stopped and its supervisor restarts it
/// with its state kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {actor} panicked in a handler ({message}); it restarts with its state kept")]
pub struct Panicked {
    /// The actor, e.g. `"result store"`.
    pub actor: &'static str,
    /// The panic's message, or a placeholder when its payload is not a string.
    pub message: String,
}

/// User code that an actor calls (a resource tracker, an allocator) panicked. The actor
/// caught it at the call, took the call as failed and went on: it was not stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} panicked: {message}")]
pub(crate) struct UserCodePanicked {
    /// The user code, e.g. `"resource tracker"`.
    pub(crate) what: &'static str,
    /// The panic's message, or a placeholder when its payload is not a string.
    pub(crate) message: String,
}

/// Runs a call into user code from inside a handler, catching a panic.
///
/// Unlike [`guarded`], the actor is not stopped: the panic is logged and returned as
/// [`UserCodePanicked`] for the caller to turn into a failed call (a refusal, nothing
/// given back, no answer). For calls after which the actor's own state is consistent
/// whatever the user code did (it updates its state only once the call has returned).
pub(crate) fn catch_user_code<R>(
    what: &'static str,
    call: impl FnOnce() -> R,
) -> Result<R, UserCodePanicked> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|payload| {
        let message = panic_message(payload.as_ref());
        tracing::error!(what, panic = %message, "user code panicked; the call failed");
        UserCodePanicked { what, message }
    })
}

/// Asks an actor how many times its supervisor has restarted it.
#[derive(Debug, Message)]
#[rtype(result = "u32")]
pub struct CountRestarts;

/// For tests: makes the actor's handler panic (under [`guarded`], so the actor restarts
/// with its state kept). The reply is always the [`Panicked`] failure.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Panicked>")]
pub struct Crash;

/// Runs a handler's body, catching a panic.
///
/// On a panic it logs the actor and the panic's message, stops the actor (`ctx.stop()`)
/// so that its actix `Supervisor` restarts it with its state, and returns the typed
/// [`Panicked`] for the handler to turn into its reply (`.ok()` for an `Option`, a typed
/// error variant, or `()`). The state may have been left half-updated by the panicking
/// body; handlers keep their updates small enough that this is harmless.
///
/// The closure captures `self` while `ctx` is passed separately:
///
/// ```ignore
/// fn handle(&mut self, msg: GetLocal, ctx: &mut Self::Context) -> Option<Value> {
///     guarded("result store", ctx, || self.get(&msg.dag, &msg.id)).ok().flatten()
/// }
/// ```
pub(crate) fn guarded<C, R>(
    actor: &'static str,
    ctx: &mut C,
    body: impl FnOnce() -> R,
) -> Result<R, Panicked>
where
    C: ActorContext,
{
    catch_unwind(AssertUnwindSafe(body)).map_err(|payload| {
        let message = panic_message(payload.as_ref());
        tracing::error!(actor, panic = %message, "handler panicked; restarting the actor");
        ctx.stop();
        Panicked { actor, message }
    })
}

/// Like [`guarded`], for a body that needs the actor's context itself.
pub(crate) fn guarded_with<C, R>(
    actor: &'static str,
    ctx: &mut C,
    body: impl FnOnce(&mut C) -> R,
) -> Result<R, Panicked>
where
    C: ActorContext,
{
    match catch_unwind(AssertUnwindSafe(|| body(ctx))) {
        Ok(value) => Ok(value),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(actor, panic = %message, "handler panicked; stopping the actor");
            ctx.stop();
            Err(Panicked { actor, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        let from_str = catch_unwind(|| panic!("plain")).expect_err("panics");
        assert_eq!(panic_message(from_str.as_ref()), "plain");
        let from_string = catch_unwind(|| panic!("formatted {}", 42)).expect_err("panics");
        assert_eq!(panic_message(from_string.as_ref()), "formatted 42");
        let other = catch_unwind(|| std::panic::panic_any(7_u8)).expect_err("panics");
        assert_eq!(
            panic_message(other.as_ref()),
            "a panic with a non-string payload"
        );
    }
}
