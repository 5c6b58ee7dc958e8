//! A located YAML tree.
//!
//! Every diagnostic the mesh prints names a file, a line and a column, so the
//! loader never deserializes straight from text: it first builds this small
//! tree from the `saphyr-parser` event stream, keeping the position of every
//! key and value, then deserializes typed resources from it (see [`de`]). The
//! validators point back into the same tree to place their findings.

pub mod de;

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in a YAML text: 1-based line and 1-based column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, counted from 1.
    pub line: u32,
    /// Column, counted from 1 (in characters).
    pub col: u32,
}

impl Pos {
    fn from_marker(marker: &saphyr_parser::Marker, line_offset: u32) -> Pos {
        Pos {
            line: u32::try_from(marker.line())
                .unwrap_or(u32::MAX)
                .saturating_add(line_offset),
            col: u32::try_from(marker.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: NodeValue,
}

/// The three YAML node shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// A scalar. `plain` scalars are typed by the YAML 1.2 core schema (null,
    /// bool, int, float, else string); quoted and block scalars are strings.
    Scalar {
        /// The scalar's text after unescaping.
        text: String,
        /// Whether it was written unquoted.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

/// A plain scalar resolved by the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plain<'a> {
    /// `~`, `null`, or nothing at all.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64` (negative) or `u64`.
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// Anything else.
    Str(&'a str),
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value nodes under `key` when this is a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// Whether the node is a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(self.plain(), Some(Plain::Null))
    }

    /// The core-schema reading of a plain scalar; `None` for quoted scalars
    /// and collections.
    pub fn plain(&self) -> Option<Plain<'_>> {
        match &self.value {
            NodeValue::Scalar { text, plain: true } => Some(resolve_plain(text)),
            _ => None,
        }
    }

    /// Number of nodes in this subtree (used to bound alias expansion).
    pub fn size(&self) -> usize {
        match &self.value {
            NodeValue::Scalar { .. } => 1,
            NodeValue::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeValue::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }

    /// Short description of the node's shape, for messages.
    pub fn describe(&self) -> String {
        match &self.value {
            NodeValue::Seq(_) => "a sequence".to_owned(),
            NodeValue::Map(_) => "a mapping".to_owned(),
            NodeValue::Scalar { text, plain } => match (plain, self.plain()) {
                (true, Some(Plain::Null)) => "null".to_owned(),
                (true, Some(Plain::Bool(b))) => format!("boolean `{b}`"),
                (true, Some(Plain::Int(_))) => format!("integer `{text}`"),
                (true, Some(Plain::Float(_))) => format!("number `{text}`"),
                _ => format!("string {text:?}"),
            },
        }
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
pub fn resolve_plain(text: &str) -> Plain<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let (neg, digits) = match bytes.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        (!neg && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| i128::from_str_radix(hex, 16).ok())
            .flatten()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        (!neg && !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .then(|| i128::from_str_radix(oct, 8).ok())
            .flatten()
    } else if !digits.is_empty() && digits.len() <= 30 && digits.bytes().all(|b| b.is_ascii_digit())
    {
        digits
            .parse::<i128>()
            .ok()
            .map(|v| if neg { -v } else { v })
    } else {
        None
    };
    if let Some(v) = parsed {
        return Plain::Int(v);
    }
    if looks_like_float(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Plain::Float(f);
    }
    Plain::Str(text)
}

fn looks_like_float(text: &str) -> bool {
    // YAML 1.2 core float: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

/// One YAML document of a stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where the document's content starts.
    pub pos: Pos,
    /// Its root node.
    pub root: Node,
}

/// A syntax error in a YAML text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found.
    pub message: String,
}

/// Aliases may not expand into more nodes than this in one stream, so a
/// "billion laughs" document is refused instead of exhausting memory.
const ALIAS_EXPANSION_LIMIT: usize = 100_000;

/// Parses a multi-document YAML stream. Documents before a syntax error are
/// returned along with the error, so a tool can still report on them.
pub fn parse_stream(text: &str) -> (Vec<Document>, Option<SyntaxError>) {
    parse_stream_at(text, 0)
}

/// Like [`parse_stream`] for a text that starts `line_offset` lines into its
/// file (the loader parses large files in parallel, one slice per core).
pub fn parse_stream_at(text: &str, line_offset: u32) -> (Vec<Document>, Option<SyntaxError>) {
    let mut builder = TreeBuilder {
        line_offset,
        ..TreeBuilder::default()
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_event() {
            None => break,
            Some(Ok((event, span))) => {
                if let Err(e) = builder.on_event(event, &span) {
                    return (builder.docs, Some(e));
                }
                if builder.finished {
                    break;
                }
            }
            Some(Err(e)) => {
                let pos = Pos::from_marker(e.marker(), line_offset);
                return (
                    builder.docs,
                    Some(SyntaxError {
                        pos,
                        message: e.info().to_owned(),
                    }),
                );
            }
        }
    }
    (builder.docs, None)
}

/// An open collection: its position, anchor, where its children start in
/// the builder's scratch stack, and (for a mapping) a key waiting for its
/// value. Children collect on one shared stack and move into an exactly
/// sized vector when the collection closes: one allocation per collection.
enum Frame {
    Seq(Pos, usize, usize),
    Map(Pos, usize, usize, Option<Node>),
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Node>,
    doc_pos: Option<Pos>,
    docs: Vec<Document>,
    expanded: usize,
    finished: bool,
    line_offset: u32,
    seq_scratch: Vec<Node>,
    map_scratch: Vec<(Node, Node)>,
}

impl TreeBuilder {
    fn on_event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let pos = Pos::from_marker(&span.start, self.line_offset);
        match event {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => self.finished = true,
            Event::DocumentStart(_) => {
                self.doc_pos = None;
                self.anchors.clear();
            }
            Event::DocumentEnd => {}
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    pos,
                    message: "alias refers to an unknown anchor".to_owned(),
                })?;
                self.expanded += node.size();
                if self.expanded > ALIAS_EXPANSION_LIMIT {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "aliases expand to more than {ALIAS_EXPANSION_LIMIT} nodes; refusing to expand further"
                        ),
                    });
                }
                self.push_node(Node { pos, ..node })?;
            }
            Event::Scalar(text, style, anchor, _tag) => {
                // The parser hands out strings with generous capacity (about
                // 90 bytes for a 6-byte scalar); copying to an exact size and
                // freeing the original keeps a 10 MB file's tree near 100 MB
                // instead of 270 MB, and the freed buffer is reused at once.
                let node = Node {
                    pos,
                    value: NodeValue::Scalar {
                        text: String::from(&*text),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node)?;
            }
            Event::SequenceStart(anchor, _) => {
                let first = self.seq_scratch.len();
                self.stack.push(Frame::Seq(pos, anchor, first));
            }
            Event::MappingStart(anchor, _) => {
                let first = self.map_scratch.len();
                self.stack.push(Frame::Map(pos, anchor, first, None));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(start, anchor, first)) = self.stack.pop() {
                    let items: Vec<Node> = self.seq_scratch.drain(first..).collect();
                    self.finish_collection(start, anchor, NodeValue::Seq(items))?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(start, anchor, first, _)) = self.stack.pop() {
                    let entries: Vec<(Node, Node)> = self.map_scratch.drain(first..).collect();
                    self.finish_collection(start, anchor, NodeValue::Map(entries))?;
                }
            }
        }
        Ok(())
    }

    fn finish_collection(
        &mut self,
        pos: Pos,
        anchor: usize,
        value: NodeValue,
    ) -> Result<(), SyntaxError> {
        let node = Node { pos, value };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.push_node(node)
    }

    fn push_node(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                let pos = self.doc_pos.take().unwrap_or(node.pos);
                // An empty document (only comments between `---` lines) holds nothing.
                if !node.is_null() {
                    self.docs.push(Document { pos, root: node });
                }
            }
            Some(Frame::Seq(..)) => self.seq_scratch.push(node),
            Some(Frame::Map(_, _, _, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => self.map_scratch.push((key, node)),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let (docs, err) = parse_stream("a: 1\nb:\n  - x\n");
        assert!(err.is_none());
        let root = &docs[0].root;
        let (key, _) = root.entry("b").unwrap();
        assert_eq!(key.pos, Pos { line: 2, col: 1 });
        let list = root.get("b").unwrap();
        let NodeValue::Seq(items) = &list.value else {
            panic!("expected seq")
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
    }

    #[test]
    fn multi_document_streams_keep_every_document() {
        let (docs, err) = parse_stream("a: 1\n---\nb: 2\n---\n# only a comment\n");
        assert!(err.is_none());
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[1].root.get("b").and_then(Node::as_str), Some("2"));
    }

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve_plain("~"), Plain::Null);
        assert_eq!(resolve_plain("true"), Plain::Bool(true));
        assert_eq!(resolve_plain("-12"), Plain::Int(-12));
        assert_eq!(resolve_plain("0x1f"), Plain::Int(31));
        assert_eq!(resolve_plain("1.5"), Plain::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Plain::Float(1000.0));
        assert_eq!(resolve_plain("30s"), Plain::Str("30s"));
        assert_eq!(resolve_plain("1.2.3"), Plain::Str("1.2.3"));
        assert_eq!(resolve_plain("yes"), Plain::Str("yes"));
    }

    #[test]
    fn syntax_errors_keep_earlier_documents() {
        let (docs, err) = parse_stream("a: 1\n---\nb: [1, 2\n");
        assert_eq!(docs.len(), 1);
        let err = err.expect("syntax error");
        assert!(err.pos.line >= 3, "{err:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let (_, err) = parse_stream(&text);
        assert!(err.expect("refused").message.contains("aliases expand"));
    }
}
