//! Queue types by name (`queue.type`). `"mem"` is always present.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use super::mem::MemQueue;
use super::{AckListener, Queue, QueueSettings};
use crate::error::{Error, Result};

/// Builds a queue of one type.
pub type QueueFactory = fn(QueueSettings, Option<AckListener>) -> Result<Arc<dyn Queue>>;

fn registry() -> &'static RwLock<HashMap<String, QueueFactory>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, QueueFactory>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut types: HashMap<String, QueueFactory> = HashMap::new();
        types.insert("mem".into(), |s, l| Ok(MemQueue::new(s, l)? as Arc<dyn Queue>));
        RwLock::new(types)
    })
}

/// Registers a queue type under `name`. Fails if the name is taken.
pub fn register(name: &str, factory: QueueFactory) -> Result<()> {
    let mut types = registry().write().unwrap_or_else(|e| e.into_inner());
    if types.contains_key(name) {
        return Err(Error::InvalidArgument(format!("queue type `{name}` is already registered")));
    }
    types.insert(name.to_string(), factory);
    Ok(())
}

/// The registered type names, sorted.
pub fn types() -> Vec<String> {
    let mut names: Vec<String> = registry().read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
    names.sort();
    names
}

/// Builds a queue of type `name`.
pub fn build(name: &str, settings: QueueSettings, listener: Option<AckListener>) -> Result<Arc<dyn Queue>> {
    let factory = registry().read().unwrap_or_else(|e| e.into_inner()).get(name).copied();
    match factory {
        Some(f) => f(settings, listener),
        None => Err(Error::config("queue.type", format!("unknown queue type `{name}` (known: {})", types().join(", ")))),
    }
}
