//! The runtime's learning worker: in `update_mode: "background"` the updates that feedback makes
//! due run on this thread, so that a feedback call returns at once. One thread serves every
//! session of the runtime, one update at a time, from a bounded queue; a session has at most one
//! update queued or running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::learn::{Learner, UpdateReport};

/// Where the updates that feedback makes due run (`update_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateMode {
    /// Inside the feedback call that completes a batch, on the caller's thread (its report comes
    /// back with the feedback).
    #[default]
    Sync,
    /// On the runtime's learning thread: feedback returns at once, the session generates with the
    /// adapter it had until the update lands (between two calls), and `flush` waits for it.
    Background,
}

/// Updates waiting or running at most, over all sessions of a runtime; a session whose update
/// finds the queue full keeps its rewards and tries again at its next feedback.
pub const UPDATE_QUEUE: usize = 16;

/// What a finished update sends back: the learner and the update's result.
pub(crate) type Landed = (Learner, Result<UpdateReport>);

/// One session's update: its learner, and where to send it back.
pub(crate) struct Job {
    learner: Learner,
    reply: SyncSender<Landed>,
}

/// The learning thread and its queue.
pub(crate) struct Worker {
    jobs: Mutex<Sender<Job>>,
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("queued", &self.queued.load(Ordering::Relaxed)).finish()
    }
}

impl Worker {
    /// Starts the thread; it ends when the runtime (the queue's sender) is dropped.
    pub fn start() -> Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("attune-learner".into())
            .spawn(move || run(rx, &count))
            .map_err(|e| Error::Learning(format!("could not start the learning thread: {e}")))?;
        Ok(Worker { jobs: Mutex::new(tx), queued })
    }

    /// Queues an update of `learner`; the receiver gets it back with the result. When the queue
    /// is full (or the thread is gone) the learner comes back at once as the error.
    pub fn submit(&self, learner: Learner) -> std::result::Result<Receiver<Landed>, Box<Learner>> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= UPDATE_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Box::new(learner));
        }
        let (reply, done) = mpsc::sync_channel(1);
        let sent = self.jobs.lock().unwrap_or_else(PoisonError::into_inner).send(Job { learner, reply });
        match sent {
            Ok(()) => Ok(done),
            Err(mpsc::SendError(job)) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Err(Box::new(job.learner))
            }
        }
    }
}

fn run(rx: Receiver<Job>, queued: &AtomicUsize) {
    for job in rx {
        let mut learner = job.learner;
        let result = update_guarded(&mut learner);
        queued.fetch_sub(1, Ordering::AcqRel);
        // A session dropped meanwhile no longer listens; its learner is dropped here.
        let _ = job.reply.send((learner, result));
    }
}

