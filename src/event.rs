//! Event storage and batch views.
//!
//! Payloads are copied once, by the queue, into *segments*: large byte buffers that
//! many events share. A segment is written only while the queue owns it alone; once
//! a consumer takes events from it, it is frozen behind an `Arc` and never written
//! again. When the last batch referring to it is settled, its buffer goes back to a
//! pool, so the steady state allocates nothing per event (and nothing per segment).
//!
//! The pool hands buffers out oldest first, and only once it holds a few: a buffer a
//! consumer has just read is still in that consumer's CPU cache, and a producer
//! writing into it would stall on every line it takes back (measured: a client that
//! reads each event's first byte halved `publish_batch` throughput with newest-first
//! reuse). Reused after a round through a ring larger than a core's L2 cache, a
//! buffer comes back cold.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Default capacity of one segment's byte buffer.
pub(crate) const SEGMENT_BYTES: usize = 256 * 1024;

/// Buffers kept for reuse; enough for a full default queue of small events.
const POOL_KEEP: usize = 64;

/// Free segments the pool holds before it reuses one: 2 MiB, more than the L2 cache
/// of one core on the machines we measured (1 MiB).
const SEGMENT_RING: usize = 8;

/// Free reference lists the pool holds before it reuses one (512 KiB of references
/// with 1024-event batches).
const REFS_RING: usize = 32;

/// Events laid end to end in one buffer, as framed records arrive from a file or a
/// socket, or as a binding gathers them: event `i` is the next `lens[i]` bytes of
/// `data`. Publishing them ([`crate::Producer::publish_packed`]) copies whole runs of
/// events at once instead of one event at a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packed<'a> {
    data: &'a [u8],
    lens: &'a [u32],
}

impl<'a> Packed<'a> {
    /// The events of `data` cut at `lens`; [`crate::Error::InvalidArgument`] unless the
    /// lengths add up to `data.len()`.
    pub fn new(data: &'a [u8], lens: &'a [u32]) -> crate::Result<Packed<'a>> {
        let total: u64 = lens.iter().map(|&n| u64::from(n)).sum();
        if total != data.len() as u64 {
            return Err(crate::Error::InvalidArgument(format!(
                "the event lengths add up to {total} bytes, the buffer holds {}",
                data.len()
            )));
        }
        Ok(Packed { data, lens })
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let mut rest = self.data;
        self.lens.iter().map(move |&n| {
            let (event, after) = rest.split_at(n as usize);
            rest = after;
            event
        })
    }

    /// The payload bytes of all events.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The event lengths.
    pub fn lens(&self) -> &'a [u32] {
        self.lens
    }

    /// The first `n` events, and the rest. Panics if `n > self.len()`.
    pub fn split_at(&self, n: usize) -> (Packed<'a>, Packed<'a>) {
        let (head, tail) = self.lens.split_at(n);
        let bytes = head.iter().map(|&n| n as usize).sum();
        let (front, back) = self.data.split_at(bytes);
        (Packed { data: front, lens: head }, Packed { data: back, lens: tail })
    }
}

/// A pool of segment buffers and event reference lists shared by one queue.
#[derive(Default)]
pub(crate) struct SegmentPool {
    free: Mutex<VecDeque<Vec<u8>>>,
    free_refs: Mutex<VecDeque<Vec<EventRef>>>,
}

impl SegmentPool {
    /// An empty reference list with room for `n` references: the oldest free one
    /// that fits, once the ring is full (see the module documentation).
    pub(crate) fn take_refs(&self, n: usize) -> Vec<EventRef> {
        let mut free = self.free_refs.lock().unwrap_or_else(|e| e.into_inner());
        let reusable = if free.len() >= REFS_RING { free.iter().position(|refs| refs.capacity() >= n) } else { None };
        match reusable.and_then(|i| free.remove(i)) {
            Some(refs) => refs,
            None => Vec::with_capacity(n),
        }
    }

    pub(crate) fn give_back_refs(&self, mut refs: Vec<EventRef>) {
        if refs.capacity() == 0 {
            return;
        }
        refs.clear();
        let mut free = self.free_refs.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_KEEP {
            free.push_back(refs);
        }
    }

