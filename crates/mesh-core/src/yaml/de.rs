//! A serde `Deserializer` over the located tree.
//!
//! It tracks the field path as it descends, so every error says exactly where
//! it is (`spec.http[0].retries.attemps` at line 12, column 7) and what was
//! expected. Typing follows Kubernetes' strict decoding: a quoted `"8080"` is
//! not a number and `true` is not a string key, with one leniency: a plain
//! scalar is accepted where a string is expected (`exact: true` means "true").

use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, Expected, MapAccess, SeqAccess, Unexpected, VariantAccess,
    Visitor,
};

use super::{Node, NodeValue, Plain, Pos};
use crate::path::{FieldPath, PathSeg};

/// Why deserializing a node failed, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct DeError {
    /// The field the error is about.
    pub path: FieldPath,
    /// Where that field is written; `None` only before the error is placed.
    pub pos: Option<Pos>,
    /// What went wrong, for a person.
    pub message: String,
    /// Set when the error is an unknown mapping key, so the loader can report
    /// it, drop the key, and go on looking for more problems.
    pub unknown_field: bool,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: FieldPath::root(),
            pos: None,
            message: msg.to_string(),
            unknown_field: false,
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            friendly_expected(exp),
            unexp
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!(
            "invalid value {}: expected {}",
            unexp,
            friendly_expected(exp)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format_args!(
            "unknown field `{field}`{}",
            suggestion(field, expected)
        ));
        e.unknown_field = true;
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = match closest(variant, expected) {
            Some(best) => format!(" (did you mean `{best}`?)"),
            None => String::new(),
        };
        Self::custom(format_args!(
            "unknown value `{variant}`, expected one of {}{hint}",
            expected.join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing required field `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format_args!("field `{field}` is given twice"))
    }
}

fn friendly_expected(exp: &dyn Expected) -> String {
    let text = exp.to_string();
    if text.starts_with("struct ") || text.starts_with("a map") {
        "a mapping".to_owned()
    } else if text.starts_with("a sequence") {
        "a list".to_owned()
    } else if let Some(t) = text.strip_prefix("enum ") {
        format!("one of the {t} values")
    } else {
        text
    }
}

fn suggestion(field: &str, expected: &[&str]) -> String {
    match closest(field, expected) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None if expected.is_empty() => String::new(),
        None => format!("; expected one of {}", expected.join(", ")),
    }
}

/// The candidate closest to `word` by edit distance, when close enough to be
/// a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The path so far, as a chain of borrowed steps: nothing is allocated while
/// deserializing succeeds.
#[derive(Clone, Copy)]
enum PathRef<'p> {
    Root(&'p [PathSeg]),
    Field(&'p PathRef<'p>, &'p str),
    Index(&'p PathRef<'p>, usize),
}

impl PathRef<'_> {
    fn to_owned_path(self) -> FieldPath {
        let mut out = Vec::new();
        self.collect(&mut out);
        FieldPath(out)
    }

    fn collect(self, out: &mut Vec<PathSeg>) {
        match self {
            PathRef::Root(prefix) => out.extend_from_slice(prefix),
            PathRef::Field(parent, name) => {
                parent.collect(out);
                out.push(PathSeg::Field(name.to_owned()));
            }
            PathRef::Index(parent, i) => {
                parent.collect(out);
                out.push(PathSeg::Index(i));
            }
        }
    }
}

/// Deserializes `T` from `node`, whose own path is `prefix` (for example
/// `spec`), so errors carry full paths.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    prefix: &[PathSeg],
) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: PathRef::Root(prefix),
    })
}

struct NodeDe<'n, 'p> {
    node: &'n Node,
    path: PathRef<'p>,
}

impl NodeDe<'_, '_> {
    fn place(&self, mut e: DeError) -> DeError {
        if e.pos.is_none() {
            e.pos = Some(self.node.pos);
            e.path = self.path.to_owned_path();
        }
        e
    }

    fn unexpected(&self) -> Unexpected<'_> {
        match &self.node.value {
            NodeValue::Seq(_) => Unexpected::Seq,
            NodeValue::Map(_) => Unexpected::Map,
            NodeValue::Scalar { text, plain } => match (plain, self.node.plain()) {
                (true, Some(Plain::Null)) => Unexpected::Unit,
                (true, Some(Plain::Bool(b))) => Unexpected::Bool(b),
                (true, Some(Plain::Int(i))) => match i64::try_from(i) {
                    Ok(v) if v < 0 => Unexpected::Signed(v),
                    _ => u64::try_from(i)
                        .map(Unexpected::Unsigned)
                        .unwrap_or(Unexpected::Other("a very large integer")),
                },
                (true, Some(Plain::Float(f))) => Unexpected::Float(f),
                _ => Unexpected::Str(text),
            },
        }
    }

    fn invalid<V>(&self, exp: &dyn Expected) -> Result<V, DeError> {
        Err(self.place(de::Error::invalid_type(self.unexpected(), exp)))
    }
}

macro_rules! int_method {
    ($method:ident) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.node.plain() {
                Some(Plain::Int(i)) => {
                    let r = if let Ok(u) = u64::try_from(i) {
                        visitor.visit_u64(u)
                    } else if let Ok(s) = i64::try_from(i) {
                        visitor.visit_i64(s)
                    } else {
                        return Err(self.place(de::Error::custom("integer out of range")));
                    };
                    r.map_err(|e| self.place(e))
                }
                _ => self.invalid(&visitor),
            }
        }
    };
}

impl<'de, 'p> de::Deserializer<'de> for NodeDe<'de, 'p> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
                path: &self.path,
            }),
            NodeValue::Map(entries) => visitor.visit_map(Map {
                entries,
                index: 0,
                path: &self.path,
            }),
            NodeValue::Scalar { text, plain: false } => visitor.visit_str(text),
            NodeValue::Scalar { text, plain: true } => match super::resolve_plain(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int(i) => match (u64::try_from(i), i64::try_from(i)) {
                    (Ok(u), _) => visitor.visit_u64(u),
                    (_, Ok(s)) => visitor.visit_i64(s),
                    _ => visitor.visit_str(text),
                },
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str(s) => visitor.visit_str(s),
            },
        };
        r.map_err(|e| self.place(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.plain() {
            Some(Plain::Bool(b)) => visitor.visit_bool(b).map_err(|e| self.place(e)),
            _ => self.invalid(&visitor),
        }
    }

    int_method!(deserialize_i8);
    int_method!(deserialize_i16);
    int_method!(deserialize_i32);
    int_method!(deserialize_i64);
    int_method!(deserialize_u8);
    int_method!(deserialize_u16);
    int_method!(deserialize_u32);
    int_method!(deserialize_u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        #[allow(clippy::cast_precision_loss)]
        let value = match self.node.plain() {
            Some(Plain::Int(i)) => i as f64,
            Some(Plain::Float(f)) => f,
            _ => return self.invalid(&visitor),
        };
        visitor.visit_f64(value).map_err(|e| self.place(e))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar { text, plain } => {
                if *plain && self.node.is_null() {
                    return self.invalid(&visitor);
                }
                visitor.visit_str(text).map_err(|e| self.place(e))
            }
            _ => self.invalid(&visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none().map_err(|e| self.place(e))
        } else {
            let path = self.path;
            let node = self.node;
            visitor
                .visit_some(NodeDe { node, path })
                .map_err(|e| NodeDe { node, path }.place(e))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit().map_err(|e| self.place(e))
        } else {
            self.invalid(&visitor)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path);
        visitor
            .visit_newtype_struct(NodeDe { node, path })
            .map_err(|e| NodeDe { node, path }.place(e))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Seq(items) => visitor
                .visit_seq(Seq {
                    items: items.iter(),
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.place(e)),
            _ if self.node.is_null() => visitor
                .visit_seq(Seq {
                    items: [].iter(),
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.place(e)),
            _ => self.invalid(&visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Map(entries) => visitor
                .visit_map(Map {
                    entries,
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.place(e)),
            // `spec:` with nothing after it is an empty object, as in Kubernetes.
            _ if self.node.is_null() => visitor
                .visit_map(Map {
                    entries: &[],
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.place(e)),
            _ => self.invalid(&visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar { text, .. } if !self.node.is_null() => visitor
                .visit_enum(UnitVariant { name: text })
                .map_err(|e| self.place(e)),
            NodeValue::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let Some(name) = key.as_str() else {
                    return self.invalid(&visitor);
                };
                visitor
                    .visit_enum(DataVariant {
                        name,
                        value,
                        path: &self.path,
                    })
                    .map_err(|e| self.place(e))
            }
            _ => self.invalid(&visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Seq<'n, 'p> {
    items: std::slice::Iter<'n, Node>,
    index: usize,
    path: &'p PathRef<'p>,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = PathRef::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe { node, path }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'n, 'p> {
    entries: &'n [(Node, Node)],
    index: usize,
    path: &'p PathRef<'p>,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.index) else {
            return Ok(None);
        };
        let Some(name) = key.as_str() else {
            return Err(NodeDe {
                node: key,
                path: *self.path,
            }
            .place(de::Error::custom("mapping keys must be plain strings")));
        };
        let path = PathRef::Field(self.path, name);
        let here = NodeDe { node: key, path };
        if let Some((first, _)) = self.entries[..self.index]
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
        {
            return Err(here.place(de::Error::custom(format_args!(
                "key `{name}` appears twice (first at line {})",
                first.pos.line
            ))));
        }
        seed.deserialize(NodeDe { node: key, path })
            .map(Some)
            .map_err(|e| here.place(e))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.entries.get(self.index) else {
            return Err(de::Error::custom(
                "value requested past the end of a mapping",
            ));
        };
        self.index += 1;
        let name = key.as_str().unwrap_or("");
        let path = PathRef::Field(self.path, name);
        seed.deserialize(NodeDe { node: value, path })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.index)
    }
}

struct UnitVariant<'n> {
    name: &'n str,
}

impl<'de> EnumAccess<'de> for UnitVariant<'de> {
    type Error = DeError;
    type Variant = UnitOnly;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitOnly), DeError> {
        let de = de::value::BorrowedStrDeserializer::<DeError>::new(self.name);
        Ok((seed.deserialize(de)?, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> VariantAccess<'de> for UnitOnly {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(de::Error::custom(
            "this value needs settings: write it as a mapping",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _v: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom(
            "this value needs settings: write it as a mapping",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, DeError> {
        Err(de::Error::custom(
            "this value needs settings: write it as a mapping",
        ))
    }
}

struct DataVariant<'n, 'p> {
    name: &'n str,
    value: &'n Node,
    path: &'p PathRef<'p>,
}

impl<'de, 'p> EnumAccess<'de> for DataVariant<'de, 'p> {
    type Error = DeError;
    type Variant = VariantValue<'de, 'p>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let de = de::value::BorrowedStrDeserializer::<DeError>::new(self.name);
        let v = seed.deserialize(de)?;
        Ok((
            v,
            VariantValue {
                name: self.name,
                value: self.value,
                path: self.path,
            },
        ))
    }
}

struct VariantValue<'n, 'p> {
    name: &'n str,
    value: &'n Node,
    path: &'p PathRef<'p>,
}

impl<'de> VariantAccess<'de> for VariantValue<'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.value.is_null() {
            Ok(())
        } else {
            Err(de::Error::custom(format_args!(
                "`{}` takes no settings",
                self.name
            )))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let path = PathRef::Field(self.path, self.name);
        seed.deserialize(NodeDe {
            node: self.value,
            path,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        let path = PathRef::Field(self.path, self.name);
        de::Deserializer::deserialize_seq(
            NodeDe {
                node: self.value,
                path,
            },
            visitor,
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = PathRef::Field(self.path, self.name);
        de::Deserializer::deserialize_map(
            NodeDe {
                node: self.value,
                path,
            },
            visitor,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::yaml::parse_stream;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Retry {
        attempts: u32,
        per_try_timeout: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        retries: Option<Retry>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Mode {
        #[serde(rename = "STRICT")]
        Strict,
        #[serde(rename = "PERMISSIVE")]
        Permissive,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        http: Vec<Rule>,
    }

    fn load(text: &str) -> Result<Spec, DeError> {
        let (docs, err) = parse_stream(text);
        assert!(err.is_none(), "{err:?}");
        from_node(&docs[0].root, &[PathSeg::Field("spec".into())])
    }

    #[test]
    fn unknown_fields_name_path_position_and_suggestion() {
        let e = load("http:\n- retries:\n    attemps: 3\n").unwrap_err();
        assert_eq!(e.path.to_string(), "spec.http[0].retries.attemps");
        assert_eq!(e.pos, Some(Pos { line: 3, col: 5 }));
        assert_eq!(
            e.message,
            "unknown field `attemps` (did you mean `attempts`?)"
        );
        assert!(e.unknown_field);
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let e = load("http:\n- retries:\n    attempts: \"3\"\n").unwrap_err();
        assert_eq!(e.path.to_string(), "spec.http[0].retries.attempts");
        assert_eq!(e.pos, Some(Pos { line: 3, col: 15 }));
        assert_eq!(e.message, "expected u32, found string \"3\"");
    }

    #[test]
    fn unknown_enum_values_suggest_the_closest() {
        let e = load("http:\n- mode: STRCT\n").unwrap_err();
        assert_eq!(e.path.to_string(), "spec.http[0].mode");
        assert!(
            e.message
                .starts_with("unknown value `STRCT`, expected one of STRICT, PERMISSIVE"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("(did you mean `STRICT`?)"));
    }

    #[test]
    fn missing_fields_point_at_the_parent() {
        let e = load("http:\n- retries:\n    perTryTimeout: 2s\n").unwrap_err();
        assert_eq!(e.path.to_string(), "spec.http[0].retries");
        assert_eq!(e.message, "missing required field `attempts`");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let e = load("http:\n- labels:\n    a: x\n    a: y\n").unwrap_err();
        assert_eq!(e.path.to_string(), "spec.http[0].labels.a");
        assert_eq!(e.pos, Some(Pos { line: 4, col: 5 }));
        assert!(e.message.contains("appears twice (first at line 3)"));
    }

    #[test]
    fn plain_scalars_are_accepted_as_strings() {
        let spec = load("http:\n- labels:\n    canary: true\n    port: 8080\n").unwrap();
        assert_eq!(spec.http[0].labels["canary"], "true");
        assert_eq!(spec.http[0].labels["port"], "8080");
    }

    #[test]
    fn closest_only_suggests_near_words() {
        assert_eq!(
            closest("attemps", &["attempts", "perTryTimeout"]),
            Some("attempts")
        );
        assert_eq!(closest("zzz", &["attempts"]), None);
    }
}
