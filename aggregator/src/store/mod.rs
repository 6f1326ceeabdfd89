//! The alert store: folds firings into alerts by fingerprint (DESIGN §6). **Only this module
//! contains SQL.** PostgreSQL in the cluster profile; the interface is what the detection
//! pipeline hands its firings to.

pub mod postgres;

use std::future::Future;

use crate::detect::Firing;

/// Evidence events kept per alert (the newest).
pub const EVIDENCE_KEPT: usize = 10;

/// What committing a batch of firings did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Alerts created.
    pub created: usize,
    /// Firings folded into an existing open alert.
    pub folded: usize,
    /// Firings already stored (redelivery): nothing changed.
    pub duplicates: usize,
}

/// Where firings go. Committing is idempotent: a firing id already stored changes nothing.
pub trait AlertSink: Send + Sync {
    /// Stores a batch of firings in one transaction.
    fn commit(&self, firings: &[Firing]) -> impl Future<Output = anyhow::Result<Committed>> + Send;
}

/// The legacy JSON of a firing's triggering event (the evidence kept with an alert).
pub fn evidence_json(f: &Firing) -> serde_json::Value {
    wire::legacy::to_legacy(&f.event, &f.node, f.event_id)
}
