//! A consumer's auto-commits, written by a thread of its own: a commit of many partitions is
//! tens of thousands of records (one per partition that moved), and waiting for them inside
//! `poll` held a paced consumer of 100,000 partitions up for a third of a second every second.
//! The consumer hands the commit over and goes on; one commit is in flight at a time (a later
//! auto-commit while one is is skipped until the next interval: it would commit the same
//! partitions again). Every synchronous commit, a rebalance and leaving wait for the one in
//! flight first, so commits take effect in the order they were made, and its error is reported
//! there or at the next auto-commit.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::consumer::groups::Groups;
use crate::consumer::offsets::{OffsetKey, OffsetValue};
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::store::Store;

type Entries = Vec<(OffsetKey, Option<OffsetValue>)>;

#[derive(Default)]
struct State {
    /// Commits handed over and not yet written.
    queued: usize,
    /// The first failure since the consumer last looked.
    error: Option<Error>,
}

pub(crate) struct Committer {
    tx: Option<mpsc::Sender<Entries>>,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(store: Arc<Store>, groups: Arc<Groups>) -> Result<Committer> {
        let (tx, rx) = mpsc::channel::<Entries>();
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        let dir = store.config.dir.clone();
        let thread = std::thread::Builder::new()
            .name("floodgate-commit".into())
            .spawn(move || {
                let mut producer = Producer::internal(store);
                for entries in rx {
                    let outcome = groups.offsets.commit(&mut producer, &entries);
                    if outcome.is_ok() {
                        groups.update_protection();
                    }
                    let (lock, cv) = &*shared;
                    let mut s = lock.lock().expect("committer lock");
                    s.queued -= 1;
                    if let Err(e) = outcome {
                        s.error.get_or_insert(e);
                    }
                    cv.notify_all();
                }
            })
            .map_err(|e| Error::io("spawn commit thread", dir, e))?;
        Ok(Committer {
            tx: Some(tx),
            state,
            thread: Some(thread),
        })
    }

    /// Whether a commit is in flight.
    pub fn busy(&self) -> bool {
        self.state.0.lock().expect("committer lock").queued > 0
    }

    /// The failure of a commit since the last look, if one failed.
    pub fn take_error(&self) -> Option<Error> {
        self.state.0.lock().expect("committer lock").error.take()
    }

    /// Hands a commit over.
    pub fn submit(&self, entries: Entries) {
        let tx = self
            .tx
            .as_ref()
            .expect("the sender lives as long as the committer");
        self.state.0.lock().expect("committer lock").queued += 1;
        if tx.send(entries).is_err() {
            // The thread is gone (it panicked): say so at the next look.
            let mut s = self.state.0.lock().expect("committer lock");
            s.queued -= 1;
            s.error.get_or_insert(Error::Closed);
        }
    }

    /// Waits for the commits in flight; their failure, if one failed.
    pub fn wait(&self) -> Result<()> {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().expect("committer lock");
        while s.queued > 0 {
            s = cv.wait(s).expect("committer lock");
        }
        match s.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
