//! Which users have an open session on a runtime, and whether each was forgotten while open.
//!
//! A runtime allows one open session per user: two sessions of one user would each hold their own
//! adapter and episode counter, and whichever saved last would silently drop the other's learning
//! and could issue the same episode id twice. Opening a session claims the user; dropping the
//! session releases the claim.
//!
//! A claim also carries the user's forget-me tombstone. Forgetting a user (from the runtime or from
//! the session) marks the open session's claim before the store deletes the files, under the
//! claim's lock, and every store write of the session takes the same lock and checks the mark
//! first. So once a forget has begun, no session that was open can write the user's data back,
//! and a session opened later starts a fresh claim and works normally.
//!
//! Lock order: the registry, then a claim, then the store's own locks. A session's writes take
//! only the claim (never the registry), so the order cannot cycle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};

/// Takes a lock even if a thread panicked while holding it: the state behind these locks is one
/// flag or one map update, never left half done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The users with an open session on one runtime.
#[derive(Default)]
pub(crate) struct OpenSessions {
    users: Mutex<HashMap<String, Arc<Claim>>>,
}

/// One open session's claim on its user.
#[derive(Default)]
pub(crate) struct Claim {
    /// Whether the user was forgotten while the session was open.
    forgotten: Mutex<bool>,
}

/// Held by a session for its lifetime; dropping it releases the user.
pub(crate) struct SessionClaim {
    sessions: Arc<OpenSessions>,
    user: String,
    claim: Arc<Claim>,
}

/// Permission to write the user's data; the forget mark cannot change while it is held.
pub(crate) struct WriteGuard<'a> {
    _forgotten: MutexGuard<'a, bool>,
}

impl OpenSessions {
    /// Claims `user` for a new session, or fails with [`Error::Busy`] if a session of that user is
    /// open on this runtime.
    pub(crate) fn claim(self: &Arc<Self>, user: &str) -> Result<SessionClaim> {
        let mut users = lock(&self.users);
        if users.contains_key(user) {
            return Err(Error::Busy(format!(
                "user {user:?} already has an open session on this runtime; use that session, or free it before opening another"
            )));
        }
        let claim = Arc::new(Claim::default());
        users.insert(user.to_owned(), Arc::clone(&claim));
        Ok(SessionClaim { sessions: Arc::clone(self), user: user.to_owned(), claim })
    }

    /// Runs `erase` (which deletes the user's files) with the user's open session, if any, marked
    /// forgotten first. The registry stays locked throughout, so no session of the user can open
    /// between the mark and the deletion and load what is about to be deleted.
    pub(crate) fn forget<T>(&self, user: &str, erase: impl FnOnce() -> Result<T>) -> Result<T> {
        let users = lock(&self.users);
        match users.get(user) {
            Some(claim) => claim.forget(erase),
            None => erase(),
        }
    }
}

impl Claim {
    /// Marks the user forgotten, then runs `erase` while holding the mark's lock, so that a write
    /// of the session cannot slip in between. The mark stays set even if `erase` fails: the user
    /// asked to be forgotten, and the host may retry the deletion.
    fn forget<T>(&self, erase: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut forgotten = lock(&self.forgotten);
        *forgotten = true;
        erase()
    }
}

impl SessionClaim {
    /// Permission to write the user's data, or [`Error::UserForgotten`] once the user was
    /// forgotten. Hold the guard across the write.
    pub(crate) fn writable(&self) -> Result<WriteGuard<'_>> {
        let forgotten = lock(&self.claim.forgotten);
        if *forgotten {
            return Err(Error::UserForgotten(format!(
                "user {:?} was forgotten (forget-me) while this session was open; the session no longer writes to the store: free it and open a new session to start over",
                self.user
            )));
        }
        Ok(WriteGuard { _forgotten: forgotten })
    }

    /// Whether the user was forgotten while this session was open.
    pub(crate) fn is_forgotten(&self) -> bool {
        *lock(&self.claim.forgotten)
    }

    /// Forgets the user from inside the session (see [`OpenSessions::forget`]).
    pub(crate) fn forget<T>(&self, erase: impl FnOnce() -> Result<T>) -> Result<T> {
        self.claim.forget(erase)
    }
}

impl Drop for SessionClaim {
    /// Releases the user. Only this claim's own entry is removed.
    fn drop(&mut self) {
        let mut users = lock(&self.sessions.users);
        if users.get(&self.user).is_some_and(|c| Arc::ptr_eq(c, &self.claim)) {
            users.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_user_released_on_drop() {
        let open = Arc::new(OpenSessions::default());
        let a = open.claim("a").unwrap();
        let b = open.claim("b").unwrap();
        match open.claim("a") {
            Err(Error::Busy(m)) => assert!(m.contains("\"a\" already has an open session on this runtime"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(a);
        let a2 = open.claim("a").unwrap();
        assert!(a2.writable().is_ok() && b.writable().is_ok());
    }

    #[test]
    fn forget_marks_the_open_claim_and_a_later_claim_is_fresh() {
        let open = Arc::new(OpenSessions::default());
        let a = open.claim("a").unwrap();
        let erased = open.forget("a", || Ok(true)).unwrap();
        assert!(erased && a.is_forgotten());
        assert!(matches!(a.writable(), Err(Error::UserForgotten(m)) if m.contains("forgotten")));
        // Forgetting a user without an open session just erases.
        assert!(!open.forget("nobody", || Ok(false)).unwrap());
        drop(a);
        let again = open.claim("a").unwrap();
        assert!(!again.is_forgotten() && again.writable().is_ok());
        // A failed erase still leaves the mark.
        let err: Result<()> = again.forget(|| Err(Error::Store("disk gone".into())));
        assert!(err.is_err() && again.is_forgotten());
    }
}
