//! One compiled `match` block of an HTTP rule and its evaluation against a
//! request (SPEC 4.2). Conditions inside a block are ANDed; the rule ORs its
//! blocks.
//!
//! Evaluation borrows from the request; it allocates only when a header has
//! several values (they are joined with `,` as Envoy does) or a value is not
//! UTF-8 (compared lossily).

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderName;
use mesh_core::schema::istio_networking::HttpMatchRequest;

use super::RequestView;
use super::string_match::{PresenceForm, StrMatch};

/// Where a `headers` / `withoutHeaders` key reads its value.
#[derive(Clone, Debug)]
pub(crate) enum HeaderKey {
    /// `:method`.
    Method,
    /// `:authority` (and `host`, which Envoy stores as `:authority`).
    Authority,
    /// `:path`: path and query, as on the wire.
    Path,
    /// `:scheme`.
    Scheme,
    /// A regular header.
    Name(HeaderName),
    /// `@request.auth.claims...`: validated JWT claims, which this stage does
    /// not see; treated as a missing header.
    Claim,
}

impl HeaderKey {
    fn compile(key: &str) -> Result<HeaderKey, String> {
        let lower = key.to_ascii_lowercase();
        Ok(match lower.as_str() {
            ":method" => HeaderKey::Method,
            ":authority" | "host" => HeaderKey::Authority,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            k if k.starts_with("@request.auth.claims") => HeaderKey::Claim,
            k if k.starts_with(':') => return Err(format!("unknown pseudo-header {key}")),
            k => HeaderKey::Name(
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("invalid header name {key:?}"))?,
            ),
        })
    }

    /// The request's value for this key, `None` when absent.
    fn value<'r>(&self, req: &RequestView<'r>) -> Option<Cow<'r, str>> {
        match self {
            HeaderKey::Method => Some(Cow::Borrowed(req.method.as_str())),
            HeaderKey::Authority => Some(Cow::Borrowed(req.authority)),
            HeaderKey::Path => Some(Cow::Borrowed(
                req.uri
                    .path_and_query()
                    .map_or_else(|| req.uri.path(), |pq| pq.as_str()),
            )),
            HeaderKey::Scheme => Some(Cow::Borrowed(req.scheme)),
            HeaderKey::Name(name) => {
                let mut values = req.headers.get_all(name).iter();
                let first = values.next()?;
                let Some(second) = values.next() else {
                    return Some(String::from_utf8_lossy(first.as_bytes()));
                };
                let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
                for v in std::iter::once(second).chain(values) {
                    joined.push(',');
                    joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                Some(Cow::Owned(joined))
            }
            HeaderKey::Claim => None,
        }
    }
}

/// A compiled match block.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledMatch {
    uri: Option<StrMatch>,
    /// The prefix a rewrite replaces when this block matched: the `uri`
    /// prefix, `/` without a `uri` condition, `None` for exact/regex.
    pub(crate) matched_prefix: Option<Arc<str>>,
    scheme: Option<StrMatch>,
    method: Option<StrMatch>,
    authority: Option<StrMatch>,
    headers: Vec<(HeaderKey, StrMatch)>,
    without_headers: Vec<(HeaderKey, StrMatch)>,
    query_params: Vec<(Box<str>, StrMatch)>,
    port: Option<u16>,
    source_labels: Vec<(Box<str>, Box<str>)>,
    source_namespace: Option<Box<str>>,
    /// Normalized gateway names; empty means the VirtualService's list,
    /// which [`super::CompiledVirtualService::applies_to`] already checked.
    gateways: Vec<Box<str>>,
}

/// The `/` prefix of a block without a `uri` condition.
pub(crate) fn root_prefix() -> Arc<str> {
    Arc::from("/")
}

