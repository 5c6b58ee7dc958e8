//! Where a field of a loaded resource was written: `spec.http[2]` of
//! `VirtualService/prod/reviews` is at `reviews.yaml:31:5`.
//!
//! The snapshot keeps only where each document starts: keeping the position
//! of every field of every resource would cost memory on every proxy for
//! the rare moment a person asks why a request went where it went. Tools
//! that need a field's line (`mesh explain`, its admin endpoint) read the
//! file again and walk the located tree to the field. When the file changed
//! since it was loaded, or the resource came from stdin, the answer is the
//! document's own start, which is still right about the file.

use crate::diag::Location;
use crate::path::FieldPath;
use crate::resource::Resource;
use crate::yaml::{Node, NodeValue, Pos, parse_stream};

/// The location of `path` (`spec.http[2].match[0]`) inside `resource`,
/// read from the resource's file. Falls back to the document's start when
/// the file cannot be read or no longer holds the document.
pub fn field_location(resource: &Resource, path: &str) -> Location {
    let file = &resource.location.file;
    if &**file == "-" {
        return resource.location.clone();
    }
    match std::fs::read_to_string(&**file) {
        Ok(text) => field_location_in(&text, resource, path),
        Err(_) => resource.location.clone(),
    }
}

/// Like [`field_location`], for a resource loaded from `text` (what
/// `load_str` was given).
pub fn field_location_in(text: &str, resource: &Resource, path: &str) -> Location {
    let (docs, _) = parse_stream(text);
    let start = resource.location.pos;
    let pos = docs
        .iter()
        .find_map(|doc| document_at(&doc.root, doc.pos, start))
        .map(|root| FieldPath::parse(path).locate(root).pos)
        .unwrap_or(start);
    Location {
        file: resource.location.file.clone(),
        pos,
    }
}

/// The document (or `kind: List` item) that starts at `start`.
fn document_at(root: &Node, doc_pos: Pos, start: Pos) -> Option<&Node> {
    if doc_pos == start || root.pos == start {
        return Some(root);
    }
    match root.get("items").map(|n| &n.value) {
        Some(NodeValue::Seq(items)) => items.iter().find(|item| item.pos == start),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::load::{LoadOptions, load_str};

    const TEXT: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [b]
  http:
  - match:
    - uri: {prefix: /x}
    route:
    - destination: {host: b}
  - route:
    - destination: {host: b}
";

    #[test]
    fn rules_of_the_second_document_are_found() {
        let loaded = load_str("vs.yaml", TEXT, &LoadOptions::default());
        let b = &loaded.resources[1];
        let rule0 = field_location_in(TEXT, b, "spec.http[0]");
        let match0 = field_location_in(TEXT, b, "spec.http[0].match[0]");
        let rule1 = field_location_in(TEXT, b, "spec.http[1]");
        assert_eq!(
            (rule0.pos.line, match0.pos.line, rule1.pos.line),
            (16, 17, 20)
        );
        assert_eq!(&*rule0.file, "vs.yaml");
    }

    #[test]
    fn unknown_text_falls_back_to_the_document_start() {
        let loaded = load_str("vs.yaml", TEXT, &LoadOptions::default());
        let b = &loaded.resources[1];
        let moved = field_location_in("kind: Other\n", b, "spec.http[0]");
        assert_eq!(moved.pos, b.location.pos);
    }

    #[test]
    fn list_items_are_found() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: a}
  spec:
    hosts: [a]
    http:
    - route:
      - destination: {host: a}
";
        let loaded = load_str("list.yaml", text, &LoadOptions::default());
        let a = &loaded.resources[0];
        assert_eq!(field_location_in(text, a, "spec.http[0]").pos.line, 10);
    }
}
