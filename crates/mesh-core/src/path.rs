//! Field paths such as `spec.http[0].retries.retryOn`, as printed in diagnostics.

use std::fmt;

use crate::yaml::{Node, NodeValue};

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathSeg {
    /// A mapping key, spelled as in the YAML.
    Field(String),
    /// A sequence index.
    Index(usize),
}

/// The path from a document's root to one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<PathSeg>);

impl FieldPath {
    /// The empty path (the document itself).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Parses the printed form back (`spec.http[0]["a.b"]`), for tests and tools.
    pub fn parse(text: &str) -> Self {
        let mut segs = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("[\"") {
                let end = after.find("\"]").unwrap_or(after.len());
                segs.push(PathSeg::Field(after[..end].to_owned()));
                rest = after.get(end + 2..).unwrap_or("");
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').unwrap_or(after.len());
                match after[..end].parse() {
                    Ok(i) => segs.push(PathSeg::Index(i)),
                    Err(_) => segs.push(PathSeg::Field(after[..end].to_owned())),
                }
                rest = after.get(end + 1..).unwrap_or("");
            } else {
                let start = rest.strip_prefix('.').unwrap_or(rest);
                let end = start.find(['.', '[']).unwrap_or(start.len());
                segs.push(PathSeg::Field(start[..end].to_owned()));
                rest = &start[end..];
            }
        }
        FieldPath(segs)
    }

    /// Whether the path is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Finds the node the path names, or the deepest node on the way when the
    /// field itself is absent (so a "missing field" points at its parent).
    /// Map keys are located at the key, so `attemps: 3` points at `attemps`.
    pub fn locate<'n>(&self, root: &'n Node) -> &'n Node {
        let mut node = root;
        for seg in &self.0 {
            let next = match (seg, &node.value) {
                (PathSeg::Field(name), NodeValue::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name.as_str()))
                    .map(|(_, v)| v),
                (PathSeg::Index(i), NodeValue::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// Like [`FieldPath::locate`], but a path ending in a mapping key points
    /// at the key rather than its value.
    pub fn locate_key<'n>(&self, root: &'n Node) -> &'n Node {
        let Some((last, parent)) = self.0.split_last() else {
            return root;
        };
        let parent_path = FieldPath(parent.to_vec());
        let parent_node = parent_path.locate(root);
        if parent_path.locate_exact(root).is_some()
            && let PathSeg::Field(name) = last
            && let Some((k, _)) = parent_node.entry(name)
        {
            return k;
        }
        self.locate(root)
    }

    fn locate_exact<'n>(&self, root: &'n Node) -> Option<&'n Node> {
        let mut node = root;
        for seg in &self.0 {
            node = match (seg, &node.value) {
                (PathSeg::Field(name), NodeValue::Map(_)) => node.get(name)?,
                (PathSeg::Index(i), NodeValue::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

fn is_plain_key(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'@')
        && !name.as_bytes()[0].is_ascii_digit()
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Field(name) if is_plain_key(name) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(name)?;
                }
                PathSeg::Field(name) => write!(f, "[{name:?}]")?,
                PathSeg::Index(idx) => write!(f, "[{idx}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_back() {
        let path = FieldPath(vec![
            PathSeg::Field("spec".into()),
            PathSeg::Field("http".into()),
            PathSeg::Index(0),
            PathSeg::Field("headers".into()),
            PathSeg::Field("x-canary".into()),
            PathSeg::Field("app.kubernetes.io/name".into()),
            PathSeg::Field("9090".into()),
        ]);
        let text = path.to_string();
        assert_eq!(
            text,
            "spec.http[0].headers.x-canary[\"app.kubernetes.io/name\"][\"9090\"]"
        );
        assert_eq!(FieldPath::parse(&text), path);
    }
}
