//! Validation: the "always wrong" shapes of each resource (errors), and the
//! suspicious ones that still load (warnings).
//!
//! Each schema type implements [`Validate`] and reports through a [`Checker`],
//! which tracks the field path (`spec.http[0].retries.retryOn`). The loader
//! turns paths into file positions, so validators never deal with lines.
//! Checks that need several resources at once (conflicting VirtualServices,
//! dangling references) live in [`cross`].

pub mod cross;

use crate::diag::Severity;
use crate::path::{FieldPath, PathSeg};

/// One finding of a validator, before it is placed in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The field it is about, from the document root.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

/// Collects findings while walking a resource.
#[derive(Debug, Default)]
pub struct Checker {
    path: Vec<PathSeg>,
    findings: Vec<Finding>,
}

impl Checker {
    /// A checker whose paths start at `prefix` (usually `spec`).
    pub fn new(prefix: &[PathSeg]) -> Self {
        Checker {
            path: prefix.to_vec(),
            findings: Vec::new(),
        }
    }

    /// Runs `f` one field deeper.
    pub fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(PathSeg::Field(name.to_owned()));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` on a list element.
    pub fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(PathSeg::Index(i));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` on each element of the list field `name`.
    pub fn each<T>(&mut self, name: &str, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.field(name, |c| {
            for (i, item) in items.iter().enumerate() {
                c.index(i, |c| f(c, item));
            }
        });
    }

    /// Reports an error at the current field.
    pub fn error(&mut self, message: impl Into<String>) {
        self.push(Severity::Error, message.into());
    }

    /// Reports a warning at the current field.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, message.into());
    }

    /// Reports an error at `field` below the current one.
    pub fn error_at(&mut self, field: &str, message: impl Into<String>) {
        let message = message.into();
        self.field(field, |c| c.error(message));
    }

    /// Reports a warning at `field` below the current one.
    pub fn warn_at(&mut self, field: &str, message: impl Into<String>) {
        let message = message.into();
        self.field(field, |c| c.warn(message));
    }

    fn push(&mut self, severity: Severity, message: String) {
        self.findings.push(Finding {
            severity,
            path: FieldPath(self.path.clone()),
            message,
        });
    }

    /// The findings so far.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Takes the findings.
    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }
}

/// Implemented by every resource spec (and the parts worth checking alone).
pub trait Validate {
    /// Reports what is wrong with `self`; the checker is positioned at `self`.
    fn validate(&self, cx: &mut Checker);
}

impl<T: Validate> Validate for Box<T> {
    fn validate(&self, cx: &mut Checker) {
        (**self).validate(cx);
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, cx: &mut Checker) {
        if let Some(v) = self {
            v.validate(cx);
        }
    }
}

/// Checks shared by several API groups.
pub mod checks {
    use super::Checker;
    use crate::schema::common::Percent;

    /// Most regexes in mesh config are small; a pattern that compiles to more
    /// than this is almost certainly a mistake and would slow every request.
    const REGEX_SIZE_LIMIT: usize = 1 << 20;

