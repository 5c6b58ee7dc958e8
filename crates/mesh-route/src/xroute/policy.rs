//! Timeouts and retries of an HTTPRoute rule (SPEC 3.5), and Linkerd's
//! retry and timeout annotations on the route or its parent Service (SPEC
//! 13.3), as the [`RoutePolicy`](crate::decision::RoutePolicy) fields the
//! timeout and retry layers read.
//!
//! Dialect choices (SPEC 11 keeps them per dialect):
//! - A rule without a `retry` stanza (and without retry annotations) is
//!   never retried: Gateway API defines retries only through the stanza and
//!   Linkerd never retries unasked. The policy says so explicitly
//!   (`attempts: 0`), so the retry layer does not apply Istio's default.
//! - A stanza without `attempts` retries once (Linkerd's default limit;
//!   upstream leaves it to the implementation).
//! - With a stanza, connection errors and timed-out attempts are always
//!   retried (`connect-failure`, `refused-stream`, `reset`), plus the listed
//!   `codes`.
//! - Without retries, `backendRequest` bounds the only attempt, so the
//!   whole-request timeout becomes the smaller of the two.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::schema::common::Duration as YamlDuration;
use mesh_core::schema::gateway_api::HttpRouteRule;

use crate::decision::{RetryOn, RetrySpec};

/// `retry.linkerd.io/*` and `timeout.linkerd.io/*`.
const RETRY_HTTP: &str = "retry.linkerd.io/http";
const RETRY_GRPC: &str = "retry.linkerd.io/grpc";
const RETRY_LIMIT: &str = "retry.linkerd.io/limit";
const RETRY_TIMEOUT: &str = "retry.linkerd.io/timeout";
const TIMEOUT_REQUEST: &str = "timeout.linkerd.io/request";

/// Conditions retried whenever a rule retries at all.
const CONNECTION_ERRORS: [RetryOn; 3] = [
    RetryOn::ConnectFailure,
    RetryOn::RefusedStream,
    RetryOn::Reset,
];

/// The timeout and retry policy of one rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TimeoutsAndRetries {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<RetrySpec>,
}

/// Annotations that configure a route: the route's own, and its parent
/// Service's (its ServiceEntry's). A Service with a ServiceProfile never
/// gets here: the profile wins (SPEC 13.3). Route annotations of a family
/// (`retry.linkerd.io/` or `timeout.linkerd.io/`) replace the Service's of
/// that family.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Annotations<'a> {
    pub(crate) route: Option<&'a BTreeMap<String, String>>,
    pub(crate) service: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Annotations<'a> {
    /// The map that speaks for the family with `prefix`.
    fn family(&self, prefix: &str) -> Option<&'a BTreeMap<String, String>> {
        let has = |m: &&BTreeMap<String, String>| m.keys().any(|k| k.starts_with(prefix));
        self.route.filter(has).or_else(|| self.service.filter(has))
    }
}

/// A retry policy built here. One constructor, so a new field of
/// [`RetrySpec`] is one edit.
fn retry_spec(
    attempts: u32,
    per_try_timeout: Option<Duration>,
    retry_on: Vec<RetryOn>,
    backoff: Option<Duration>,
) -> RetrySpec {
    RetrySpec {
        attempts,
        per_try_timeout,
        retry_on,
        backoff,
        // Untried hosts preferred, no budget, no response classes.
        ..RetrySpec::disabled()
    }
}

fn nonzero(d: Option<YamlDuration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero()).map(YamlDuration::get)
}

fn parse_duration(key: &str, text: &str) -> Result<Option<Duration>, String> {
    let d: YamlDuration = text.parse().map_err(|e| format!("annotation {key}: {e}"))?;
    Ok(nonzero(Some(d)))
}

