//! The graph of who writes into whom, for bindings that let applications wire sinks
//! and pipelines together at run time: a link that would close a cycle (a broadcaster
//! added to itself recurses until the stack overflows; a pipeline's sink serving that
//! pipeline feeds it its own output) is refused.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::queue::lock;

/// A sink (edges to the sinks it writes to) or a pipeline (edges to the sinks serving as
/// its clients). Edges are only added through [`WriteNode::link`]. Members a
/// broadcaster drops on its own keep their edge: the check only errs on the side of
/// refusing.
pub struct WriteNode {
    edges: Mutex<Vec<Arc<WriteNode>>>,
}

/// Serializes graph changes, so that two links made at once cannot close a cycle unseen.
static GRAPH: Mutex<()> = Mutex::new(());

impl WriteNode {
    /// A node writing into `edges` (a new node has no incoming edge: no cycle possible).
    pub fn new(edges: impl IntoIterator<Item = Arc<WriteNode>>) -> Arc<WriteNode> {
        let mut seen = HashSet::new();
        let edges = edges.into_iter().filter(|n| seen.insert(Arc::as_ptr(n))).collect();
        Arc::new(WriteNode { edges: Mutex::new(edges) })
    }

    /// Records that `self` writes into `to`; refused with [`Error::InvalidArgument`]
    /// when `to` already writes into `self`, directly or through other nodes. Returns
    /// whether the edge is new (so a caller failing afterwards undoes only what it added).
    pub fn link(self: &Arc<WriteNode>, to: &Arc<WriteNode>, what: &str) -> Result<bool> {
        let _graph = lock(&GRAPH);
        if to.reaches(self) {
            return Err(Error::InvalidArgument(format!("{what} would make a sink write into itself (a cycle)")));
        }
        let mut edges = lock(&self.edges);
        if edges.iter().any(|e| Arc::ptr_eq(e, to)) {
            return Ok(false);
        }
        edges.push(to.clone());
        Ok(true)
    }

    /// Forgets the edge from `self` to `to`, if any.
    pub fn unlink(&self, to: &Arc<WriteNode>) {
        let _graph = lock(&GRAPH);
        lock(&self.edges).retain(|e| !Arc::ptr_eq(e, to));
    }

    fn reaches(self: &Arc<WriteNode>, target: &Arc<WriteNode>) -> bool {
        let mut seen = HashSet::new();
        let mut todo = vec![self.clone()];
        while let Some(node) = todo.pop() {
            if Arc::ptr_eq(&node, target) {
                return true;
            }
            if seen.insert(Arc::as_ptr(&node)) {
                todo.extend(lock(&node.edges).iter().cloned());
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_that_close_a_cycle_are_refused() {
        let (a, b, c) = (WriteNode::new([]), WriteNode::new([]), WriteNode::new([]));
        assert_eq!(a.link(&b, "a -> b"), Ok(true));
        assert_eq!(a.link(&b, "a -> b"), Ok(false));
        assert_eq!(b.link(&c, "b -> c"), Ok(true));
        assert!(matches!(c.link(&a, "c -> a"), Err(Error::InvalidArgument(m)) if m.contains("c -> a would make")));
        assert!(a.link(&a, "a -> a").is_err());
        b.unlink(&c);
        assert_eq!(c.link(&a, "c -> a"), Ok(true));
    }
}
