//! Fan-out to a changing set of members.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Counters, Sink, SinkStats};
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
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let snapshot = lock(&self.members).clone();
        let mut gone = Vec::new();
        for member in snapshot.iter() {
            match member.write(event) {
                Ok(()) => Counters::bump(&self.counters.forwarded, 1),
                Err(Error::Closed) => gone.push(member.clone()),
                Err(_) => Counters::bump(&self.counters.failures, 1),
            }
        }
        for m in gone {
            let _ = self.remove(&m);
        }
        Counters::bump(&self.counters.written, 1);
        Ok(())
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
