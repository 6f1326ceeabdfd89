//! The AuditFlow broker: an embedded MQTT broker (rumqttd) for agents and a bridge that moves
//! their envelopes into RabbitMQ with publisher confirms, acking an agent only after RabbitMQ
//! confirmed (DESIGN §3–§4). This crate is the library; `main.rs` is a thin binary around it.

pub mod config;

pub use config::Config;
