//! The conformance suite every queue type must pass (filled in below).
