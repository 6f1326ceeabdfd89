//! The AuditFlow dashboard: the browser UI, with its assets compiled into the binary, talking
//! only to the aggregator's public API. This crate is the library; `main.rs` is a thin binary
//! around it.

pub mod config;

pub use config::Config;
