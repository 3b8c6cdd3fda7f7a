//! The C ABI (see include/conveyor.h). The only module with `extern "C"` and `unsafe`.
//!
//! A thin translation layer over the Rust API: it checks every pointer, catches every
//! panic (`boundary::ffi_status` / `ffi_value`), turns `uint32_t` flags and codes into Rust values (never taking a
//! Rust `bool` or enum from C), and adapts C vtables to the core's [`crate::Client`] and
//! [`crate::AsyncClient`] traits, so the core never sees `void*`.
//!
//! Files: `boundary` (status codes, last error, the panic boundary, version), `types`
//! (the `#[repr(C)]` structs and callback types), `vtable` (vtable and factory
//! adapters, async completions, the logger bridge), then one file per handle: `config`,
//! `pipeline`, `producer`, `sink` (sinks and their combinators, pipelines as sinks and
//! sinks as clients). The header lists functions in file order.

#![allow(non_camel_case_types)]
// The exports are for C: each one's safety contract (which pointers must be valid, for
// how long, from which threads) is its documentation in the generated header.
#![allow(clippy::missing_safety_doc)]

mod boundary;
mod config;
mod pipeline;
mod producer;
mod sink;
mod types;
mod vtable;

pub use boundary::*;
pub use config::*;
pub use pipeline::*;
pub use producer::*;
pub use sink::*;
pub use types::*;
pub use vtable::{conveyor_completion_done, foreign_client};

#[cfg(test)]
mod tests {
    /// Every export must run its body inside the panic boundary (`ffi_status` or
    /// `ffi_value`): a panic leaving an `extern "C"` function aborts the process.
    #[test]
    fn every_export_is_guarded() {
        let files = [
            ("boundary.rs", include_str!("boundary.rs")),
            ("config.rs", include_str!("config.rs")),
            ("pipeline.rs", include_str!("pipeline.rs")),
            ("producer.rs", include_str!("producer.rs")),
            ("sink.rs", include_str!("sink.rs")),
            ("vtable.rs", include_str!("vtable.rs")),
        ];
        for (name, text) in files {
            let declared =
                text.lines().filter(|l| l.starts_with("pub ") && l.contains("extern \"C\" fn conveyor_")).count();
            assert_eq!(
                declared,
                text.matches("#[no_mangle]").count(),
                "{name}: an export lacks #[no_mangle] (or vice versa)"
            );
            for chunk in text.split("#[no_mangle]").skip(1) {
                let signature = chunk.lines().find(|l| l.contains("extern \"C\" fn")).unwrap_or("");
                let body = chunk.split_once('{').map(|(_, b)| b).unwrap_or("");
                let first_statement = body.trim_start();
                assert!(
                    first_statement.starts_with("ffi_status(") || first_statement.starts_with("ffi_value("),
                    "{name}: export `{}` does not start with the panic guard",
                    signature.trim()
                );
            }
        }
    }
}
