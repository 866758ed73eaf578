//! Prometheus metrics: requests by route and status, request latency, append latency and
//! batch sizes, events appended.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use rollgate_store::AppendObserver;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    append_seconds: prometheus::Histogram,
    batch_requests: prometheus::Histogram,
    events_appended: IntCounter,
}

impl Metrics {
    /// The registry behind `/metrics`, for components that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("rollgate".into()), None).expect("a valid metrics prefix");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["route", "method"],
        )
        .expect("metric");
        let append_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "append_batch_duration_seconds",
                "Time to commit one group-commit batch",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
            ]),
        )
        .expect("metric");
        let batch_requests = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "append_batch_requests",
                "Append requests per committed batch",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("metric");
        let events_appended =
            IntCounter::new("events_appended_total", "Events appended to the log").expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(append_seconds.clone()),
            Box::new(batch_requests.clone()),
            Box::new(events_appended.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            append_seconds,
            batch_requests,
            events_appended,
        }
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AppendObserver for Metrics {
    fn batch_committed(&self, requests: usize, events: usize, elapsed: Duration) {
        self.append_seconds.observe(elapsed.as_secs_f64());
        self.batch_requests.observe(requests as f64);
        self.events_appended.inc_by(events as u64);
    }
}
