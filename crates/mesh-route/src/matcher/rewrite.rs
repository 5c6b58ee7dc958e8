//! Compiled `rewrite` of an HTTP rule: path (`uri` or `uriRegexRewrite`) and
//! Host (`authority`) before forwarding (SPEC 4.4).

use http::HeaderValue;
use http::uri::{PathAndQuery, Uri};
use mesh_core::schema::istio_networking::HttpRewrite;
use regex::Regex;

/// A compiled rewrite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rewrite {
    /// How the path changes, if it does.
    pub uri: Option<UriRewrite>,
    /// The new Host / `:authority`, if any. The proxy applies it before the
    /// header edits, so a header edit of `:authority` wins over it.
    pub authority: Option<HeaderValue>,
}

/// How the path is rewritten.
#[derive(Clone, Debug)]
pub enum UriRewrite {
    /// `rewrite.uri`: replaces the matched prefix, or the whole path when the
    /// rule matched by exact or regex.
    Replace(Box<str>),
    /// `uriRegexRewrite`: every match of `regex` in the path is substituted.
    Regex {
        /// The pattern, as written (unanchored, as Envoy uses it).
        regex: Regex,
        /// The substitution in the `regex` crate's syntax (`${1}`), converted
        /// from RE2's `\1` at compile time.
        replacement: Box<str>,
    },
}

impl PartialEq for UriRewrite {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (UriRewrite::Replace(a), UriRewrite::Replace(b)) => a == b,
            (
                UriRewrite::Regex {
                    regex: ra,
                    replacement: pa,
                },
                UriRewrite::Regex {
                    regex: rb,
                    replacement: pb,
                },
            ) => ra.as_str() == rb.as_str() && pa == pb,
            _ => false,
        }
    }
}

impl Rewrite {
    /// Compiles `rewrite`; the error is a message for the field.
    pub fn compile(rewrite: &HttpRewrite) -> Result<Rewrite, String> {
        let uri = match (&rewrite.uri, &rewrite.uri_regex_rewrite) {
            (Some(_), Some(_)) => return Err("set only one of uri or uriRegexRewrite".into()),
            (Some(uri), None) => Some(UriRewrite::Replace(uri.as_str().into())),
            (None, Some(rr)) => {
                let regex = Regex::new(&rr.pattern)
                    .map_err(|e| format!("uriRegexRewrite.match: invalid regex: {e}"))?;
                Some(UriRewrite::Regex {
                    regex,
                    replacement: re2_to_regex_replacement(&rr.rewrite).into(),
                })
            }
            (None, None) => None,
        };
        let authority = rewrite
            .authority
            .as_deref()
            .map(|a| HeaderValue::from_str(a).map_err(|_| format!("authority: invalid host {a:?}")))
            .transpose()?;
        Ok(Rewrite { uri, authority })
    }

    /// The request URI after the path rewrite; the query string is kept.
    /// `matched_prefix` is the prefix the rule matched (see
    /// `Forward::matched_prefix`); `None` means the whole path is replaced.
    /// If the result would not be a valid URI the original is returned.
    pub fn apply(&self, matched_prefix: Option<&str>, uri: &Uri) -> Uri {
        let Some(rule) = &self.uri else {
            return uri.clone();
        };
        let path = uri.path();
        let new_path: String = match rule {
            UriRewrite::Replace(with) => match matched_prefix {
                Some(prefix)
                    if path.len() >= prefix.len() && path.is_char_boundary(prefix.len()) =>
                {
                    let mut s = String::with_capacity(with.len() + path.len() - prefix.len());
                    s.push_str(with);
                    s.push_str(&path[prefix.len()..]);
                    s
                }
                _ => with.to_string(),
            },
            UriRewrite::Regex { regex, replacement } => {
                regex.replace_all(path, &**replacement).into_owned()
            }
        };
        with_path(uri, &new_path).unwrap_or_else(|| uri.clone())
    }
}

/// `uri` with its path replaced by `path` and its query kept.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Converts an RE2 rewrite string (`\1` groups, `\\` for a backslash) into
/// the `regex` crate's replacement syntax (`${1}`, `$$` for a dollar).
pub(crate) fn re2_to_regex_replacement(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len() + 8);
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::schema::istio_networking::RegexRewrite;

    fn uri_rewrite(uri: &str) -> Rewrite {
        Rewrite::compile(&HttpRewrite {
            uri: Some(uri.into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn prefix_replaces_only_the_matched_prefix() {
        let r = uri_rewrite("/v2/");
        let u: Uri = "/v1/items?id=3".parse().unwrap();
        assert_eq!(r.apply(Some("/v1/"), &u), "/v2/items?id=3");
    }

    #[test]
    fn exact_or_regex_replaces_the_whole_path_and_keeps_the_query() {
        let r = uri_rewrite("/new/path");
        let u: Uri = "/foo?key=value".parse().unwrap();
        assert_eq!(r.apply(None, &u), "/new/path?key=value");
        let u: Uri = "http://h.example/foo".parse().unwrap();
        assert_eq!(r.apply(None, &u), "http://h.example/new/path");
    }

    #[test]
    fn regex_rewrite_uses_re2_groups() {
        let r = Rewrite::compile(&HttpRewrite {
            uri_regex_rewrite: Some(RegexRewrite {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                rewrite: "\\2/instance/\\1".into(),
            }),
            ..Default::default()
        })
        .unwrap();
        let u: Uri = "/service/foo/v1/api?x=1".parse().unwrap();
        assert_eq!(r.apply(None, &u), "/v1/api/instance/foo?x=1");
    }

    #[test]
    fn replacement_conversion() {
        assert_eq!(re2_to_regex_replacement(r"\1-\0"), "${1}-${0}");
        assert_eq!(re2_to_regex_replacement(r"$x\\y"), r"$$x\y");
        assert_eq!(re2_to_regex_replacement(r"\1a"), "${1}a");
    }

    #[test]
    fn invalid_result_keeps_the_original() {
        let r = uri_rewrite("/bad path");
        let u: Uri = "/x".parse().unwrap();
        assert_eq!(r.apply(None, &u), "/x");
    }
}
