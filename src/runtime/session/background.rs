//! A session's side of background learning (`update_mode: "background"`).
//!
//! When feedback makes an update due, the session's learner goes to the runtime's learning thread
//! and a stand-in takes its place: a copy of the adapter, with the same episode-id counter, that
//! generation uses and that records the new replies (and demonstrations). Feedback given meanwhile
//! is kept in order. When the update is back, between two calls, the learner returns with its new
//! adapter, takes over the episodes the stand-in recorded (marked as sampled by the adapter before
//! the update, so they are learned through the importance ratio) and then the feedback, exactly as
//! if it had come after the update; the next due update starts. `flush` waits for all of it.

use std::sync::mpsc::{Receiver, TryRecvError};

use super::UserSession;
use crate::error::{Error, Result};
use crate::learn::{FeedbackOutcome, Learner, Reward, SkipReason, UpdateOutcome, UpdateReport};
use crate::runtime::worker::Landed;

/// An update on the learning thread.
pub(super) struct InFlight {
    done: Receiver<Landed>,
    /// The adapter version the stand-in generates with (the learner's when it left).
    version: u64,
    /// The first episode id the stand-in issued.
    first_new_id: u64,
    /// Feedback given while the update ran, in order.
    feedback: Vec<(u64, Reward)>,
}

/// Closing a session waits for its running update, so that the episodes recorded meanwhile and
/// the held feedback are written with the user's pending episodes.
impl Drop for UserSession {
    fn drop(&mut self) {
        self.settle();
    }
}

impl UserSession {
    /// Whether updates run on the runtime's learning thread.
    pub(super) fn background(&self) -> bool {
        self.runtime.worker.is_some()
    }

    /// Whether enough rewards wait for an automatic update (`auto_update_after`).
    pub(super) fn update_due(&self) -> bool {
        let after = self.learner.config().auto_update_after;
        after > 0 && self.learner.episodes.ready_count() >= after
    }

    /// Gives feedback to the learner without letting it run the update itself.
    pub(super) fn give_queued(&mut self, id: u64, reward: &Reward) -> Result<FeedbackOutcome> {
        let reward = self.resolve(id, reward)?;
        let after = std::mem::replace(&mut self.learner.config.auto_update_after, 0);
        let out = self.learner.give_feedback(id, &reward);
        self.learner.config.auto_update_after = after;
        out
    }

    /// Feedback in background mode: recorded now, or kept for when the running update lands; an
    /// update that it makes due starts on the learning thread. Returns at once.
    pub(super) fn feedback_background(&mut self, id: u64, reward: &Reward) -> Result<FeedbackOutcome> {
        self.land(false);
        if let Some(f) = &mut self.in_flight {
            // A reply recorded during the update is checked now; older ones when it lands.
            if id >= f.first_new_id {
                self.learner.episode(id)?;
            }
            f.feedback.push((id, reward.clone()));
            return Ok(FeedbackOutcome::Queued);
        }
        let out = self.give_queued(id, reward)?;
        self.persist_pending();
        if self.update_due() {
            self.launch()?;
        }
        Ok(out)
    }

    /// Sends the learner to the learning thread and generates with a stand-in until it is back.
    pub(super) fn launch(&mut self) -> Result<()> {
        let Some(worker) = self.runtime.worker.as_ref() else { return Ok(()) };
        let stand_in = match self.spare.take() {
            // The previous stand-in takes a copy of the adapter: one clone of `A` and `B`, far
            // cheaper than rebuilding a learner from its snapshot.
            Some(mut l) => {
                l.policy.head = self.learner.policy.head.clone();
                l.config = self.learner.config.clone();
                l.counters = self.learner.counters;
                let c = &l.config;
                l.episodes.set_limits(c.episode_capacity, c.resident_episodes, c.episode_ttl_s, c.pair_capacity);
                l.episodes.advance_ids(self.learner.next_episode_id());
                l
            }
            None => {
                let mut l = Learner::from_state(self.learner.snapshot())?;
                l.advance_episode_ids(self.learner.next_episode_id());
                l
            }
        };
        let version = self.learner.counters().version;
        let first_new_id = self.learner.next_episode_id();
        let learner = std::mem::replace(&mut self.learner, stand_in);
        match worker.submit(learner) {
            Ok(done) => {
                self.in_flight = Some(InFlight { done, version, first_new_id, feedback: Vec::new() });
                Ok(())
            }
            Err(back) => {
                // The queue is full: the rewards wait for the next feedback.
                log::info!("the learning queue is full; the update of user {} waits", self.user);
                self.learner = *back;
                Ok(())
            }
        }
    }

