//! Compiled Istio `StringMatch`: exact, raw prefix, full-match regex, or
//! "present" (SPEC 4.2).
//!
//! Regexes are compiled once here, wrapped as `^(?:...)$` because Istio's
//! RE2 matchers must match the entire value, not a substring.

use mesh_core::schema::istio_networking::StringMatch;
use regex::Regex;

/// Which empty forms a place accepts as "the key is present".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PresenceForm {
    /// `{}` is an error (uri, scheme, method, authority).
    None,
    /// `{}` and `exact: ""` mean present (queryParams).
    Query,
    /// `{}` and `regex: "*"` mean present (headers, withoutHeaders).
    Header,
}

/// A compiled string matcher.
#[derive(Clone, Debug)]
pub(crate) enum StrMatch {
    /// The whole value equals this.
    Exact(Box<str>),
    /// The whole value equals this, ASCII case-insensitively (`ignoreUriCase`).
    ExactNoCase(Box<str>),
    /// The value starts with this (raw string prefix).
    Prefix(Box<str>),
    /// The value starts with this, ASCII case-insensitively.
    PrefixNoCase(Box<str>),
    /// The whole value matches (anchored at compile time).
    Regex(Regex),
    /// The key is present, whatever its value.
    Present,
}

impl StrMatch {
    /// Compiles `sm`; `ignore_case` applies to exact and prefix only (Istio
    /// does not fold case for regex). The error is a message for the field.
    pub(crate) fn compile(
        sm: &StringMatch,
        presence: PresenceForm,
        ignore_case: bool,
    ) -> Result<StrMatch, String> {
        let set = sm.set_fields();
        if set.len() > 1 {
            return Err(format!(
                "set only one of exact, prefix or regex (found {})",
                set.join(" and ")
            ));
        }
        if let Some(exact) = &sm.exact {
            if presence == PresenceForm::Query && exact.is_empty() {
                return Ok(StrMatch::Present);
            }
            return Ok(if ignore_case {
                StrMatch::ExactNoCase(exact.as_str().into())
            } else {
                StrMatch::Exact(exact.as_str().into())
            });
        }
        if let Some(prefix) = &sm.prefix {
            return Ok(if ignore_case {
                StrMatch::PrefixNoCase(prefix.as_str().into())
            } else {
                StrMatch::Prefix(prefix.as_str().into())
            });
        }
        if let Some(re) = &sm.regex {
            if presence == PresenceForm::Header && re == "*" {
                return Ok(StrMatch::Present);
            }
            return compile_full_match(re).map(StrMatch::Regex);
        }
        match presence {
            PresenceForm::None => Err("a string match needs one of exact, prefix or regex".into()),
            PresenceForm::Query | PresenceForm::Header => Ok(StrMatch::Present),
        }
    }

    /// Whether this is the presence form.
    pub(crate) fn is_presence(&self) -> bool {
        matches!(self, StrMatch::Present)
    }

    /// Whether `value` matches (the presence form matches any value).
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value == &**e,
            StrMatch::ExactNoCase(e) => value.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => value.starts_with(&**p),
            StrMatch::PrefixNoCase(p) => value
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            StrMatch::Regex(re) => re.is_match(value),
            StrMatch::Present => true,
        }
    }

    /// The configured prefix, when this is a prefix matcher.
    pub(crate) fn prefix(&self) -> Option<&str> {
        match self {
            StrMatch::Prefix(p) | StrMatch::PrefixNoCase(p) => Some(p),
            _ => None,
        }
    }
}

/// Compiles an RE2-style pattern so it must match the entire value.
pub(crate) fn compile_full_match(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> StringMatch {
        StringMatch {
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    #[test]
    fn regex_is_anchored_for_a_full_match() {
        let m =
            StrMatch::compile(&sm(None, None, Some("/api")), PresenceForm::None, false).unwrap();
        assert!(m.matches("/api"));
        assert!(!m.matches("/api/x"));
        assert!(!m.matches("x/api"));
        // An alternation must not escape the anchors.
        let m = StrMatch::compile(&sm(None, None, Some("a|b")), PresenceForm::None, false).unwrap();
        assert!(m.matches("a") && m.matches("b"));
        assert!(!m.matches("ab") && !m.matches("xa"));
    }

    #[test]
    fn presence_forms_depend_on_the_place() {
        let empty = sm(None, None, None);
        assert!(StrMatch::compile(&empty, PresenceForm::None, false).is_err());
        assert!(
            StrMatch::compile(&empty, PresenceForm::Header, false)
                .unwrap()
                .is_presence()
        );
        let star = sm(None, None, Some("*"));
        assert!(
            StrMatch::compile(&star, PresenceForm::Header, false)
                .unwrap()
                .is_presence()
        );
        assert!(StrMatch::compile(&star, PresenceForm::Query, false).is_err());
        let blank = sm(Some(""), None, None);
        assert!(
            StrMatch::compile(&blank, PresenceForm::Query, false)
                .unwrap()
                .is_presence()
        );
        assert!(
            !StrMatch::compile(&blank, PresenceForm::Header, false)
                .unwrap()
                .is_presence()
        );
        assert!(
            StrMatch::compile(&sm(Some("a"), Some("b"), None), PresenceForm::None, false).is_err()
        );
    }

    #[test]
    fn case_folding_is_ascii_and_safe_on_short_or_multibyte_values() {
        let m = StrMatch::compile(&sm(None, Some("/ApI"), None), PresenceForm::None, true).unwrap();
        assert!(m.matches("/api/x"));
        assert!(!m.matches("/ap"));
        assert!(!m.matches("é"));
        let m = StrMatch::compile(&sm(Some("/ApI"), None, None), PresenceForm::None, true).unwrap();
        assert!(m.matches("/API") && !m.matches("/API/"));
    }
}