    /// An RE2-compatible regular expression (the `regex` crate's syntax is
    /// RE2's, without look-around or back-references, exactly like Envoy's).
    pub fn regex(cx: &mut Checker, pattern: &str) {
        if let Err(e) = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            let detail = e.to_string();
            let last = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .trim_start_matches("error: ");
            cx.error(format!("invalid regex {pattern:?}: {last}"));
        }
    }

    /// A percentage within 0..=100.
    pub fn percent(cx: &mut Checker, p: Percent) {
        if !p.in_range() {
            cx.error(format!("percentage {} is outside 0..100", p.0));
        }
    }

    /// A TCP/UDP port number within 1..=65535.
    pub fn port_number(cx: &mut Checker, port: u32) {
        if port == 0 || port > 65535 {
            cx.error(format!("port {port} is outside 1..65535"));
        }
    }

    /// An HTTP status code a proxy may answer with (200..=599).
    pub fn http_status(cx: &mut Checker, status: u32) {
        if !(200..=599).contains(&status) {
            cx.error(format!("HTTP status {status} is outside 200..599"));
        }
    }

    /// A DNS name or `*.`-prefixed wildcard, as hosts fields take them.
    /// `allow_bare_star` admits `*` alone (VirtualService and Gateway hosts).
    pub fn host(cx: &mut Checker, host: &str, allow_bare_star: bool) {
        if host == "*" {
            if !allow_bare_star {
                cx.error("`*` alone is not allowed here; name a host or a `*.domain` wildcard");
            }
            return;
        }
        let name = host.strip_prefix("*.").unwrap_or(host);
        if name.is_empty() || name.len() > 253 {
            cx.error(format!("invalid host {host:?}"));
            return;
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                cx.error(format!(
                    "invalid host {host:?}: {label:?} is not a DNS label (a wildcard may only be a leading `*.`)"
                ));
                return;
            }
        }
    }

    /// A Kubernetes object name (RFC 1123 subdomain).
    pub fn dns1123_subdomain(cx: &mut Checker, what: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            cx.error(format!(
                "{what} {name:?} is not a valid name (lowercase letters, digits, '-' and '.')"
            ));
        }
    }

    /// An Istio principal as policies write it: `<trust-domain>/ns/<ns>/sa/<sa>`,
    /// with `*` prefix/suffix patterns allowed. A `spiffe://` prefix is
    /// tolerated by Istio and by us.
    pub fn istio_principal(cx: &mut Checker, principal: &str) {
        if principal == "*" || principal.starts_with('*') || principal.ends_with('*') {
            if principal.trim_matches('*').contains('*') {
                cx.error(format!(
                    "invalid principal {principal:?}: `*` may only be a prefix or a suffix"
                ));
            }
            return;
        }
        let body = principal.strip_prefix("spiffe://").unwrap_or(principal);
        let parts: Vec<&str> = body.split('/').collect();
        let ok = parts.len() == 5
            && !parts[0].is_empty()
            && parts[1] == "ns"
            && !parts[2].is_empty()
            && parts[3] == "sa"
            && !parts[4].is_empty();
        if !ok {
            cx.error(format!(
                "invalid principal {principal:?}: expected <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. cluster.local/ns/default/sa/sleep"
            ));
        }
    }

    /// A SPIFFE ID: `spiffe://<trust-domain>/<path>`.
    pub fn spiffe_id(cx: &mut Checker, id: &str) {
        let Some(rest) = id.strip_prefix("spiffe://") else {
            cx.error(format!(
                "invalid SPIFFE ID {id:?}: it must start with spiffe://"
            ));
            return;
        };
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let domain_ok = !domain.is_empty()
            && domain.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        let path_ok = path.is_empty()
            || path
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if !domain_ok {
            cx.error(format!(
                "invalid SPIFFE ID {id:?}: the trust domain must be lowercase letters, digits, '.', '-' or '_'"
            ));
        } else if !path_ok {
            cx.error(format!(
                "invalid SPIFFE ID {id:?}: path segments must be non-empty and not '.' or '..'"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl FnOnce(&mut Checker)) -> Vec<String> {
        let mut cx = Checker::new(&[PathSeg::Field("spec".into())]);
        f(&mut cx);
        cx.into_findings()
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn paths_follow_the_walk() {
        let out = run(|c| {
            c.each("http", &[1, 2], |c, v| {
                if *v == 2 {
                    c.error_at("timeout", "bad")
                }
            })
        });
        assert_eq!(out, ["spec.http[1].timeout: bad"]);
    }

    #[test]
    fn regexes_are_checked() {
        let out = run(|c| checks::regex(c, "/api/(users"));
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("invalid regex \"/api/(users\""), "{out:?}");
        assert!(run(|c| checks::regex(c, "/api/users/[^/]*")).is_empty());
    }

    #[test]
    fn principals_and_spiffe_ids() {
        assert!(
            run(|c| checks::istio_principal(c, "cluster.local/ns/production/sa/frontend"))
                .is_empty()
        );
        assert!(run(|c| checks::istio_principal(c, "*/ns/production/sa/*")).is_empty());
        assert_eq!(
            run(|c| checks::istio_principal(c, "cluster.local/production/frontend")).len(),
            1
        );
        assert!(run(|c| checks::spiffe_id(c, "spiffe://cluster.local/ns/a/sa/b")).is_empty());
        assert_eq!(
            run(|c| checks::spiffe_id(c, "cluster.local/ns/a/sa/b")).len(),
            1
        );
        assert_eq!(
            run(|c| checks::spiffe_id(c, "spiffe://Cluster.Local/x")).len(),
            1
        );
    }

    #[test]
    fn hosts() {
        assert!(run(|c| checks::host(c, "reviews", false)).is_empty());
        assert!(run(|c| checks::host(c, "*.example.com", false)).is_empty());
        assert_eq!(run(|c| checks::host(c, "*", false)).len(), 1);
        assert_eq!(run(|c| checks::host(c, "api.*.com", true)).len(), 1);
    }
}
