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
/// first, for a caller in `caller_namespace`.
pub fn request_candidates<'a>(authority: &'a str, caller_namespace: &str) -> Vec<Cow<'a, str>> {
    let mut out = Vec::with_capacity(2);
    for_each_candidate(authority, caller_namespace, |c| {
        out.push(Cow::Owned(c.to_owned()));
        None::<()>
    });
    out
}

/// Longest host name a candidate is built for on the stack; longer ones
/// (beyond DNS's own 253-byte limit plus a suffix) use the heap.
const STACK_HOST: usize = 320;

/// Calls `f` with each name a request's authority may stand for (as
/// [`request_candidates`] lists them) until it returns `Some`. Candidates are
/// built in a stack buffer: the request path allocates nothing.
pub fn for_each_candidate<R>(
    authority: &str,
    caller_namespace: &str,
    mut f: impl FnMut(&str) -> Option<R>,
) -> Option<R> {
    let host = strip_port(authority).trim_end_matches('.');
    let dots = host.bytes().filter(|&b| b == b'.').count();
    let suffix_svc = [".", caller_namespace, ".svc.", CLUSTER_DOMAIN];
    let suffixes: &[&str] = if dots == 0 {
        &suffix_svc
    } else if dots == 1 {
        &[".svc.", CLUSTER_DOMAIN]
    } else if dots == 2 && host.ends_with(".svc") {
        &[".", CLUSTER_DOMAIN]
    } else {
        &[]
    };
    let mut buf = [0u8; STACK_HOST];
    let total = host.len() + suffixes.iter().map(|s| s.len()).sum::<usize>();
    if total > STACK_HOST {
        let mut owned = host.to_ascii_lowercase();
        for s in suffixes {
            owned.push_str(s);
        }
        if !suffixes.is_empty()
            && let Some(r) = f(&owned)
        {
            return Some(r);
        }
        return f(&owned[..host.len()]);
    }
    buf[..host.len()].copy_from_slice(host.as_bytes());
    buf[..host.len()].make_ascii_lowercase();
    let mut len = host.len();
    for s in suffixes {
        buf[len..len + s.len()].copy_from_slice(s.as_bytes());
        len += s.len();
    }
    // Lower-casing ASCII bytes and appending `str`s keeps the bytes UTF-8.
    let full = std::str::from_utf8(&buf[..len]).ok()?;
    if !suffixes.is_empty()
        && let Some(r) = f(full)
    {
        return Some(r);
    }
    f(&full[..host.len()])
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