    /// A cleared buffer with room for at least `min` bytes: the oldest free one, once
    /// the ring is full (see the module documentation).
    pub(crate) fn take(&self, min: usize) -> Vec<u8> {
        let want = min.max(SEGMENT_BYTES);
        if want == SEGMENT_BYTES {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() >= SEGMENT_RING {
                if let Some(buf) = free.pop_front() {
                    return buf;
                }
            }
        }
        Vec::with_capacity(want)
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() != SEGMENT_BYTES {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_KEEP {
            free.push_back(buf);
        }
    }
}

/// A frozen segment: immutable bytes shared by the batches that refer to it.
pub(crate) struct Segment {
    data: Vec<u8>,
    pool: Arc<SegmentPool>,
}

impl Segment {
    pub(crate) fn new(data: Vec<u8>, pool: Arc<SegmentPool>) -> Segment {
        Segment { data, pool }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.data));
    }
}

/// Where one event lives: its segment (its queue's segment id, wrapping; see
/// [`EventsData`]), its byte range, and the producer that published it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventRef {
    pub(crate) seg: u32,
    pub(crate) off: u32,
    pub(crate) len: u32,
    pub(crate) producer: u32,
}

/// The storage behind one batch: the segments it spans and where each event is.
pub(crate) struct EventsData {
    /// Consecutive segments; `segs[0]` has id `seg_base`.
    segs: Vec<Arc<Segment>>,
    seg_base: u32,
    pub(crate) refs: Vec<EventRef>,
    /// Payload bytes of all events.
    pub(crate) bytes: usize,
    /// The producer of every event, when they all have the same one.
    pub(crate) sole_producer: Option<u32>,
    /// Where `refs` goes back to.
    pool: Option<Arc<SegmentPool>>,
}

impl EventsData {
    /// `refs` point into `segs`, whose first segment has id `seg_base`; `bytes` and
    /// `sole_producer` describe them (the queue keeps both as events arrive).
    pub(crate) fn new(
        segs: Vec<Arc<Segment>>,
        seg_base: u32,
        refs: Vec<EventRef>,
        bytes: usize,
        sole_producer: Option<u32>,
        pool: Option<Arc<SegmentPool>>,
    ) -> EventsData {
        debug_assert_eq!(bytes, refs.iter().map(|r| r.len as usize).sum::<usize>());
        debug_assert!(sole_producer.map_or(true, |p| refs.iter().all(|r| r.producer == p)));
        EventsData { segs, seg_base, refs, bytes, sole_producer, pool }
    }

    #[inline]
    pub(crate) fn payload(&self, i: usize) -> &[u8] {
        let r = self.refs[i];
        let start = r.off as usize;
        &self.segs[r.seg.wrapping_sub(self.seg_base) as usize].data[start..start + r.len as usize]
    }
}

impl Drop for EventsData {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give_back_refs(std::mem::take(&mut self.refs));
        }
    }
}

/// Which events of a batch a view covers.
#[derive(Clone, Debug)]
pub(crate) enum Selection {
    /// A contiguous run of batch indices: the common case, no allocation.
    Range(Range<u32>),
    /// Arbitrary batch indices in increasing order (after guaranteed events were
    /// kept and the others dropped).
    List(Arc<[u32]>),
}

impl Selection {
    pub(crate) fn len(&self) -> usize {
        match self {
            Selection::Range(r) => r.len(),
            Selection::List(l) => l.len(),
        }
    }

    #[inline]
    pub(crate) fn index(&self, i: usize) -> usize {
        match self {
            Selection::Range(r) => r.start as usize + i,
            Selection::List(l) => l[i] as usize,
        }
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(usize)) {
        match self {
            Selection::Range(r) => r.clone().for_each(|i| f(i as usize)),
            Selection::List(l) => l.iter().for_each(|&i| f(i as usize)),
        }
    }

    fn slice(&self, r: Range<usize>) -> Selection {
        match self {
            Selection::Range(s) => Selection::Range(s.start + r.start as u32..s.start + r.end as u32),
            Selection::List(l) => {
                if r.len() == l.len() {
                    Selection::List(l.clone())
                } else {
                    Selection::List(l[r].into())
                }
            }
        }
    }
}

