//! HTTPRoute matches (SPEC 3.2): path, headers, query parameters and
//! method, ANDed, and the precedence key that orders every match of every
//! rule of every route attached to one parent.
//!
//! Matching borrows from the request: the path and query are read from the
//! URI in place, header names were parsed at compile time, and regexes are
//! anchored once for a full-string match. Nothing here allocates per request.

use std::cmp::Reverse;
use std::sync::Arc;

use http::HeaderName;
use mesh_core::schema::gateway_api::{
    HttpHeaderMatch, HttpMethod, HttpRouteMatch, PathMatchType, ValueMatchType,
};
use regex::Regex;

use crate::matcher::RequestView;

/// A compiled path condition.
#[derive(Clone, Debug)]
pub(crate) enum PathCond {
    /// Byte-exact, case-sensitive.
    Exact(Box<str>),
    /// Segment-wise prefix; the configured value without its trailing `/`
    /// (`""` for `/`, which matches every path).
    Prefix(Arc<str>),
    /// RE2-style, full match (anchored at compile time).
    Regex(Regex),
}

impl PathCond {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathCond::Exact(e) => path == &**e,
            PathCond::Prefix(p) => segment_prefix(p, path),
            PathCond::Regex(re) => re.is_match(path),
        }
    }
}

/// Whether `path` starts with the segments of `prefix` (given without its
/// trailing `/`): `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
pub(crate) fn segment_prefix(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A compiled value condition (header or query parameter value).
#[derive(Clone, Debug)]
pub(crate) enum ValueCond {
    /// Exact, case-sensitive.
    Exact(Box<str>),
    /// Full-match regex.
    Regex(Regex),
}

impl ValueCond {
    fn compile(m: &HttpHeaderMatch) -> Result<ValueCond, String> {
        Ok(match m.kind.unwrap_or_default() {
            ValueMatchType::Exact => ValueCond::Exact(m.value.as_str().into()),
            ValueMatchType::RegularExpression => ValueCond::Regex(full_match(&m.value)?),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueCond::Exact(e) => value == &**e,
            ValueCond::Regex(re) => re.is_match(value),
        }
    }
}

/// Compiles `pattern` so it must match the entire value (SPEC 3.2).
fn full_match(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

/// One compiled `matches[]` entry.
#[derive(Clone, Debug)]
pub(crate) struct XMatch {
    pub(crate) path: PathCond,
    headers: Vec<(HeaderName, ValueCond)>,
    query: Vec<(Box<str>, ValueCond)>,
    method: Option<HttpMethod>,
    /// The PathPrefix with a `/` appended (for rewrites to the root).
    prefix_slash: Option<Arc<str>>,
    /// The part of [`Precedence`] this match decides.
    pub(crate) rank: MatchRank,
}

impl XMatch {
    /// The implicit match of a rule without `matches`: `PathPrefix /`.
    pub(crate) fn catch_all() -> XMatch {
        XMatch {
            path: PathCond::Prefix(Arc::from("")),
            headers: Vec::new(),
            query: Vec::new(),
            method: None,
            prefix_slash: Some(Arc::from("/")),
            rank: MatchRank::of(&PathCond::Prefix(Arc::from("")), 1, false, 0, 0),
        }
    }

    /// Compiles one match. The error is `(field below the match, message)`.
    pub(crate) fn compile(m: &HttpRouteMatch) -> Result<XMatch, (String, String)> {
        let (path, written_len) = match &m.path {
            None => (PathCond::Prefix(Arc::from("")), 1),
            Some(p) => {
                let value = p.value();
                let cond = match p.kind() {
                    PathMatchType::Exact => PathCond::Exact(value.into()),
                    PathMatchType::PathPrefix => {
                        PathCond::Prefix(Arc::from(value.trim_end_matches('/')))
                    }
                    PathMatchType::RegularExpression => PathCond::Regex(
                        full_match(value).map_err(|e| ("path.value".to_owned(), e))?,
                    ),
                };
                (cond, value.chars().count())
            }
        };
        // Only the first entry of a repeated name counts (SPEC 3.2).
        let mut headers: Vec<(HeaderName, ValueCond)> = Vec::with_capacity(m.headers.len());
        for (i, h) in m.headers.iter().enumerate() {
            let at = |f: &str| format!("headers[{i}].{f}");
            let name = HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                .map_err(|_| (at("name"), format!("invalid header name {:?}", h.name)))?;
            if headers.iter().any(|(n, _)| *n == name) {
                continue;
            }
            headers.push((name, ValueCond::compile(h).map_err(|e| (at("value"), e))?));
        }
        let mut query: Vec<(Box<str>, ValueCond)> = Vec::with_capacity(m.query_params.len());
        for (i, q) in m.query_params.iter().enumerate() {
            if query.iter().any(|(n, _)| **n == *q.name) {
                continue;
            }
            let cond = ValueCond::compile(q).map_err(|e| (format!("queryParams[{i}].value"), e))?;
            query.push((q.name.as_str().into(), cond));
        }
        let rank = MatchRank::of(
            &path,
            written_len,
            m.method.is_some(),
            headers.len(),
            query.len(),
        );
        let prefix_slash = match &path {
            PathCond::Prefix(p) => Some(Arc::from(format!("{p}/").as_str())),
            _ => None,
        };
        Ok(XMatch {
            path,
            headers,
            query,
            method: m.method,
            prefix_slash,
            rank,
        })
    }

    /// Whether the request satisfies every condition.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = self.method
            && req.method.as_str() != method_name(m)
        {
            return false;
        }
        if !self.path.matches(req.uri.path()) {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, cond)| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| cond.matches(v))
        });
        if !headers_ok {
            return false;
        }
        let query = req.uri.query().unwrap_or("");
        self.query
            .iter()
            .all(|(name, cond)| query_value(query, name).is_some_and(|v| cond.matches(v)))
    }

    /// [`XMatch::prefix`] with a `/` appended.
    pub(crate) fn prefix_slash(&self) -> Option<&Arc<str>> {
        self.prefix_slash.as_ref()
    }

    /// The configured prefix (without trailing `/`) when the path condition
    /// is a PathPrefix.
    pub(crate) fn prefix(&self) -> Option<&Arc<str>> {
        match &self.path {
            PathCond::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

/// The first value of query parameter `name` (case-sensitive; SPEC 3.2).
/// A key without `=` has the empty value. Values are compared as sent.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn method_name(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Head => "HEAD",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Connect => "CONNECT",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Trace => "TRACE",
        HttpMethod::Patch => "PATCH",
    }
}

