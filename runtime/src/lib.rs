//! What every AuditFlow binary does the same way, so that each `main.rs` is only its own
//! command line: the command-line contract ([`cli`]), configuration loading and checking with every problem reported at once and
//! exit status 64 ([`config`]), logging, signals and graceful shutdown ([`process`]), metrics registration ([`metrics`]), HTTP serving with connection and header-time limits ([`http`]), and the
//! reconnection backoff every client of a service uses ([`retry`]), and RabbitMQ sessions
//! with that backoff (`amqp`, feature `amqp`). No wire format here: that
//! is `wire`'s alone.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod process;
pub mod retry;
