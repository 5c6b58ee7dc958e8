//! HTTPRoute filters (SPEC 3.4), compiled into the pieces the route stage
//! already knows how to apply: [`HeaderEdits`] for RequestHeaderModifier
//! and ResponseHeaderModifier, [`Rewrite`] for URLRewrite, [`MirrorSpec`]
//! for RequestMirror, and a Gateway API redirect ([`XRedirect`]) whose
//! status and port rules differ from Istio's (302 by default; the port of
//! `Location` follows SPEC 3.4).
//!
//! Filters apply in list order. Header edits of consecutive modifiers are
//! merged with [`HeaderEdits::then`], which behaves like applying them in
//! turn; a URLRewrite `hostname` listed after a modifier that set `Host`
//! replaces it (the route stage applies the rewrite's host first and a
//! header edit's host last, so the compiler drops the earlier edit).

use std::collections::BTreeMap;

use http::{HeaderValue, StatusCode};
use mesh_core::host::{qualify, strip_port};
use mesh_core::schema::gateway_api::{
    BackendObjectReference, HeaderModifier, HttpFilterType, HttpRouteFilter, PathModifier,
    PathModifierType, RedirectScheme, RequestMirror, RequestRedirect,
};
use mesh_core::schema::istio_networking::HeaderOperations;

use crate::decision::{DestinationKey, MirrorSpec};
use crate::matcher::RequestView;
use crate::matcher::headers::HeaderEdits;
use crate::matcher::rewrite::{Rewrite, UriRewrite};

/// How a URLRewrite or RequestRedirect changes the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathEdit {
    /// The path is kept.
    Keep,
    /// `ReplaceFullPath`.
    Full(Box<str>),
    /// `ReplacePrefixMatch`, holding the replacement without its trailing
    /// `/` (segment semantics: the rest of the path keeps its own `/`).
    Prefix(Box<str>),
}

impl PathEdit {
    fn compile(p: Option<&PathModifier>) -> Result<PathEdit, String> {
        let Some(p) = p else {
            return Ok(PathEdit::Keep);
        };
        Ok(match p.kind {
            PathModifierType::ReplaceFullPath => PathEdit::Full(
                p.replace_full_path
                    .as_deref()
                    .ok_or("ReplaceFullPath needs replaceFullPath")?
                    .into(),
            ),
            PathModifierType::ReplacePrefixMatch => PathEdit::Prefix(
                p.replace_prefix_match
                    .as_deref()
                    .ok_or("ReplacePrefixMatch needs replacePrefixMatch")?
                    .trim_end_matches('/')
                    .into(),
            ),
        })
    }

    /// The new path for `path`, which matched the PathPrefix `prefix`
    /// (given without its trailing `/`; `None` when the match was not a
    /// prefix, and then a prefix edit replaces the whole path). Never
    /// empty, and never with a doubled `/` at the seam.
    pub(crate) fn apply<'p>(
        &'p self,
        prefix: Option<&str>,
        path: &'p str,
    ) -> std::borrow::Cow<'p, str> {
        use std::borrow::Cow;
        match self {
            PathEdit::Keep => Cow::Borrowed(path),
            PathEdit::Full(p) => Cow::Borrowed(p),
            PathEdit::Prefix(with) => {
                let rest = prefix.and_then(|p| path.strip_prefix(p)).unwrap_or("");
                let joined = format!("{with}{rest}");
                if joined.is_empty() {
                    Cow::Borrowed("/")
                } else {
                    Cow::Owned(joined)
                }
            }
        }
    }
}

/// A compiled `RequestRedirect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct XRedirect {
    pub(crate) status: StatusCode,
    scheme: Option<&'static str>,
    hostname: Option<Box<str>>,
    pub(crate) path: PathEdit,
    port: Option<u16>,
}

