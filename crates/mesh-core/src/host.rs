//! Host names: how a short name in config, and a Host header on a request,
//! become the fully qualified service name the snapshot is keyed by.
//!
//! Istio reads a short host (`reviews`) in the namespace of the *resource that
//! names it* (SPEC 1), and a caller in namespace `N` may write `reviews`,
//! `reviews.N`, `reviews.N.svc` or `reviews.N.svc.cluster.local`, with or
//! without `:port` (DESIGN "Service discovery").

use std::borrow::Cow;

/// The cluster domain appended to `<svc>.<ns>.svc`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Qualifies a host written in a resource of `namespace`: a name without dots
/// becomes `<name>.<namespace>.svc.cluster.local`; anything else (an FQDN, a
/// `*.` wildcard, `*`) is kept, lower-cased.
pub fn qualify(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.');
    if host == "*" || host.contains('.') {
        host.to_ascii_lowercase()
    } else {
        format!(
            "{}.{}.svc.{CLUSTER_DOMAIN}",
            host.to_ascii_lowercase(),
            namespace
        )
    }
}

/// Strips a `:port` (and IPv6 brackets are left alone) from an authority.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The names a request's Host / :authority may stand for, most specific
/// first, for a caller in `caller_namespace`. At most three hash lookups.
pub fn request_candidates<'a>(authority: &'a str, caller_namespace: &str) -> Vec<Cow<'a, str>> {
    let host = strip_port(authority).trim_end_matches('.');
    let host: Cow<'a, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let dots = host.bytes().filter(|&b| b == b'.').count();
    let mut out = Vec::with_capacity(2);
    if dots == 0 {
        out.push(Cow::Owned(format!(
            "{host}.{caller_namespace}.svc.{CLUSTER_DOMAIN}"
        )));
        out.push(host);
    } else if dots == 1 {
        out.push(Cow::Owned(format!("{host}.svc.{CLUSTER_DOMAIN}")));
        out.push(host);
    } else if host.ends_with(".svc") && dots == 2 {
        out.push(Cow::Owned(format!("{host}.{CLUSTER_DOMAIN}")));
        out.push(host);
    } else {
        out.push(host);
    }
    out
}

/// The wildcard patterns that could cover `host`, most specific first:
/// `a.b.example.com` gives `*.b.example.com`, `*.example.com`, `*.com`, `*`.
pub fn wildcard_candidates(host: &str) -> impl Iterator<Item = String> + '_ {
    host.match_indices('.')
        .map(move |(i, _)| format!("*{}", &host[i..]))
        .chain(std::iter::once("*".to_owned()))
}

/// Whether `pattern` (a host, `*.suffix` or `*`) covers `host`. A wildcard
/// covers one or more labels: `*.example.com` covers `a.b.example.com` but
/// not `example.com`.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_take_the_resource_namespace() {
        assert_eq!(qualify("reviews", "prod"), "reviews.prod.svc.cluster.local");
        assert_eq!(qualify("api.example.com", "prod"), "api.example.com");
        assert_eq!(qualify("*.example.com", "prod"), "*.example.com");
        assert_eq!(qualify("Reviews", "prod"), "reviews.prod.svc.cluster.local");
    }

    #[test]
    fn every_caller_spelling_reaches_the_service() {
        let fqdn = "reviews.prod.svc.cluster.local";
        for authority in [
            "reviews",
            "reviews:9080",
            "reviews.prod",
            "reviews.prod.svc",
            "reviews.prod.svc.cluster.local",
            "REVIEWS.prod:80",
        ] {
            let c = request_candidates(authority, "prod");
            assert_eq!(c[0], fqdn, "{authority}: {c:?}");
        }
        assert_eq!(
            request_candidates("api.example.com:443", "x")[0],
            "api.example.com"
        );
    }

    #[test]
    fn wildcards() {
        let w: Vec<String> = wildcard_candidates("a.b.example.com").collect();
        assert_eq!(w, ["*.b.example.com", "*.example.com", "*.com", "*"]);
        assert!(covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("host:80"), "host");
    }
}
