//! Registering metrics in a binary's one `prometheus` registry (each binary's `telemetry.rs`
//! defines every metric it exports) and rendering them for `/metrics`. A metric name that is
//! invalid or registered twice is a programmer error: it panics at start-up, in every test
//! that builds the metrics, never later.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Registers `metric` and returns it.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

/// A counter.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

/// A counter with one label, exported from the start with each of `values` (so that a
/// `rate()` over them is defined before the first event).
pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let c = register(
        registry,
        IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
    );
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

/// A gauge.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

/// The text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
}
