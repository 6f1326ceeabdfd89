//! The AuditFlow aggregator: consumes events, deduplicates them, runs the detection rules with
//! shared state, stores and folds alerts, notifies, and serves the REST API and metrics; with
//! no services configured it runs the whole system embedded (DESIGN §2, §4–§6). This crate is
//! the library; `main.rs` is a thin binary around it.

pub mod config;
pub mod detect;
pub mod rules;
pub mod state;

pub use config::Config;
