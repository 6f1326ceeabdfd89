//! The AuditFlow node agent: collects audit events on a node, filters them at the edge,
//! spools them to disk and delivers them upstream (DESIGN §3–§4). This crate is the library;
//! `main.rs` is a thin binary around it.

pub mod config;

pub use config::Config;
