//! Compiling one HTTP rule: its match blocks, its action (weighted
//! destinations, redirect or direct response) and its policy.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use mesh_core::host::qualify;
use mesh_core::schema::istio_networking::{
    Destination, HttpBody, HttpFaultInjection, HttpRetry, HttpRoute, Percentage, grpc_status_code,
};

use super::headers::HeaderEdits;
use super::redirect::Redirect;
use super::request_match::CompiledMatch;
use super::rewrite::Rewrite;
use crate::decision::{
    AbortSpec, AbortStatus, DelaySpec, DestinationKey, FaultSpec, Forward, MirrorSpec, RetryOn,
    RetrySpec, RouteId, RoutePolicy,
};

/// A rule error: `(field path below the rule, message)`.
pub(crate) type RuleError = (String, String);

/// A compiled HTTP rule.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    pub(crate) id: RouteId,
    /// Match blocks (ORed); empty means "every request".
    pub(crate) matches: Vec<CompiledMatch>,
    pub(crate) action: RuleAction,
    pub(crate) policy: Arc<RoutePolicy>,
}

/// What a compiled rule does.
#[derive(Clone, Debug)]
pub(crate) enum RuleAction {
    /// Weighted destinations, each a ready-made `Forward` (without its
    /// matched prefix). `cumulative[i]` is the sum of weights `0..=i`.
    Forward {
        targets: Vec<Forward>,
        cumulative: Vec<u64>,
    },
    /// A redirect.
    Redirect(Redirect),
    /// A direct response.
    Direct { status: StatusCode, body: Bytes },
}

