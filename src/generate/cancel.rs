//! Cancelling a generation from another thread (a voice-activity detector on the audio thread).
//!
//! A [`CancelHandle`] is shared between the thread that generates and any thread that may stop it.
//! The generation checks it before every prefill chunk and every decode step, so a cancel lands
//! within one chunk of the prompt (`GenerateOptions::prefill_chunk` tokens) or one token of the
//! reply. A cancel only stops a generation that is running: one made while nothing runs does
//! nothing, so it never stops the next generation.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    prefilled: AtomicUsize,
    generated: AtomicUsize,
}

/// Stops a running generation from any thread; cheap to clone (all clones are the same handle).
/// One generation at a time uses a handle.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    inner: Arc<Inner>,
}

/// How far the current (or, once it ended, the last) generation of a handle got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Prompt tokens run through the model so far (the ones reused from a conversation's KV cache
    /// are not counted).
    pub prefilled: usize,
    /// Reply tokens sampled so far.
    pub generated: usize,
}

impl CancelHandle {
    /// A handle with no generation running.
    pub fn new() -> CancelHandle {
        CancelHandle::default()
    }

    /// Stops the generation that is running: it returns with [`super::FinishReason::Cancelled`]
    /// after at most the prefill chunk or the decode step in flight. Returns whether a generation
    /// was running (and had not been cancelled already); when none runs this does nothing.
    pub fn cancel(&self) -> bool {
        self.inner.state.compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether a generation is running on this handle now.
    pub fn is_running(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) != IDLE
    }

    /// How far the current or last generation got.
    pub fn progress(&self) -> Progress {
        Progress { prefilled: self.inner.prefilled.load(Ordering::Acquire), generated: self.inner.generated.load(Ordering::Acquire) }
    }

    /// Marks a generation as running until the returned guard is dropped.
    pub(crate) fn begin(&self) -> Running<'_> {
        self.inner.prefilled.store(0, Ordering::Release);
        self.inner.generated.store(0, Ordering::Release);
        self.inner.state.store(RUNNING, Ordering::Release);
        Running { handle: self }
    }
}

/// A generation in progress on a handle; dropping it (also on an error) makes the handle idle.
pub(crate) struct Running<'a> {
    handle: &'a CancelHandle,
}

impl Running<'_> {
    pub fn is_cancelled(&self) -> bool {
        self.handle.inner.state.load(Ordering::Acquire) == CANCELLED
    }

    pub fn prefilled(&self, n: usize) {
        self.handle.inner.prefilled.fetch_add(n, Ordering::AcqRel);
    }

    pub fn generated(&self) {
        self.handle.inner.generated.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.handle.inner.state.store(IDLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_while_idle_does_not_stop_the_next_generation() {
        let h = CancelHandle::new();
        assert!(!h.cancel(), "nothing runs");
        let run = h.begin();
        assert!(!run.is_cancelled(), "the earlier cancel is not carried over");
        assert!(h.cancel());
        assert!(!h.cancel(), "already cancelled");
        assert!(run.is_cancelled());
        drop(run);
        assert!(!h.is_running());
        assert!(!h.begin().is_cancelled());
    }
}