    /// Takes the update's result when it is there (or, with `wait`, when it comes): the learner
    /// comes back, takes the stand-in's episodes and the feedback given meanwhile, and the next
    /// due update starts. Errors are kept for [`UserSession::flush`]. Whether anything landed.
    pub(super) fn land(&mut self, wait: bool) -> bool {
        let Some(f) = &self.in_flight else { return false };
        let msg = if wait {
            f.done.recv().ok()
        } else {
            match f.done.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        let Some(f) = self.in_flight.take() else { return false };
        let again = match self.take_back(f, msg) {
            Ok(again) => again,
            Err(e) => {
                self.deferred_error.get_or_insert(e);
                false
            }
        };
        self.persist_pending();
        if again && self.update_due() {
            if let Err(e) = self.launch() {
                self.deferred_error.get_or_insert(e);
            }
        }
        true
    }

    /// Puts the learner back; whether a due update may start again at once (not after a rate
    /// limit or an error, which would only repeat).
    fn take_back(&mut self, f: InFlight, msg: Option<Landed>) -> Result<bool> {
        let Some((learner, result)) = msg else {
            // The thread is gone (it cannot be while the runtime lives); the stand-in, which has
            // the adapter the update started from, goes on as the learner.
            self.learner.set_probes(self.runtime.probes()?.to_vec(), self.runtime.config().learner.greedy_tau)?;
            self.learner.set_record_source(std::sync::Arc::clone(&self.runtime) as std::sync::Arc<dyn crate::learn::RecordSource>);
            return Err(Error::Learning("the background update was lost; its rewards are not learned".into()));
        };
        let mut stand_in = std::mem::replace(&mut self.learner, learner);
        self.learner.advance_episode_ids(stand_in.next_episode_id());
        let ids: Vec<u64> = stand_in.episodes().map(|e| e.id).collect();
        for id in ids {
            if let Some(mut ep) = stand_in.episodes.remove(id) {
                ep.created_step = f.version;
                self.learner.restore_episode(ep)?;
                self.learner.counters.episodes += 1;
            }
        }
        // Emptied, it is the next update's stand-in.
        self.spare = Some(stand_in);
        let (mut first_error, mut again) = (None, true);
        match result {
            // As in sync mode, a rate-limited update leaves its rewards for the next feedback.
            Ok(report) if report.outcome == UpdateOutcome::Skipped(SkipReason::RateLimited) => again = false,
            Ok(report) => self.last_report = Some(report),
            Err(e) => {
                first_error = Some(e);
                again = false;
            }
        }
        for (id, reward) in f.feedback {
            if let Err(e) = self.give_queued(id, &reward) {
                log::warn!("feedback for episode {id} given during an update failed when it landed: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(again), Err)
    }

    /// Waits until no update is queued or running (the ones that landing makes due included).
    pub(super) fn settle(&mut self) {
        while self.in_flight.is_some() {
            self.land(true);
        }
    }

    /// Waits for the pending background updates (and those they make due) and returns the first
    /// error since the last flush: an update's, or one of feedback given while an update ran
    /// (an unknown episode, an invalid reward). The reports are then in
    /// [`UserSession::last_report`]. In `sync` mode there is nothing to wait for.
    pub fn flush(&mut self) -> Result<()> {
        self.settle();
        self.deferred_error.take().map_or(Ok(()), Err)
    }

    /// Whether an update of this session is queued or running on the learning thread.
    pub fn update_running(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The report of the most recent update of this session (by feedback, `update` or in the
    /// background); `None` before the first, and after a reset, forget or import.
    pub fn last_report(&self) -> Option<&UpdateReport> {
        self.last_report.as_ref()
    }
}