/// The rule's timeouts and retries. Errors name the annotation or field.
pub(crate) fn compile(
    rule: &HttpRouteRule,
    annotations: Annotations<'_>,
) -> Result<TimeoutsAndRetries, String> {
    let timeouts = rule.timeouts.as_ref();
    let mut request = nonzero(timeouts.and_then(|t| t.request));
    let mut per_try = nonzero(timeouts.and_then(|t| t.backend_request));
    if let Some(t) = annotations
        .family("timeout.linkerd.io/")
        .and_then(|m| m.get(TIMEOUT_REQUEST))
    {
        // SPEC 3.5: the annotation overrides the field ("0s" disables).
        request = parse_duration(TIMEOUT_REQUEST, t)?;
    }

    let mut retries: Option<RetrySpec> = rule.retry.as_ref().map(|r| {
        let mut on = CONNECTION_ERRORS.to_vec();
        on.extend(
            r.codes
                .iter()
                .filter_map(|c| u16::try_from(*c).ok())
                .map(RetryOn::Status),
        );
        retry_spec(r.attempts.unwrap_or(1), per_try, on, nonzero(r.backoff))
    });
    if let Some(m) = annotations.family("retry.linkerd.io/")
        && let Some(spec) = linkerd_retries(m)?
    {
        per_try = spec.per_try_timeout.or(per_try);
        retries = Some(RetrySpec {
            per_try_timeout: per_try,
            ..spec
        });
    }

    let retries = match retries {
        Some(r) => Some(r),
        None => {
            // No retries: the only attempt is bounded by backendRequest.
            if let Some(be) = per_try {
                request = Some(request.map_or(be, |r| r.min(be)));
            }
            Some(retry_spec(0, per_try, CONNECTION_ERRORS.to_vec(), None))
        }
    };
    Ok(TimeoutsAndRetries {
        timeout: request,
        retries,
    })
}