/// What one match contributes to precedence (SPEC 3.2 items 1 to 5). Smaller
/// sorts first, and the first entry that matches a request wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MatchRank {
    /// Exact (2) over PathPrefix (1) over RegularExpression (0): upstream
    /// leaves regex implementation-specific; we rank it last, as Istio does.
    path_kind: Reverse<u8>,
    /// Characters of the configured path value (longer wins).
    path_len: Reverse<usize>,
    /// Has a method condition.
    method: Reverse<bool>,
    /// Number of header conditions.
    headers: Reverse<usize>,
    /// Number of query parameter conditions.
    query: Reverse<usize>,
}

impl MatchRank {
    fn of(path: &PathCond, len: usize, method: bool, headers: usize, query: usize) -> MatchRank {
        let kind = match path {
            PathCond::Exact(_) => 2,
            PathCond::Prefix(_) => 1,
            PathCond::Regex(_) => 0,
        };
        MatchRank {
            path_kind: Reverse(kind),
            path_len: Reverse(len),
            method: Reverse(method),
            headers: Reverse(headers),
            query: Reverse(query),
        }
    }
}

/// The full precedence of one (route, rule, match) among everything
/// attached to a parent: the match's rank, then the route's age rank
/// (oldest creation time, then `namespace/name`), then rule and match
/// position (SPEC 3.2 items 6 and 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    pub(crate) rank: MatchRank,
    pub(crate) route: usize,
    pub(crate) rule: usize,
    pub(crate) matched: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn view<'a>(
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
        labels: &'a BTreeMap<String, String>,
    ) -> RequestView<'a> {
        RequestView {
            method,
            uri,
            headers,
            authority: "api",
            scheme: "http",
            port: None,
            gateway: "mesh",
            source_namespace: "default",
            source_labels: labels,
        }
    }

    fn path_match(kind: PathMatchType, value: &str) -> XMatch {
        XMatch::compile(&HttpRouteMatch {
            path: Some(mesh_core::schema::gateway_api::HttpPathMatch {
                kind: Some(kind),
                value: Some(value.into()),
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn hits(m: &XMatch, target: &str) -> bool {
        let uri: http::Uri = target.parse().unwrap();
        let (method, headers, labels) =
            (http::Method::GET, http::HeaderMap::new(), BTreeMap::new());
        m.matches(&view(&method, &uri, &headers, &labels))
    }

    #[test]
    fn prefix_is_segment_aware_and_ignores_a_trailing_slash() {
        let m = path_match(PathMatchType::PathPrefix, "/api");
        assert!(hits(&m, "/api"));
        assert!(hits(&m, "/api/"));
        assert!(hits(&m, "/api/x?y=1"));
        assert!(!hits(&m, "/apix"));
        assert!(!hits(&m, "/Api"));
        let m = path_match(PathMatchType::PathPrefix, "/v2/");
        assert!(hits(&m, "/v2"));
        assert!(hits(&m, "/v2/x"));
        assert!(!hits(&m, "/v2example"));
        let root = path_match(PathMatchType::PathPrefix, "/");
        assert!(hits(&root, "/") && hits(&root, "/anything/at/all"));
    }

    #[test]
    fn exact_is_byte_exact_and_regex_is_a_full_match() {
        let m = path_match(PathMatchType::Exact, "/one");
        assert!(hits(&m, "/one?x=1"));
        assert!(!hits(&m, "/one/"));
        assert!(!hits(&m, "/One"));
        let m = path_match(PathMatchType::RegularExpression, "/v[0-9]+");
        assert!(hits(&m, "/v12"));
        assert!(!hits(&m, "/v12/x"));
        assert!(!hits(&m, "/x/v12"));
    }

    #[test]
    fn headers_query_and_method_are_anded() {
        let yaml_match = HttpRouteMatch {
            headers: vec![
                HttpHeaderMatch {
                    kind: None,
                    name: "Version".into(),
                    value: "two".into(),
                },
                HttpHeaderMatch {
                    kind: Some(ValueMatchType::RegularExpression),
                    name: "color".into(),
                    value: "or.*e".into(),
                },
                // A repeated name: only the first counts.
                HttpHeaderMatch {
                    kind: None,
                    name: "version".into(),
                    value: "three".into(),
                },
            ],
            query_params: vec![HttpHeaderMatch {
                kind: None,
                name: "animal".into(),
                value: "whale".into(),
            }],
            method: Some(HttpMethod::Post),
            ..Default::default()
        };
        let m = XMatch::compile(&yaml_match).unwrap();
        let labels = BTreeMap::new();
        let run = |method: http::Method, target: &str, hs: &[(&str, &str)]| {
            let uri: http::Uri = target.parse().unwrap();
            let mut headers = http::HeaderMap::new();
            for (k, v) in hs {
                headers.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m.matches(&view(&method, &uri, &headers, &labels))
        };
        let good = [("version", "two"), ("color", "orange")];
        assert!(run(http::Method::POST, "/?animal=whale", &good));
        assert!(run(
            http::Method::POST,
            "/x?a=1&animal=whale&animal=dolphin",
            &good
        ));
        assert!(!run(http::Method::GET, "/?animal=whale", &good));
        assert!(!run(http::Method::POST, "/?ANIMAL=whale", &good));
        assert!(!run(
            http::Method::POST,
            "/?animal=dolphin&animal=whale",
            &good
        ));
        assert!(!run(
            http::Method::POST,
            "/?animal=whale",
            &[("version", "two")]
        ));
        assert!(!run(
            http::Method::POST,
            "/?animal=whale",
            &[("version", "Two"), ("color", "orange")]
        ));
        // Header names are case-insensitive.
        assert!(run(
            http::Method::POST,
            "/?animal=whale",
            &[("VERSION", "two"), ("Color", "ore")]
        ));
        assert_eq!(m.rank.headers, Reverse(2));
    }

    #[test]
    fn ranks_order_exact_prefix_length_method_headers_query() {
        let exact = path_match(PathMatchType::Exact, "/a").rank;
        let long = path_match(PathMatchType::PathPrefix, "/a/b").rank;
        let short = path_match(PathMatchType::PathPrefix, "/a").rank;
        let regex = path_match(PathMatchType::RegularExpression, "/a/b/c/d").rank;
        assert!(exact < long && long < short && short < regex);
        let with = |method: bool, headers: usize, query: usize| {
            let m = HttpRouteMatch {
                method: method.then_some(HttpMethod::Get),
                headers: (0..headers)
                    .map(|i| HttpHeaderMatch {
                        kind: None,
                        name: format!("h{i}"),
                        value: "v".into(),
                    })
                    .collect(),
                query_params: (0..query)
                    .map(|i| HttpHeaderMatch {
                        kind: None,
                        name: format!("q{i}"),
                        value: "v".into(),
                    })
                    .collect(),
                ..Default::default()
            };
            XMatch::compile(&m).unwrap().rank
        };
        assert!(with(true, 0, 0) < with(false, 3, 3), "method beats headers");
        assert!(with(false, 2, 0) < with(false, 1, 3), "headers beat query");
        assert!(with(false, 0, 2) < with(false, 0, 1));
        assert_eq!(with(false, 0, 0), XMatch::catch_all().rank);
    }
}