impl CompiledRule {
    pub(crate) fn compile(
        rule: &HttpRoute,
        index: usize,
        resource: &Arc<str>,
        namespace: &str,
        root: &Arc<str>,
    ) -> Result<CompiledRule, RuleError> {
        let matches = rule
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| {
                CompiledMatch::compile(m, namespace, root)
                    .map_err(|(f, e)| (format!("match[{i}].{f}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledRule {
            id: RouteId {
                resource: Arc::clone(resource),
                rule_index: Some(index),
                rule_name: rule.name.as_deref().map(Arc::from),
            },
            matches,
            action: compile_action(rule, namespace)?,
            policy: Arc::new(compile_policy(rule, namespace)?),
        })
    }
}

fn err(field: &str, message: impl Into<String>) -> RuleError {
    (field.to_owned(), message.into())
}

fn compile_action(rule: &HttpRoute, namespace: &str) -> Result<RuleAction, RuleError> {
    if rule.delegate.is_some() {
        return Err(err(
            "delegate",
            "delegate VirtualServices are not supported",
        ));
    }
    let has_route = !rule.route.is_empty();
    match (has_route, &rule.redirect, &rule.direct_response) {
        (true, None, None) => {}
        (false, Some(r), None) => {
            return Redirect::compile(r)
                .map(RuleAction::Redirect)
                .map_err(|e| err("redirect", e));
        }
        (false, None, Some(d)) => {
            let status = u16::try_from(d.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    err(
                        "directResponse.status",
                        format!("invalid status {}", d.status),
                    )
                })?;
            let body = match &d.body {
                None => Bytes::new(),
                Some(b) => body_bytes(b).map_err(|e| err("directResponse.body", e))?,
            };
            return Ok(RuleAction::Direct { status, body });
        }
        (false, None, None) => {
            return Err(err(
                "",
                "a rule needs one of route, redirect, directResponse or delegate",
            ));
        }
        _ => {
            return Err(err("", "set only one of route, redirect or directResponse"));
        }
    }

    let rule_headers = rule.headers.as_ref();
    let rule_req = HeaderEdits::compile_opt(rule_headers.and_then(|h| h.request.as_ref()))
        .map_err(|e| err("headers.request", e))?;
    let rule_resp = HeaderEdits::compile_opt(rule_headers.and_then(|h| h.response.as_ref()))
        .map_err(|e| err("headers.response", e))?;

    let mut targets = Vec::with_capacity(rule.route.len());
    let mut cumulative = Vec::with_capacity(rule.route.len());
    let mut total: u64 = 0;
    for (i, d) in rule.route.iter().enumerate() {
        let at = |f: &str| format!("route[{i}].{f}");
        let destination =
            destination_key(&d.destination, namespace).map_err(|e| (at("destination"), e))?;
        let dh = d.headers.as_ref();
        let dest_req = HeaderEdits::compile_opt(dh.and_then(|h| h.request.as_ref()))
            .map_err(|e| (at("headers.request"), e))?;
        let dest_resp = HeaderEdits::compile_opt(dh.and_then(|h| h.response.as_ref()))
            .map_err(|e| (at("headers.response"), e))?;
        targets.push(Forward {
            destination,
            // SPEC 4.4: destination-level edits first, then the rule's.
            request_headers: Arc::new(dest_req.then(&rule_req)),
            response_headers: Arc::new(dest_resp.then(&rule_resp)),
            matched_prefix: None,
        });
        // An absent weight counts as 0 (Istio's current API). A single
        // destination takes all traffic whatever its weight, so it is given
        // weight 1 for the arithmetic (SPEC 4.3).
        let weight = if rule.route.len() == 1 {
            1
        } else {
            u64::from(d.weight.unwrap_or(0))
        };
        total += weight;
        cumulative.push(total);
    }
    if total == 0 {
        return Err(err(
            "route",
            "all weights are 0 (or absent); give at least one destination a positive weight",
        ));
    }
    Ok(RuleAction::Forward {
        targets,
        cumulative,
    })
}

/// A destination with its host qualified in the VirtualService's namespace.
pub(crate) fn destination_key(d: &Destination, namespace: &str) -> Result<DestinationKey, String> {
    let port = match d.port {
        None | Some(mesh_core::schema::istio_networking::PortSelector { number: 0 }) => None,
        Some(p) => Some(
            u16::try_from(p.number)
                .map_err(|_| format!("port.number: {} is not a port number", p.number))?,
        ),
    };
    Ok(DestinationKey {
        host: qualify(&d.host, namespace).into(),
        subset: d.subset.as_deref().map(Arc::from),
        port,
    })
}

fn compile_policy(rule: &HttpRoute, namespace: &str) -> Result<RoutePolicy, RuleError> {
    let rewrite = rule
        .rewrite
        .as_ref()
        .map(Rewrite::compile)
        .transpose()
        .map_err(|e| err("rewrite", e))?;
    let retries = rule
        .retries
        .as_ref()
        .map(compile_retries)
        .transpose()
        .map_err(|e| err("retries", e))?;
    let fault = rule
        .fault
        .as_ref()
        .map(compile_fault)
        .transpose()
        .map_err(|e| err("fault", e))?;

    let mut mirrors = Vec::new();
    if let Some(m) = &rule.mirror {
        // `mirrorPercentage`, else the deprecated integer `mirrorPercent`,
        // else 100 (SPEC 4.4).
        let percent = match (rule.mirror_percentage, rule.mirror_percent) {
            (Some(p), _) => p.value.0,
            (None, Some(p)) => f64::from(p),
            (None, None) => 100.0,
        };
        mirrors.push(MirrorSpec {
            destination: destination_key(m, namespace).map_err(|e| err("mirror", e))?,
            percent: clamp_percent(percent),
        });
    }
    for (i, m) in rule.mirrors.iter().enumerate() {
        mirrors.push(MirrorSpec {
            destination: destination_key(&m.destination, namespace)
                .map_err(|e| (format!("mirrors[{i}].destination"), e))?,
            percent: percent_or(m.percentage, 100.0),
        });
    }

    Ok(RoutePolicy {
        // `timeout: 0s` disables the timeout, as in Istio.
        timeout: rule.timeout.filter(|t| !t.is_zero()).map(|t| t.get()),
        retries,
        fault,
        mirrors,
        rewrite,
    })
}

fn compile_retries(r: &HttpRetry) -> Result<RetrySpec, String> {
    let retry_on = match &r.retry_on {
        None => RetrySpec::DEFAULT_RETRY_ON.to_vec(),
        Some(text) => text
            .split(',')
            .map(str::trim)
            .map(|t| RetryOn::parse(t).ok_or_else(|| format!("retryOn: unknown condition {t:?}")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(RetrySpec {
        attempts: r.attempts.unwrap_or(0),
        per_try_timeout: r.per_try_timeout.filter(|t| !t.is_zero()).map(|t| t.get()),
        retry_on,
        backoff: r.backoff.filter(|t| !t.is_zero()).map(|t| t.get()),
        retry_ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
        retry_remote_localities: r.retry_remote_localities,
        budget: None,
        classes: None,
    })
}

fn compile_fault(f: &HttpFaultInjection) -> Result<FaultSpec, String> {
    let delay = f
        .delay
        .as_ref()
        .map(|d| {
            if d.exponential_delay.is_some() {
                return Err("delay.exponentialDelay is not supported".to_owned());
            }
            let fixed = d
                .fixed_delay
                .ok_or_else(|| "delay.fixedDelay is required".to_owned())?;
            // `percentage`, else the deprecated `percent`, else 0 (SPEC 4.5).
            Ok(DelaySpec {
                fixed_delay: fixed.get(),
                percent: clamp_percent(d.fraction() * 100.0),
            })
        })
        .transpose()?;
    let abort = f
        .abort
        .as_ref()
        .map(|a| {
            let status = match (&a.http_status, &a.grpc_status, &a.http2_error) {
                (Some(code), None, None) => AbortStatus::Http(
                    u16::try_from(*code)
                        .ok()
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .filter(|c| (200..=599).contains(&c.as_u16()))
                        .ok_or_else(|| format!("abort.httpStatus: invalid status {code}"))?,
                ),
                (None, Some(name), None) => AbortStatus::Grpc {
                    code: grpc_status_code(name)
                        .ok_or_else(|| format!("abort.grpcStatus: unknown status {name:?}"))?,
                    name: name.as_str().into(),
                },
                (None, None, Some(_)) => return Err("abort.http2Error is not supported".to_owned()),
                _ => return Err("abort needs exactly one of httpStatus or grpcStatus".to_owned()),
            };
            Ok(AbortSpec {
                status,
                // SPEC 4.5: an absent percentage aborts nothing.
                percent: percent_or(a.percentage, 0.0),
            })
        })
        .transpose()?;
    Ok(FaultSpec { delay, abort })
}

fn percent_or(p: Option<Percentage>, absent: f64) -> f64 {
    clamp_percent(p.map_or(absent, |p| p.value.0))
}

/// A percentage within 0..=100 (NaN reads as 0).
fn clamp_percent(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) }
}

fn body_bytes(b: &HttpBody) -> Result<Bytes, String> {
    match (&b.string, &b.bytes) {
        (Some(_), Some(_)) => Err("set only one of string or bytes".into()),
        (Some(s), None) => Ok(Bytes::from(s.clone())),
        (None, Some(b64)) => decode_base64(b64)
            .map(Bytes::from)
            .ok_or_else(|| "bytes must be base64 (standard alphabet, padded)".into()),
        (None, None) => Ok(Bytes::new()),
    }
}

/// Decodes standard padded base64 (whitespace ignored), as protobuf JSON
/// writes `bytes` fields.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let t: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    let chunks = t.len() / 4;
    for (i, chunk) in t.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aA==").unwrap(), b"h");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("aGk").is_none());
        assert!(decode_base64("a=Gk").is_none());
        assert!(decode_base64("aA==aA==").is_none());
        assert!(decode_base64("a!==").is_none());
    }

    #[test]
    fn retry_tokens_parse_with_codes() {
        let r = compile_retries(&HttpRetry {
            attempts: Some(2),
            retry_on: Some("5xx,503, reset".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            r.retry_on,
            [RetryOn::FiveXx, RetryOn::Status(503), RetryOn::Reset]
        );
        assert!(r.has(RetryOn::RetriableStatusCodes));
        assert!(
            compile_retries(&HttpRetry {
                retry_on: Some("5xx,bogus".into()),
                ..Default::default()
            })
            .is_err()
        );
        let d = compile_retries(&HttpRetry {
            attempts: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(d.retry_on, RetrySpec::DEFAULT_RETRY_ON);
        assert!(d.retry_ignore_previous_hosts);
    }
}