/// Retries from Linkerd annotations; `None` when neither `http` nor `grpc`
/// conditions are given (the limit and timeout alone retry nothing).
fn linkerd_retries(m: &BTreeMap<String, String>) -> Result<Option<RetrySpec>, String> {
    let mut on: Vec<RetryOn> = Vec::new();
    if let Some(list) = m.get(RETRY_HTTP) {
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token {
                "5xx" => on.push(RetryOn::FiveXx),
                "gateway-error" => on.push(RetryOn::GatewayError),
                range => {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    let parse = |s: &str| {
                        s.trim()
                            .parse::<u16>()
                            .ok()
                            .filter(|c| (100..=599).contains(c))
                    };
                    let (Some(lo), Some(hi)) = (parse(lo), parse(hi)) else {
                        return Err(format!(
                            "annotation {RETRY_HTTP}: {token:?} is not 5xx, gateway-error, a status or a status range"
                        ));
                    };
                    if lo > hi {
                        return Err(format!("annotation {RETRY_HTTP}: empty range {token:?}"));
                    }
                    on.extend((lo..=hi).map(RetryOn::Status));
                }
            }
        }
    }
    if let Some(list) = m.get(RETRY_GRPC) {
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match RetryOn::parse(token) {
                Some(
                    c @ (RetryOn::Cancelled
                    | RetryOn::DeadlineExceeded
                    | RetryOn::Internal
                    | RetryOn::ResourceExhausted
                    | RetryOn::Unavailable),
                ) => on.push(c),
                _ => {
                    return Err(format!(
                        "annotation {RETRY_GRPC}: unknown gRPC condition {token:?}"
                    ));
                }
            }
        }
    }
    if on.is_empty() {
        return Ok(None);
    }
    // Timed-out and failed connections are retryable (LW reference/retries).
    on.extend(CONNECTION_ERRORS);
    let limit = match m.get(RETRY_LIMIT) {
        None => 1,
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("annotation {RETRY_LIMIT}: {v:?} is not a number"))?,
    };
    let per_try = match m.get(RETRY_TIMEOUT) {
        None => None,
        Some(t) => parse_duration(RETRY_TIMEOUT, t)?,
    };
    Ok(Some(retry_spec(limit, per_try, on, None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::schema::gateway_api::{HttpRouteRetry, HttpRouteTimeouts};

    fn d(s: &str) -> YamlDuration {
        s.parse().unwrap()
    }

    fn rule(
        request: Option<&str>,
        backend: Option<&str>,
        retry: Option<HttpRouteRetry>,
    ) -> HttpRouteRule {
        HttpRouteRule {
            timeouts: Some(HttpRouteTimeouts {
                request: request.map(d),
                backend_request: backend.map(d),
            }),
            retry,
            ..Default::default()
        }
    }

    #[test]
    fn no_stanza_means_no_retries_and_backend_request_bounds_the_attempt() {
        let p = compile(&rule(Some("10s"), Some("2s"), None), Annotations::default()).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_secs(2)));
        let r = p.retries.unwrap();
        assert_eq!(r.attempts, 0);
        assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
        let p = compile(&rule(Some("0s"), None, None), Annotations::default()).unwrap();
        assert_eq!(p.timeout, None, "0s disables");
        let p = compile(&rule(None, Some("3s"), None), Annotations::default()).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_stanza_retries_connection_errors_and_codes() {
        let p = compile(
            &rule(
                Some("10s"),
                Some("1s"),
                Some(HttpRouteRetry {
                    codes: vec![500, 503],
                    attempts: Some(3),
                    backoff: Some(d("100ms")),
                }),
            ),
            Annotations::default(),
        )
        .unwrap();
        assert_eq!(p.timeout, Some(Duration::from_secs(10)));
        let r = p.retries.unwrap();
        assert_eq!(r.attempts, 3);
        assert_eq!(r.per_try_timeout, Some(Duration::from_secs(1)));
        assert_eq!(r.backoff, Some(Duration::from_millis(100)));
        assert!(r.has(RetryOn::Reset) && r.has(RetryOn::ConnectFailure));
        assert_eq!(r.status_codes().collect::<Vec<_>>(), [500, 503]);
        let p = compile(
            &rule(None, None, Some(HttpRouteRetry::default())),
            Annotations::default(),
        )
        .unwrap();
        assert_eq!(p.retries.unwrap().attempts, 1);
    }

    #[test]
    fn linkerd_annotations_override_and_route_beats_service() {
        let route: BTreeMap<String, String> = [
            (RETRY_HTTP, "5xx,429,502-504"),
            (RETRY_GRPC, "unavailable"),
            (RETRY_LIMIT, "3"),
            (RETRY_TIMEOUT, "300ms"),
            (TIMEOUT_REQUEST, "5s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let service: BTreeMap<String, String> =
            [(RETRY_HTTP, "gateway-error"), (TIMEOUT_REQUEST, "1s")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let both = Annotations {
            route: Some(&route),
            service: Some(&service),
        };
        let p = compile(&rule(Some("20s"), None, None), both).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_secs(5)));
        let r = p.retries.unwrap();
        assert_eq!(r.attempts, 3);
        assert_eq!(r.per_try_timeout, Some(Duration::from_millis(300)));
        assert!(r.has(RetryOn::FiveXx) && r.has(RetryOn::Unavailable) && r.has(RetryOn::Reset));
        assert!(!r.has(RetryOn::GatewayError));
        assert_eq!(r.status_codes().collect::<Vec<_>>(), [429, 502, 503, 504]);

        let service_only = Annotations {
            route: None,
            service: Some(&service),
        };
        let p = compile(&rule(Some("20s"), None, None), service_only).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_secs(1)));
        let r = p.retries.unwrap();
        assert_eq!(r.attempts, 1, "limit defaults to 1");
        assert!(r.has(RetryOn::GatewayError));

        let bad: BTreeMap<String, String> = [(RETRY_HTTP.to_owned(), "6xx".to_owned())].into();
        let err = compile(
            &rule(None, None, None),
            Annotations {
                route: Some(&bad),
                service: None,
            },
        )
        .unwrap_err();
        assert!(err.contains("retry.linkerd.io/http"), "{err}");
    }
}
