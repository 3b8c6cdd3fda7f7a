//! Fan-out to a changing set of members.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{BatchError, Counters, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::queue::lock;

/// Writes every event to every member, in member order. Members that report
/// [`Error::Closed`] are removed, and every other member still gets that event
/// exactly once. Membership changes never wait for a delivery in progress (writes
/// work on a snapshot), so wrap slow members in a [`super::QueueSink`] and none
/// holds back the others.
pub struct Broadcaster {
    members: Mutex<Arc<Vec<Arc<dyn Sink>>>>,
    closed: AtomicBool,
    counters: Counters,
}

fn same(a: &Arc<dyn Sink>, b: &Arc<dyn Sink>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const u8, Arc::as_ptr(b) as *const u8)
}

impl Broadcaster {
    /// A broadcaster over `members` (a sink listed twice is kept once).
    pub fn new(members: Vec<Arc<dyn Sink>>) -> Broadcaster {
        let b = Broadcaster { members: Mutex::new(Arc::new(Vec::new())), closed: AtomicBool::new(false), counters: Counters::default() };
        for m in members {
            let _ = b.add(m);
        }
        b
    }

    /// Adds a member; adding one already present does nothing.
    pub fn add(&self, sink: Arc<dyn Sink>) -> Result<()> {
        let mut members = lock(&self.members);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !members.iter().any(|m| same(m, &sink)) {
            let mut next = members.as_ref().clone();
            next.push(sink);
            *members = Arc::new(next);
        }
        Ok(())
    }

    /// Removes a member without closing it; an unknown sink is ignored. Once this
    /// returns, writes that start later do not reach it.
    pub fn remove(&self, sink: &Arc<dyn Sink>) -> Result<()> {
        let mut members = lock(&self.members);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if members.iter().any(|m| same(m, sink)) {
            *members = Arc::new(members.iter().filter(|m| !same(m, sink)).cloned().collect());
        }
        Ok(())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        lock(&self.members).len()
    }

    /// True without members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for Broadcaster {
    fn write(&self, event: &[u8]) -> Result<()> {
        self.write_batch(&[event]).map(drop).map_err(Error::from)
    }

    /// Hands the whole batch to each member in turn, with one `write_batch` per member
    /// (more only when a member refuses an event: it is counted as a failure and the
    /// member gets the events after it). A member that reports [`Error::Closed`] is
    /// removed and gets no more of the batch; every other member gets every event
    /// once. Refuses only when the broadcaster itself is closed.
    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        if events.is_empty() {
            return Ok(0);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(BatchError { accepted: 0, error: Error::Closed });
        }
        let snapshot = lock(&self.members).clone();
        let mut forwarded = 0;
        for member in snapshot.iter() {
            let mut start = 0;
            while start < events.len() {
                match member.write_batch(&events[start..]) {
                    Ok(n) => {
                        forwarded += n;
                        break;
                    }
                    Err(BatchError { accepted, error }) => {
                        forwarded += accepted;
                        if error == Error::Closed {
                            let _ = self.remove(member);
                            break;
                        }
                        Counters::bump(&self.counters.failures, 1);
                        start += accepted + 1;
                    }
                }
            }
        }
        Counters::bump(&self.counters.forwarded, forwarded as u64);
        Counters::bump(&self.counters.written, events.len() as u64);
        Ok(events.len())
    }

    fn close(&self) -> Result<()> {
        let members = {
            let mut members = lock(&self.members);
            if self.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            std::mem::take(&mut *members)
        };
        for m in members.iter() {
            let _ = m.close();
        }
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        let inner = lock(&self.members).iter().map(|m| m.stats()).collect();
        self.counters.snapshot("broadcaster", 0, inner)
    }
}
