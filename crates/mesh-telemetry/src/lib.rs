//! # mesh-telemetry: what happened to each request
//!
//! The outermost layer of both stacks: a span with trace context, a timer,
//! and on completion Prometheus metrics with Istio's and Linkerd's names and
//! labels, an access-log line with the response flags, OTLP export and the
//! live tap stream.
//!
//! The layers arrive with the telemetry issue.

#![forbid(unsafe_code)]
