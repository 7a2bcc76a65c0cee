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
        // A panic in an update must not end the thread that serves every session.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| learner.update()))
            .unwrap_or_else(|_| Err(Error::Learning("the background update panicked; the rewards it was learning from may be lost".into())));
        queued.fetch_sub(1, Ordering::AcqRel);
        // A session dropped meanwhile no longer listens; its learner is dropped here.
        let _ = job.reply.send((learner, result));
    }
}