impl XRedirect {
    fn compile(r: &RequestRedirect) -> Result<XRedirect, String> {
        let code = r.status_code.unwrap_or(302);
        let status = match code {
            301 | 302 | 303 | 307 | 308 => u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("statusCode: {code} is not a redirect status"))?,
            _ => return Err(format!("statusCode: {code} is not a redirect status")),
        };
        let port = r
            .port
            .map(|p| {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port: {p} is not a port number"))
            })
            .transpose()?;
        if let Some(h) = &r.hostname
            && HeaderValue::from_str(h).is_err()
        {
            return Err(format!("hostname: invalid host {h:?}"));
        }
        Ok(XRedirect {
            status,
            scheme: r.scheme.map(|s| match s {
                RedirectScheme::Http => "http",
                RedirectScheme::Https => "https",
            }),
            hostname: r.hostname.as_deref().map(Into::into),
            path: PathEdit::compile(r.path.as_ref())?,
            port,
        })
    }

    /// The `Location` for `req` (SPEC 3.4): scheme and host from the filter
    /// or the request; port from the filter, else the well-known port of a
    /// configured scheme, else the port the request came in on, and left
    /// out when it is the default of the resulting scheme; the path edited
    /// and the query kept. A location that cannot be a header value falls
    /// back to `/`.
    pub(crate) fn location(&self, req: &RequestView<'_>, prefix: Option<&str>) -> HeaderValue {
        let req_scheme = if req.scheme.is_empty() {
            "http"
        } else {
            req.scheme
        };
        let scheme = self.scheme.unwrap_or(req_scheme);
        let host = self
            .hostname
            .as_deref()
            .unwrap_or_else(|| strip_port(req.authority));
        let port = self
            .port
            .or_else(|| self.scheme.and_then(default_port))
            .or(req.port)
            .or_else(|| authority_port(req.authority))
            .or_else(|| default_port(req_scheme));
        let path = self.path.apply(prefix, req.uri.path());
        let mut loc = String::with_capacity(16 + host.len() + path.len());
        loc.push_str(scheme);
        loc.push_str("://");
        loc.push_str(host);
        if let Some(p) = port
            && default_port(scheme) != Some(p)
        {
            loc.push(':');
            loc.push_str(&p.to_string());
        }
        loc.push_str(&path);
        if let Some(q) = req.uri.query() {
            loc.push('?');
            loc.push_str(q);
        }
        HeaderValue::from_str(&loc).unwrap_or_else(|_| HeaderValue::from_static("/"))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

fn authority_port(authority: &str) -> Option<u16> {
    let host = strip_port(authority);
    authority.get(host.len()..)?.strip_prefix(':')?.parse().ok()
}

/// The compiled filters of a rule (or of a rule plus one backend's own).
#[derive(Clone, Debug, Default)]
pub(crate) struct Filters {
    pub(crate) request_headers: HeaderEdits,
    pub(crate) response_headers: HeaderEdits,
    /// URLRewrite: new Host and path edit.
    pub(crate) rewrite_host: Option<HeaderValue>,
    pub(crate) rewrite_path: Option<PathEdit>,
    pub(crate) redirect: Option<XRedirect>,
    pub(crate) mirrors: Vec<MirrorSpec>,
    /// A filter this mesh cannot apply (an ExtensionRef): requests hitting
    /// the rule get 500 (SPEC 3.4).
    pub(crate) unresolved: Option<String>,
}

impl Filters {
    /// Compiles `filters` after what is already in `self`, in list order.
    /// `namespace` qualifies mirror backends. Errors are
    /// `(field below the list, message)`.
    pub(crate) fn push(
        &mut self,
        filters: &[HttpRouteFilter],
        namespace: &str,
    ) -> Result<(), (String, String)> {
        for (i, f) in filters.iter().enumerate() {
            let at = |field: &str, e: String| (format!("[{i}].{field}"), e);
            match f.kind {
                HttpFilterType::RequestHeaderModifier => {
                    let m = f.request_header_modifier.as_ref().ok_or_else(|| {
                        at("requestHeaderModifier", "the block is missing".into())
                    })?;
                    let edits = header_edits(m).map_err(|e| at("requestHeaderModifier", e))?;
                    self.request_headers = self.request_headers.then(&edits);
                }
                HttpFilterType::ResponseHeaderModifier => {
                    let m = f.response_header_modifier.as_ref().ok_or_else(|| {
                        at("responseHeaderModifier", "the block is missing".into())
                    })?;
                    let edits = header_edits(m).map_err(|e| at("responseHeaderModifier", e))?;
                    self.response_headers = self.response_headers.then(&edits);
                }
                HttpFilterType::UrlRewrite => {
                    let r = f
                        .url_rewrite
                        .as_ref()
                        .ok_or_else(|| at("urlRewrite", "the block is missing".into()))?;
                    if let Some(h) = &r.hostname {
                        let v = HeaderValue::from_str(h).map_err(|_| {
                            at("urlRewrite.hostname", format!("invalid host {h:?}"))
                        })?;
                        self.rewrite_host = Some(v);
                        // A later rewrite of the host beats an earlier
                        // header edit of it.
                        self.request_headers.authority_override = None;
                    }
                    if r.path.is_some() {
                        self.rewrite_path = Some(
                            PathEdit::compile(r.path.as_ref())
                                .map_err(|e| at("urlRewrite.path", e))?,
                        );
                    }
                }
                HttpFilterType::RequestRedirect => {
                    let r = f
                        .request_redirect
                        .as_ref()
                        .ok_or_else(|| at("requestRedirect", "the block is missing".into()))?;
                    self.redirect =
                        Some(XRedirect::compile(r).map_err(|e| at("requestRedirect", e))?);
                }
                HttpFilterType::RequestMirror => {
                    let m = f
                        .request_mirror
                        .as_ref()
                        .ok_or_else(|| at("requestMirror", "the block is missing".into()))?;
                    self.mirrors
                        .push(mirror(m, namespace).map_err(|e| at("requestMirror", e))?);
                }
                HttpFilterType::ExtensionRef => {
                    let name = f
                        .extension_ref
                        .as_ref()
                        .map_or_else(String::new, |r| format!(" {}/{}", r.kind, r.name));
                    self.unresolved = Some(format!(
                        "filters[{i}]: ExtensionRef{name} cannot be resolved by this mesh"
                    ));
                }
                // Out of scope (SPEC 3.4): accepted and not applied.
                HttpFilterType::Cors | HttpFilterType::ExternalAuth => {}
            }
        }
        Ok(())
    }

    /// The URLRewrite as the route stage's [`Rewrite`], with the path edit
    /// expressed for [`Rewrite::apply`]'s raw prefix replacement (see
    /// [`RewriteMode`]).
    pub(crate) fn rewrite(&self) -> (Option<Rewrite>, RewriteMode) {
        let (uri, mode) = match &self.rewrite_path {
            None | Some(PathEdit::Keep) => (None, RewriteMode::None),
            Some(PathEdit::Full(p)) => (Some(UriRewrite::Replace(p.clone())), RewriteMode::Full),
            // `/foo` -> `/xyz` is a raw swap of `/foo` for `/xyz` in front of
            // a rest that is empty or starts with `/`. An empty replacement
            // becomes `/` swapped for `/foo/` (or for `/foo` when nothing
            // follows), so the result is never empty.
            Some(PathEdit::Prefix(with)) if with.is_empty() => (
                Some(UriRewrite::Replace("/".into())),
                RewriteMode::PrefixToRoot,
            ),
            Some(PathEdit::Prefix(with)) => {
                (Some(UriRewrite::Replace(with.clone())), RewriteMode::Prefix)
            }
        };
        if uri.is_none() && self.rewrite_host.is_none() {
            return (None, mode);
        }
        (
            Some(Rewrite {
                uri,
                authority: self.rewrite_host.clone(),
            }),
            mode,
        )
    }
}

/// How the `matched_prefix` of a forward is chosen for the rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RewriteMode {
    /// No path rewrite: the matched prefix is informative only.
    None,
    /// ReplaceFullPath: no prefix, the whole path is replaced.
    Full,
    /// ReplacePrefixMatch with a non-empty replacement: the configured
    /// prefix without its trailing `/`.
    Prefix,
    /// ReplacePrefixMatch with an empty (or `/`) replacement: the prefix
    /// with a `/` appended when more path follows it.
    PrefixToRoot,
}