impl CompiledMatch {
    /// Compiles a block; errors are `(field path, message)`.
    pub(crate) fn compile(
        m: &HttpMatchRequest,
        namespace: &str,
        root: &Arc<str>,
    ) -> Result<CompiledMatch, (String, String)> {
        let ignore_case = m.ignore_uri_case.unwrap_or(false);
        let one = |field: &str, sm: &Option<_>, nocase: bool| {
            sm.as_ref()
                .map(|sm| StrMatch::compile(sm, PresenceForm::None, nocase))
                .transpose()
                .map_err(|e| (field.to_owned(), e))
        };
        let uri = one("uri", &m.uri, ignore_case)?;
        let matched_prefix = match &uri {
            None => Some(Arc::clone(root)),
            Some(u) => u.prefix().map(Arc::from),
        };
        let header_list = |field: &str, map: &std::collections::BTreeMap<_, _>| {
            map.iter()
                .map(|(key, sm): (&String, _)| {
                    let path = || format!("{field}.{key}");
                    let k = HeaderKey::compile(key).map_err(|e| (path(), e))?;
                    let sm = StrMatch::compile(sm, PresenceForm::Header, false)
                        .map_err(|e| (path(), e))?;
                    Ok((k, sm))
                })
                .collect::<Result<Vec<_>, (String, String)>>()
        };
        let query_params = m
            .query_params
            .iter()
            .map(|(key, sm)| {
                StrMatch::compile(sm, PresenceForm::Query, false)
                    .map(|sm| (key.as_str().into(), sm))
                    .map_err(|e| (format!("queryParams.{key}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let port = m
            .port
            .map(|p| {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ("port".to_owned(), format!("{p} is not a port number")))
            })
            .transpose()?;
        Ok(CompiledMatch {
            uri,
            matched_prefix,
            scheme: one("scheme", &m.scheme, false)?,
            method: one("method", &m.method, false)?,
            authority: one("authority", &m.authority, false)?,
            headers: header_list("headers", &m.headers)?,
            without_headers: header_list("withoutHeaders", &m.without_headers)?,
            query_params,
            port,
            source_labels: m
                .source_labels
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            source_namespace: m.source_namespace.as_deref().map(Into::into),
            gateways: m
                .gateways
                .iter()
                .map(|g| normalize_gateway(g, namespace))
                .collect(),
        })
    }

    /// Whether `req` satisfies every condition of the block.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        // Proxy selectors first: they are cheap and usually decisive.
        if !self.gateways.is_empty() && !self.gateways.iter().any(|g| **g == *req.gateway) {
            return false;
        }
        if let Some(ns) = &self.source_namespace
            && **ns != *req.source_namespace
        {
            return false;
        }
        if !self.source_labels.iter().all(|(k, v)| {
            req.source_labels
                .get(&**k)
                .is_some_and(|have| **have == **v)
        }) {
            return false;
        }
        if let Some(port) = self.port
            && req.port != Some(port)
        {
            return false;
        }
        if let Some(m) = &self.uri
            && !m.matches(req.uri.path())
        {
            return false;
        }
        if let Some(m) = &self.method
            && !m.matches(req.method.as_str())
        {
            return false;
        }
        if let Some(m) = &self.scheme
            && !m.matches(req.scheme)
        {
            return false;
        }
        if let Some(m) = &self.authority
            && !m.matches(req.authority)
        {
            return false;
        }
        let headers_ok = self
            .headers
            .iter()
            .all(|(key, m)| key.value(req).is_some_and(|v| m.matches(&v)));
        if !headers_ok {
            return false;
        }
        let without_ok = self.without_headers.iter().all(|(key, m)| {
            let value = key.value(req);
            if m.is_presence() {
                // The presence form inverted: only an absent header matches.
                value.is_none()
            } else {
                // A missing header reads as "" before the inversion (SPEC 4.2).
                !m.matches(value.as_deref().unwrap_or(""))
            }
        });
        if !without_ok {
            return false;
        }
        self.query_params
            .iter()
            .all(|(key, m)| first_query_value(req.uri.query(), key).is_some_and(|v| m.matches(v)))
    }
}

/// The value of the first `key` parameter in `query` (raw, not
/// percent-decoded); a key without `=` has the value "".
pub(crate) fn first_query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// A gateway reference as `mesh` or `namespace/name` (a bare name is read
/// in the VirtualService's namespace).
pub(crate) fn normalize_gateway(gateway: &str, namespace: &str) -> Box<str> {
    if gateway == "mesh" || gateway.contains('/') {
        gateway.into()
    } else {
        format!("{namespace}/{gateway}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_take_the_first_occurrence() {
        let q = Some("a=1&b&a=2&c=");
        assert_eq!(first_query_value(q, "a"), Some("1"));
        assert_eq!(first_query_value(q, "b"), Some(""));
        assert_eq!(first_query_value(q, "c"), Some(""));
        assert_eq!(first_query_value(q, "d"), None);
        assert_eq!(first_query_value(None, "a"), None);
    }

    #[test]
    fn gateway_names_are_qualified() {
        assert_eq!(&*normalize_gateway("mesh", "ns"), "mesh");
        assert_eq!(&*normalize_gateway("gw", "ns"), "ns/gw");
        assert_eq!(&*normalize_gateway("other/gw", "ns"), "other/gw");
    }
}