/// A read-only view of some events of a batch, handed to clients.
///
/// Cloning is cheap (a reference count); the payloads stay valid while any clone
/// lives, so an asynchronous client may keep one until it completes the batch.
#[derive(Clone)]
pub struct Events {
    pub(crate) data: Arc<EventsData>,
    pub(crate) sel: Selection,
}

impl Events {
    pub(crate) fn new(data: Arc<EventsData>, sel: Selection) -> Events {
        Events { data, sel }
    }

    /// Number of events in the view.
    pub fn len(&self) -> usize {
        self.sel.len()
    }

    /// True when the view holds no event.
    pub fn is_empty(&self) -> bool {
        self.sel.len() == 0
    }

    /// The payload of the `i`-th event of the view.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        assert!(i < self.len(), "event index {i} out of range for {} events", self.len());
        self.data.payload(self.sel.index(i))
    }

    /// The payloads in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.data.payload(self.sel.index(i)))
    }

    /// Calls `f` with each payload in order, as `iter` yields them, looking a segment
    /// up only when the next event lies in another one (consecutive events mostly
    /// share one): building a C client's views of 1024-event batches took 40% less
    /// of the consumer's time than with `iter` (h6-go-packed profile).
    pub(crate) fn for_each_payload<'s>(&'s self, mut f: impl FnMut(&'s [u8])) {
        let data = &*self.data;
        let mut seg = data.seg_base;
        let mut seg_bytes: &[u8] = data.segs.first().map_or(&[], |s| &s.data);
        let mut visit = |r: &EventRef| {
            if r.seg != seg {
                seg = r.seg;
                seg_bytes = &data.segs[r.seg.wrapping_sub(data.seg_base) as usize].data;
            }
            let start = r.off as usize;
            f(&seg_bytes[start..start + r.len as usize]);
        };
        match &self.sel {
            Selection::Range(range) => data.refs[range.start as usize..range.end as usize].iter().for_each(visit),
            Selection::List(list) => list.iter().for_each(|&i| visit(&data.refs[i as usize])),
        }
    }

    /// Total payload bytes of the view.
    pub fn bytes(&self) -> usize {
        let mut n = 0;
        self.sel.for_each(|i| n += self.data.refs[i].len as usize);
        n
    }

    /// Splits the view after `n` events: the first `n`, and the rest.
    pub(crate) fn split_at(&self, n: usize) -> (Events, Events) {
        let n = n.min(self.len());
        (
            Events::new(self.data.clone(), self.sel.slice(0..n)),
            Events::new(self.data.clone(), self.sel.slice(n..self.len())),
        )
    }

    /// The sub-view of the events for which `keep(producer)` holds.
    pub(crate) fn filter_producers(&self, mut keep: impl FnMut(u32) -> bool) -> Events {
        let mut idx = Vec::new();
        self.sel.for_each(|i| {
            if keep(self.data.refs[i].producer) {
                idx.push(i as u32);
            }
        });
        Events::new(self.data.clone(), Selection::List(idx.into()))
    }

    /// The payloads copied into owned vectors.
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }

    pub(crate) fn same_batch(&self, other: &Arc<EventsData>) -> bool {
        Arc::ptr_eq(&self.data, other)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(payloads: &[&[u8]]) -> Events {
        let pool = Arc::new(SegmentPool::default());
        let mut data = Vec::new();
        let mut refs = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            refs.push(EventRef { seg: 0, off: data.len() as u32, len: p.len() as u32, producer: i as u32 % 2 });
            data.extend_from_slice(p);
        }
        let bytes = data.len();
        let data = Arc::new(EventsData::new(vec![Arc::new(Segment::new(data, pool))], 0, refs, bytes, None, None));
        let n = payloads.len() as u32;
        Events::new(data, Selection::Range(0..n))
    }

    #[test]
    fn split_and_filter_keep_order() {
        let ev = events(&[b"a", b"bb", b"ccc", b"dddd", b"e"]);
        let (head, tail) = ev.split_at(2);
        assert_eq!(head.to_vec(), vec![b"a".to_vec(), b"bb".to_vec()]);
        assert_eq!(tail.len(), 3);
        assert_eq!(tail.bytes(), 3 + 4 + 1);
        let odd = ev.filter_producers(|p| p == 1);
        assert_eq!(odd.to_vec(), vec![b"bb".to_vec(), b"dddd".to_vec()]);
        let (first, rest) = odd.split_at(1);
        assert_eq!((first.get(0), rest.get(0)), (&b"bb"[..], &b"dddd"[..]));
        assert!(ev.split_at(99).1.is_empty());
    }

    #[test]
    fn views_read_across_segments_with_wrapping_ids() {
        let pool = Arc::new(SegmentPool::default());
        let first = Arc::new(Segment::new(b"aabbb".to_vec(), pool.clone()));
        let second = Arc::new(Segment::new(b"cd".to_vec(), pool));
        let at = |seg, off, len, producer| EventRef { seg, off, len, producer };
        let refs = vec![at(u32::MAX, 0, 2, 0), at(u32::MAX, 2, 3, 1), at(0, 0, 1, 0), at(0, 1, 1, 1)];
        let data = Arc::new(EventsData::new(vec![first, second], u32::MAX, refs, 7, None, None));
        let all = Events::new(data, Selection::Range(0..4));
        let expected: Vec<&[u8]> = vec![b"aa", b"bbb", b"c", b"d"];
        assert_eq!(all.iter().collect::<Vec<_>>(), expected);
        assert_eq!(all.iter().len(), 4);
        let (_, tail) = all.split_at(1);
        assert_eq!(tail.iter().collect::<Vec<_>>(), expected[1..]);
        let odd = all.filter_producers(|p| p == 1);
        assert_eq!(odd.iter().collect::<Vec<_>>(), vec![&b"bbb"[..], &b"d"[..]]);
        assert_eq!((odd.get(1), odd.iter().len()), (&b"d"[..], 2));

        fn visited(view: &Events) -> Vec<&[u8]> {
            let mut seen = Vec::new();
            view.for_each_payload(|p| seen.push(p));
            seen
        }
        assert_eq!(visited(&all), expected);
        assert_eq!(visited(&tail), expected[1..]);
        assert_eq!(visited(&all.split_at(2).1), expected[2..], "a view that starts in the second segment");
        assert_eq!(visited(&odd), vec![&b"bbb"[..], &b"d"[..]]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn get_out_of_range_panics_with_a_message() {
        events(&[b"a"]).get(1);
    }

    #[test]
    fn segments_return_to_the_pool_and_are_reused_oldest_first_once_the_ring_is_full() {
        let pool = Arc::new(SegmentPool::default());
        let bufs: Vec<Vec<u8>> = (0..SEGMENT_RING).map(|_| pool.take(0)).collect();
        assert!(bufs.iter().all(|b| b.capacity() == SEGMENT_BYTES));
        let addresses: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        let mut bufs = bufs.into_iter();
        drop(Segment::new(bufs.next().unwrap(), pool.clone()));
        let fresh = pool.take(0);
        assert!(!addresses.contains(&fresh.as_ptr()), "a buffer is not reused before the ring is full");
        bufs.for_each(|b| drop(Segment::new(b, pool.clone())));
        assert_eq!(pool.free.lock().unwrap().len(), SEGMENT_RING);
        let oldest = pool.take(0);
        assert_eq!(oldest.as_ptr(), addresses[0], "the oldest free buffer comes back first");
        assert_eq!(pool.free.lock().unwrap().len(), SEGMENT_RING - 1);
        let big = pool.take(SEGMENT_BYTES * 2);
        drop(Segment::new(big, pool.clone()));
        assert_eq!(pool.free.lock().unwrap().len(), SEGMENT_RING - 1, "odd-sized buffers are not pooled");
        drop((fresh, oldest));
    }

    #[test]
    fn reference_lists_are_reused_oldest_first_once_the_ring_is_full() {
        let pool = SegmentPool::default();
        let lists: Vec<Vec<EventRef>> = (0..REFS_RING).map(|_| pool.take_refs(16)).collect();
        let addresses: Vec<*const EventRef> = lists.iter().map(|l| l.as_ptr()).collect();
        lists.into_iter().for_each(|l| pool.give_back_refs(l));
        let small = pool.take_refs(8);
        assert_eq!(small.as_ptr(), addresses[0]);
        assert!(small.is_empty() && small.capacity() >= 8);
        let too_big = pool.take_refs(1 << 20);
        assert!(!addresses.contains(&too_big.as_ptr()), "a list too small for the request is not taken");
    }
}
