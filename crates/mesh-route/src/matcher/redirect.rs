//! Compiled `redirect` of an HTTP rule: a local 3xx reply whose `Location`
//! is built from the request (SPEC 4.4).
//!
//! Port rules: a configured or derived port replaces the request's port and
//! is left out of `Location` when it is the default port of the `Location`
//! scheme and the request's Host carried no explicit port. Without any port
//! setting, the request's Host is kept as written, except that a scheme
//! change drops a port that was merely the old scheme's default (Envoy's
//! `processRequestHost`).

use http::{HeaderValue, StatusCode};
use mesh_core::host::strip_port;
use mesh_core::schema::istio_networking::{HttpRedirect, RedirectPortSelection};

use super::RequestView;

/// A compiled redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The reply status (default 301).
    pub status: StatusCode,
    /// How the path changes.
    pub path: RedirectPath,
    /// A new host (`authority`), if any.
    pub authority: Option<Box<str>>,
    /// A new scheme, if any.
    pub scheme: Option<Box<str>>,
    /// How the port is chosen.
    pub port: RedirectPort,
}

/// The path of the `Location`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectPath {
    /// The request's path.
    Keep,
    /// `uri`: the whole path is replaced.
    Replace(Box<str>),
    /// `prefixRewrite`: the matched prefix is replaced.
    PrefixRewrite(Box<str>),
}

/// The port of the `Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectPort {
    /// No port setting: the request's Host as written.
    Keep,
    /// `port`.
    Fixed(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: 80 for http, 443 for https.
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`: the port the request used.
    RequestPort,
}

impl Redirect {
    /// Compiles `redirect`; the error is a message for the field.
    pub fn compile(r: &HttpRedirect) -> Result<Redirect, String> {
        let code = r.redirect_code.unwrap_or(301);
        let status = u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(StatusCode::is_redirection)
            .ok_or_else(|| format!("redirectCode: {code} is not a redirect status"))?;
        let path = match (&r.uri, &r.prefix_rewrite) {
            (Some(_), Some(_)) => return Err("set only one of uri or prefixRewrite".into()),
            (Some(uri), None) => RedirectPath::Replace(uri.as_str().into()),
            (None, Some(p)) => RedirectPath::PrefixRewrite(p.as_str().into()),
            (None, None) => RedirectPath::Keep,
        };
        let port = match (r.port, r.derive_port) {
            (Some(_), Some(_)) => return Err("set only one of port or derivePort".into()),
            (Some(p), None) => RedirectPort::Fixed(
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port: {p} is not a port number"))?,
            ),
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
                RedirectPort::ProtocolDefault
            }
            (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::RequestPort,
            (None, None) => RedirectPort::Keep,
        };
        if let Some(a) = &r.authority
            && HeaderValue::from_str(a).is_err()
        {
            return Err(format!("authority: invalid host {a:?}"));
        }
        Ok(Redirect {
            status,
            path,
            authority: r.authority.as_deref().map(Into::into),
            scheme: r.scheme.as_deref().map(Into::into),
            port,
        })
    }

    /// The `Location` for `req`. `matched_prefix` is the prefix the rule
    /// matched (`prefixRewrite` replaces it; a rule without a `uri` match
    /// matched `/`). A request whose pieces cannot form a header value gets
    /// the bare path (and `/` as a last resort) instead of a panic.
    pub fn location(&self, req: &RequestView<'_>, matched_prefix: Option<&str>) -> HeaderValue {
        let req_scheme = if req.scheme.is_empty() {
            "http"
        } else {
            req.scheme
        };
        let scheme = self.scheme.as_deref().unwrap_or(req_scheme);
        let (req_host, req_port) = split_port(req.authority);

        let port = match self.port {
            RedirectPort::Keep => None,
            RedirectPort::Fixed(p) => Some(p),
            RedirectPort::ProtocolDefault => Some(default_port(scheme).unwrap_or(80)),
            RedirectPort::RequestPort => Some(
                req.port
                    .or(req_port)
                    .or_else(|| default_port(req_scheme))
                    .unwrap_or(80),
            ),
        };

        let mut loc = String::with_capacity(64 + req.authority.len() + req.uri.path().len());
        loc.push_str(scheme);
        loc.push_str("://");
        match (port, self.authority.as_deref()) {
            (Some(p), authority) => {
                loc.push_str(authority.map_or(req_host, strip_port));
                let omit = default_port(scheme) == Some(p) && req_port.is_none();
                if !omit {
                    loc.push(':');
                    loc.push_str(&p.to_string());
                }
            }
            (None, Some(authority)) => loc.push_str(authority),
            (None, None) => {
                let drop_port = scheme != req_scheme
                    && req_port.is_some()
                    && req_port == default_port(req_scheme);
                loc.push_str(if drop_port { req_host } else { req.authority });
            }
        }

        let path_start = loc.len();
        let path = req.uri.path();
        match &self.path {
            RedirectPath::Keep => loc.push_str(path),
            RedirectPath::Replace(p) => loc.push_str(p),
            RedirectPath::PrefixRewrite(with) => {
                let prefix_len = matched_prefix.map_or(1, str::len);
                loc.push_str(with);
                if path.len() >= prefix_len && path.is_char_boundary(prefix_len) {
                    loc.push_str(&path[prefix_len..]);
                }
            }
        }
        if let Some(q) = req.uri.query() {
            loc.push('?');
            loc.push_str(q);
        }
        HeaderValue::from_str(&loc)
            .or_else(|_| HeaderValue::from_str(&loc[path_start..]))
            .unwrap_or_else(|_| HeaderValue::from_static("/"))
    }
}

/// The default port of a scheme.
fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// Splits `host:port`; the port is `None` when absent or not a number.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    let host = strip_port(authority);
    let port = authority
        .get(host.len()..)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|p| p.parse().ok());
    (host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_port_handles_ipv6_and_missing_ports() {
        assert_eq!(split_port("a.example:8080"), ("a.example", Some(8080)));
        assert_eq!(split_port("a.example"), ("a.example", None));
        assert_eq!(split_port("[::1]:443"), ("[::1]", Some(443)));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }

    #[test]
    fn codes_outside_3xx_are_rejected() {
        let r = HttpRedirect {
            uri: Some("/x".into()),
            redirect_code: Some(200),
            ..Default::default()
        };
        assert!(Redirect::compile(&r).is_err());
        let r = HttpRedirect {
            uri: Some("/x".into()),
            redirect_code: Some(308),
            ..Default::default()
        };
        assert_eq!(
            Redirect::compile(&r).unwrap().status,
            StatusCode::PERMANENT_REDIRECT
        );
    }
}