/// Runs `learner`'s update. A panic in it must not end the thread that serves every session, nor
/// hand back a half-stepped learner (whose step may have skipped the guards): the learner goes
/// back to its state from before the update (its last good adapter, with the episodes and their
/// rewards waiting again), and the update is an error.
fn update_guarded(learner: &mut Learner) -> Result<UpdateReport> {
    let before = learner.checkpoint();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| learner.update())) {
        Ok(result) => result,
        Err(_) => {
            learner.rewind(before);
            Err(Error::Learning(
                "the background update panicked; the session keeps the adapter it had before, and the rewards wait for the next update".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use half::f16;
    use ndarray::{ArrayView2, ArrayViewMut2};

    use super::*;
    use crate::adapter::{AdamParams, AdamState, AdapterMath, BaseStats, CpuMath, GradEpisode, GradStats, HeadGrad, LoraHead, TokenEval};
    use crate::generate::{RecordedSampling, TokenRecord};
    use crate::learn::{LearnerConfig, Reward, UpdateOutcome};

    /// The CPU math, except that its Adam step (once armed) changes the adapter and then panics:
    /// the learner it leaves is half-stepped.
    struct PanicsMidStep {
        inner: CpuMath,
        armed: bool,
    }

    impl AdapterMath for PanicsMidStep {
        fn add_delta(&self, head: &LoraHead, hidden: &[f32], logits: &mut [f32]) -> Result<()> {
            self.inner.add_delta(head, hidden, logits)
        }
        fn add_delta_batch(&self, head: &LoraHead, hidden: ArrayView2<f32>, logits: ArrayViewMut2<f32>) -> Result<()> {
            self.inner.add_delta_batch(head, hidden, logits)
        }
        fn evaluate(&mut self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) -> Result<()> {
            self.inner.evaluate(head, tokens, base, out)
        }
        fn step_kl(&mut self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
            self.inner.step_kl(old, new, tokens, base)
        }
        fn gradient(&mut self, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad) -> Result<GradStats> {
            self.inner.gradient(head, batch, grad)
        }
        fn adam_step(&mut self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, params: &AdamParams) -> Result<()> {
            self.inner.adam_step(head, adam, grad, params)?;
            if self.armed {
                panic!("injected panic in the middle of an update");
            }
            Ok(())
        }
    }

    const D: usize = 8;
    const V: usize = 16;

    /// A learner of a tiny made-up model with three rewarded episodes waiting.
    fn learner(armed: bool) -> Learner {
        let config = LearnerConfig { auto_update_after: 0, ..LearnerConfig::default() };
        let mut l = Learner::new(config, D, V).unwrap().with_math(Box::new(PanicsMidStep { inner: CpuMath::new(), armed }));
        let lp = (1.0f32 / V as f32).ln();
        for (i, up) in [true, false, true].into_iter().enumerate() {
            let recs = (0..4)
                .map(|t| TokenRecord {
                    token: ((i * 5 + t) % V) as u32,
                    hidden: (0..D).map(|j| ((i + t + j) as f32 * 0.37).sin()).collect(),
                    base_logprobs: vec![f16::from_f32(lp); V],
                    behaviour_logprob: lp,
                    kept: None,
                })
                .collect();
            let id = l.record_episode(vec![1, 2], recs, RecordedSampling::at(1.0)).unwrap();
            l.give_feedback(id, &Reward::thumbs(up)).unwrap();
        }
        l
    }

    /// A panic inside a background update leaves the learner on its adapter from before the update,
    /// with the episodes and their rewards waiting again, and the worker goes on serving.
    #[test]
    fn a_panicking_update_hands_back_the_last_good_learner() {
        let worker = Worker::start().unwrap();
        let l = learner(true);
        let (adapter_before, ready_before, counters_before) = (l.adapter().clone(), l.episodes.ready_count(), l.counters());
        assert_eq!(ready_before, 3);
        let (mut back, result) = worker.submit(l).unwrap().recv().unwrap();
        let e = result.unwrap_err();
        assert!(matches!(&e, Error::Learning(m) if m.contains("panicked")), "{e}");
        assert_eq!(back.adapter(), &adapter_before, "the half-stepped adapter was handed back");
        assert_eq!(back.episodes.ready_count(), ready_before, "the episodes' rewards were lost");
        assert_eq!(back.counters(), counters_before);

        // The same learner, no longer panicking, learns from those episodes on the same thread.
        back.policy.math = Box::new(PanicsMidStep { inner: CpuMath::new(), armed: false });
        let (back, result) = worker.submit(back).unwrap().recv().unwrap();
        let report = result.unwrap();
        assert!(matches!(report.outcome, UpdateOutcome::Accepted | UpdateOutcome::RolledBack(_)), "{:?}", report.outcome);
        assert_ne!(back.adapter(), &adapter_before, "the update applied a step");
        assert_eq!(back.episodes.ready_count(), 0);
        assert_eq!(back.counters().updates, counters_before.updates + 1);

        // Without the rewind, the same panic hands back a changed adapter: the test sees the bug.
        let mut l = learner(true);
        let before = l.adapter().clone();
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.update())).is_err());
        assert_ne!(l.adapter(), &before);
    }
}
