//! Compiled header edits (`headers.request|response.set|add|remove`, SPEC 4.4).
//!
//! Names and values are parsed into `http` types when the config is compiled,
//! so a bad header name is a config error and never a request-time failure.
//! Within one edit list the order is Envoy's: removals, then `set`
//! (overwrite), then `add` (append). Destination-level and rule-level lists
//! are merged once at compile time by [`HeaderEdits::then`].

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use mesh_core::schema::istio_networking::HeaderOperations;

/// A set of header edits, applied by [`HeaderEdits::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Headers overwritten (every existing value replaced).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Values appended to a header (comma-joined with existing values).
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers deleted.
    pub remove: Vec<HeaderName>,
    /// A new Host / `:authority` (from `set` or `add` of `:authority` or
    /// `host`). [`HeaderEdits::apply`] leaves Host alone: the proxy uses this
    /// for the forwarded authority.
    pub authority_override: Option<HeaderValue>,
}

impl HeaderEdits {
    /// Compiles one `HeaderOperations` block; the error is a message naming
    /// the bad header.
    pub fn compile(ops: &HeaderOperations) -> Result<HeaderEdits, String> {
        let mut edits = HeaderEdits::default();
        for (list, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("{list}.{name}: invalid header value {value:?}"))?;
                if is_authority(name) {
                    // Host has one value: `add` can only mean "use this one".
                    edits.authority_override = Some(value);
                    continue;
                }
                let name = parse_name(name).map_err(|m| format!("{list}.{name}: {m}"))?;
                if list == "set" {
                    edits.set.push((name, value));
                } else {
                    edits.add.push((name, value));
                }
            }
        }
        for name in &ops.remove {
            if is_authority(name) {
                return Err(format!("remove: {name} cannot be removed"));
            }
            edits
                .remove
                .push(parse_name(name).map_err(|m| format!("remove: {m}"))?);
        }
        Ok(edits)
    }

    /// Compiles an optional block (absent is no edit).
    pub fn compile_opt(ops: Option<&HeaderOperations>) -> Result<HeaderEdits, String> {
        ops.map_or_else(|| Ok(HeaderEdits::default()), HeaderEdits::compile)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
            && self.authority_override.is_none()
    }

    /// The edits of `self` followed by those of `later`, as one list with the
    /// same effect as applying them in turn: anything `later` removes or sets
    /// makes earlier `set`/`add` of that name moot, and `later`'s authority
    /// wins (SPEC 4.4: a rule-level `:authority` beats a destination-level one).
    pub fn then(&self, later: &HeaderEdits) -> HeaderEdits {
        let overridden = |name: &HeaderName| {
            later.remove.contains(name) || later.set.iter().any(|(n, _)| n == name)
        };
        let mut out = HeaderEdits::default();
        out.remove.extend(self.remove.iter().cloned());
        for name in &later.remove {
            if !out.remove.contains(name) {
                out.remove.push(name.clone());
            }
        }
        out.set
            .extend(self.set.iter().filter(|(n, _)| !overridden(n)).cloned());
        out.set.extend(later.set.iter().cloned());
        out.add
            .extend(self.add.iter().filter(|(n, _)| !overridden(n)).cloned());
        out.add.extend(later.add.iter().cloned());
        out.authority_override = later
            .authority_override
            .clone()
            .or_else(|| self.authority_override.clone());
        out
    }

    /// Applies the edits: removals, then `set`, then `add`. An added value is
    /// comma-joined onto an existing one (SPEC 4.4), except for `set-cookie`,
    /// which cannot be joined and gets a separate value.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            append_joined(headers, name, value);
        }
    }
}

/// Appends `value` to `name`, comma-joining it with the existing values.
fn append_joined(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    if *name == header::SET_COOKIE || !headers.contains_key(name) {
        headers.append(name.clone(), value.clone());
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for existing in headers.get_all(name) {
        joined.extend_from_slice(existing.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        // Cannot happen (both parts were valid values), but never panic.
        Err(_) => {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn parse_name(name: &str) -> Result<HeaderName, String> {
    if name.starts_with(':') {
        return Err(format!(
            "pseudo-header {name} cannot be edited (only :authority)"
        ));
    }
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))
}

/// Builds a `HeaderOperations` for tests and callers holding plain maps.
#[cfg(test)]
pub(crate) fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOperations {
    let map = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    };
    HeaderOperations {
        set: map(set),
        add: map(add),
        remove: remove.iter().map(|s| (*s).into()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(edits: &HeaderEdits, initial: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in initial {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        edits.apply(&mut h);
        h
    }

    #[test]
    fn set_overwrites_add_joins_remove_deletes() {
        let e = HeaderEdits::compile(&ops(&[("x-set", "new")], &[("x-add", "b")], &["x-gone"]))
            .unwrap();
        let h = apply(
            &e,
            &[
                ("x-set", "old1"),
                ("x-set", "old2"),
                ("x-add", "a"),
                ("x-gone", "1"),
            ],
        );
        assert_eq!(h.get_all("x-set").iter().count(), 1);
        assert_eq!(h["x-set"], "new");
        assert_eq!(h["x-add"], "a, b");
        assert!(!h.contains_key("x-gone"));
        let h = apply(&e, &[]);
        assert_eq!(h["x-add"], "b");
    }

    #[test]
    fn bad_names_and_values_fail_at_compile_time() {
        assert!(HeaderEdits::compile(&ops(&[("bad name", "v")], &[], &[])).is_err());
        assert!(HeaderEdits::compile(&ops(&[("x", "a\nb")], &[], &[])).is_err());
        assert!(HeaderEdits::compile(&ops(&[(":path", "/x")], &[], &[])).is_err());
        assert!(HeaderEdits::compile(&ops(&[], &[], &["host"])).is_err());
    }

    #[test]
    fn authority_is_reported_separately_and_the_later_list_wins() {
        let dest = HeaderEdits::compile(&ops(
            &[(":authority", "dest.example"), ("x-a", "dest")],
            &[("x-b", "dest")],
            &[],
        ))
        .unwrap();
        let rule = HeaderEdits::compile(&ops(&[("Host", "rule.example")], &[], &["x-b"])).unwrap();
        assert_eq!(dest.authority_override.as_ref().unwrap(), "dest.example");
        let merged = dest.then(&rule);
        assert_eq!(merged.authority_override.unwrap(), "rule.example");
        let h = apply(&dest.then(&rule), &[("host", "orig")]);
        assert_eq!(h["x-a"], "dest");
        assert!(!h.contains_key("x-b"));
        assert_eq!(h["host"], "orig", "apply leaves Host to the proxy");
    }

    #[test]
    fn merged_lists_behave_like_sequential_application() {
        let a = HeaderEdits::compile(&ops(&[("x", "a")], &[("y", "a")], &["z"])).unwrap();
        let b = HeaderEdits::compile(&ops(&[("y", "b")], &[("x", "b"), ("z", "b")], &[])).unwrap();
        let initial = [("x", "0"), ("y", "0"), ("z", "0")];
        let mut seq = apply(&a, &initial);
        b.apply(&mut seq);
        assert_eq!(apply(&a.then(&b), &initial), seq);
        assert_eq!(seq["x"], "a, b");
        assert_eq!(seq["y"], "b");
        assert_eq!(seq["z"], "b");
    }
}