fn header_edits(m: &HeaderModifier) -> Result<HeaderEdits, String> {
    let map = |list: &[mesh_core::schema::gateway_api::HttpHeader]| -> BTreeMap<String, String> {
        list.iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    };
    HeaderEdits::compile(&HeaderOperations {
        set: map(&m.set),
        add: map(&m.add),
        remove: m.remove.clone(),
    })
}

/// A mirror destination: the backend Service (qualified in the route's
/// namespace unless the reference names one) and its port; `percent`, or
/// `fraction` (denominator 100 by default), or 100 %.
fn mirror(m: &RequestMirror, namespace: &str) -> Result<MirrorSpec, String> {
    let percent = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => return Err("set either percent or fraction, not both".into()),
        (Some(p), None) => f64::from(p.min(100)),
        (None, Some(f)) => {
            let den = f.denominator.unwrap_or(100);
            if den == 0 {
                return Err("fraction.denominator must be greater than 0".into());
            }
            (f64::from(f.numerator) * 100.0 / f64::from(den)).clamp(0.0, 100.0)
        }
        (None, None) => 100.0,
    };
    Ok(MirrorSpec {
        destination: backend_key(&m.backend_ref, namespace)?,
        percent,
    })
}

fn backend_key(b: &BackendObjectReference, namespace: &str) -> Result<DestinationKey, String> {
    let ns = b.namespace.as_deref().unwrap_or(namespace);
    let port = b
        .port
        .map(|p| u16::try_from(p).map_err(|_| format!("backendRef.port: {p} is not a port")))
        .transpose()?;
    Ok(DestinationKey {
        host: qualify(&b.name, ns).into(),
        subset: None,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn req_view<'a>(
        uri: &'a http::Uri,
        authority: &'a str,
        scheme: &'a str,
        port: Option<u16>,
        parts: &'a (http::Method, http::HeaderMap, BTreeMap<String, String>),
    ) -> RequestView<'a> {
        RequestView {
            method: &parts.0,
            uri,
            headers: &parts.1,
            authority,
            scheme,
            port,
            gateway: "mesh",
            source_namespace: "default",
            source_labels: &parts.2,
        }
    }

    fn redirect(yaml: RequestRedirect) -> XRedirect {
        XRedirect::compile(&yaml).unwrap()
    }

    fn location(
        r: &XRedirect,
        target: &str,
        authority: &str,
        scheme: &str,
        port: Option<u16>,
    ) -> String {
        let parts = (http::Method::GET, http::HeaderMap::new(), BTreeMap::new());
        let uri: http::Uri = target.parse().unwrap();
        let v = req_view(&uri, authority, scheme, port, &parts);
        r.location(&v, Some("/foo")).to_str().unwrap().to_owned()
    }

    #[test]
    fn redirect_defaults_to_302_and_keeps_host_path_and_query() {
        let r = redirect(RequestRedirect {
            hostname: Some("example.org".into()),
            ..Default::default()
        });
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            location(&r, "/foo/bar?x=1", "api:8080", "http", Some(8080)),
            "http://example.org:8080/foo/bar?x=1"
        );
        let r = redirect(RequestRedirect {
            status_code: Some(301),
            ..Default::default()
        });
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(location(&r, "/a", "api", "http", None), "http://api/a");
        assert!(
            XRedirect::compile(&RequestRedirect {
                status_code: Some(304),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn redirect_port_rules() {
        // A scheme without a port: that scheme's well-known port, omitted.
        let r = redirect(RequestRedirect {
            scheme: Some(RedirectScheme::Https),
            ..Default::default()
        });
        assert_eq!(
            location(&r, "/p", "api.example:8080", "http", Some(8080)),
            "https://api.example/p"
        );
        // An explicit port wins and shows unless it is the scheme default.
        let r = redirect(RequestRedirect {
            scheme: Some(RedirectScheme::Https),
            port: Some(8443),
            ..Default::default()
        });
        assert_eq!(
            location(&r, "/p", "api", "http", None),
            "https://api:8443/p"
        );
        let r = redirect(RequestRedirect {
            scheme: Some(RedirectScheme::Http),
            port: Some(80),
            ..Default::default()
        });
        assert_eq!(
            location(&r, "/p", "api:9000", "https", None),
            "http://api/p"
        );
        // Neither: the listener (request) port, omitted when default.
        let r = redirect(RequestRedirect {
            hostname: Some("other".into()),
            ..Default::default()
        });
        assert_eq!(
            location(&r, "/p", "api:80", "http", Some(80)),
            "http://other/p"
        );
        assert_eq!(
            location(&r, "/p", "api", "http", Some(9080)),
            "http://other:9080/p"
        );
        assert_eq!(
            location(&r, "/p", "api:443", "https", None),
            "https://other/p"
        );
        // A port alone keeps the request's scheme.
        let r = redirect(RequestRedirect {
            port: Some(8081),
            ..Default::default()
        });
        assert_eq!(
            location(&r, "/p", "api:8080", "http", Some(8080)),
            "http://api:8081/p"
        );
    }

    #[test]
    fn redirect_paths() {
        let full = redirect(RequestRedirect {
            path: Some(PathModifier {
                kind: PathModifierType::ReplaceFullPath,
                replace_full_path: Some("/new".into()),
                replace_prefix_match: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            location(&full, "/foo/bar?q=2", "h", "http", None),
            "http://h/new?q=2"
        );
        let prefix = redirect(RequestRedirect {
            path: Some(PathModifier {
                kind: PathModifierType::ReplacePrefixMatch,
                replace_full_path: None,
                replace_prefix_match: Some("/xyz/".into()),
            }),
            ..Default::default()
        });
        assert_eq!(
            location(&prefix, "/foo/bar", "h", "http", None),
            "http://h/xyz/bar"
        );
        assert_eq!(location(&prefix, "/foo", "h", "http", None), "http://h/xyz");
    }

    #[test]
    fn prefix_edits_follow_segment_semantics() {
        // SPEC 3.4's table: (match prefix, replacement, request, result).
        let cases = [
            ("/foo", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz", "/foo", "/xyz"),
            ("/foo", "/xyz", "/foo/", "/xyz/"),
            ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "", "/foo/bar", "/bar"),
            ("/foo", "", "/foo", "/"),
            ("/foo", "/", "/foo/", "/"),
            ("/foo", "/", "/foo", "/"),
            ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
            ("/", "/api", "/x", "/api/x"),
        ];
        for (prefix, with, path, want) in cases {
            let edit = PathEdit::Prefix(with.trim_end_matches('/').into());
            let p = prefix.trim_end_matches('/');
            assert_eq!(edit.apply(Some(p), path), want, "{prefix} {with} {path}");
            // The same through the route stage's raw rewrite.
            let filters = Filters {
                rewrite_path: Some(edit.clone()),
                ..Default::default()
            };
            let (rewrite, mode) = filters.rewrite();
            let matched = match mode {
                RewriteMode::PrefixToRoot if path.len() > p.len() => format!("{p}/"),
                _ => p.to_owned(),
            };
            let uri: http::Uri = format!("{path}?k=v").parse().unwrap();
            let out = rewrite.unwrap().apply(Some(&matched), &uri);
            assert_eq!(out.path(), want, "raw: {prefix} {with} {path}");
            assert_eq!(out.query(), Some("k=v"));
        }
    }

    #[test]
    fn filters_apply_in_order() {
        let yaml = r#"
- type: RequestHeaderModifier
  requestHeaderModifier:
    set: [{name: Host, value: first.example}, {name: x-a, value: "1"}]
    add: [{name: x-b, value: b}]
- type: URLRewrite
  urlRewrite: {hostname: second.example}
- type: RequestMirror
  requestMirror:
    backendRef: {name: shadow, port: 8080}
    fraction: {numerator: 1, denominator: 4}
- type: RequestMirror
  requestMirror:
    backendRef: {name: other, namespace: prod, port: 80}
"#;
        let list = filter_list(yaml);
        let mut f = Filters::default();
        f.push(&list, "ns").unwrap();
        assert_eq!(f.request_headers.authority_override, None);
        assert_eq!(f.rewrite_host.as_ref().unwrap(), "second.example");
        assert_eq!(f.request_headers.set.len(), 1, "x-a");
        assert_eq!(f.request_headers.add.len(), 1);
        assert_eq!(f.mirrors.len(), 2);
        assert_eq!(
            &*f.mirrors[0].destination.host,
            "shadow.ns.svc.cluster.local"
        );
        assert_eq!(f.mirrors[0].destination.port, Some(8080));
        assert!((f.mirrors[0].percent - 25.0).abs() < 1e-9);
        assert_eq!(
            &*f.mirrors[1].destination.host,
            "other.prod.svc.cluster.local"
        );
        assert!((f.mirrors[1].percent - 100.0).abs() < 1e-9);
    }

    /// The filter list of a one-rule HTTPRoute whose `filters:` is `yaml`.
    fn filter_list(yaml: &str) -> Vec<HttpRouteFilter> {
        let doc = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  rules:\n  - filters:\n{}",
            yaml.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let loaded =
            mesh_core::load::load_str("f.yaml", &doc, &mesh_core::load::LoadOptions::default());
        let first = loaded.resources.first();
        match &first
            .unwrap_or_else(|| panic!("{doc}\n{}", loaded.diagnostics))
            .spec
        {
            mesh_core::resource::Spec::HttpRoute(r) => r.rules[0].filters.clone(),
            other => panic!("not an HTTPRoute: {other:?}"),
        }
    }
}
