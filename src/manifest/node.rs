//! YAML text -> a spanned node tree. The only place that talks to the YAML crate.
//!
//! serde-saphyr (DESIGN.md section 11) applies anchors, aliases and `<<` merge keys, rejects
//! duplicate keys and reports syntax errors with line and column. We deserialize into a small
//! tree of [`Node`]s that keeps every node's location and, for plain scalars, the exact source
//! text (so `NO` stays `NO` and `1.10` stays `1.10`). The converter walks this tree to report
//! every shape problem at once; nothing here knows the manifest's keys.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

/// A position in the source: 1-based line and column (in characters) and the length of the
/// token in characters (at least 1 when rendered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Loc {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) len: u32,
    /// Which file: 0 for the manifest itself, N for the N-th other file a Compose project
    /// read (`include`, `extends`), see `Issues::add_file`.
    pub(crate) file: u32,
}

/// One YAML node with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) loc: Loc,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Map(Vec<(Key, Node)>),
    Seq(Vec<Node>),
    Scalar(Scalar),
    Null,
}

/// A mapping key with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) name: String,
    /// Where the key is used: for a key a `<<` merge key copies from an anchored mapping,
    /// where the alias is.
    pub(crate) loc: Loc,
    /// Where the key is written: the same as `loc`, but for a key a `<<` merge key copies,
    /// where it is in the anchored mapping (Compose's tags on it apply wherever it is used).
    pub(crate) def: Loc,
}

/// A scalar: its text (the source text for plain scalars, the decoded value for quoted ones)
/// and the type YAML 1.1/1.2 resolution gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub(crate) text: String,
    pub(crate) ty: ScalarType,
}

/// The resolved type of a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarType {
    Str,
    Int,
    Float,
    Bool,
}

impl Kind {
    /// How the kind is named in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Kind::Map(_) => "a mapping",
            Kind::Seq(_) => "a list",
            Kind::Null => "nothing (null)",
            Kind::Scalar(s) => match s.ty {
                ScalarType::Str => "a string",
                ScalarType::Int => "an integer",
                ScalarType::Float => "a number",
                ScalarType::Bool => "a boolean",
            },
        }
    }
}

/// A YAML syntax (or structure) error with its location, if the parser knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) loc: Option<Loc>,
}

/// Parses `source` into a node tree.
pub(crate) fn parse_tree(source: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(source, options) {
        Ok(raw) => Ok(to_node(source, raw)),
        Err(err) => {
            let inner = err.without_snippet();
            let message = serde_saphyr::DefaultMessageFormatter.format_message(inner);
            let message =
                message.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable");
            let message = if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
                format!("duplicate key `{key}`")
            } else if message.starts_with("multiple YAML documents detected") {
                "the manifest must be a single YAML document, found another `---` document".into()
            } else if message.starts_with("budget breached") {
                "the document expands to too many nodes through its aliases (more than 250000): an alias bomb?".into()
            } else if message.starts_with("YAML merge value must be") {
                "the value of a merge key `<<` must be a mapping or a list of mappings".into()
            } else if message.starts_with("recursive references require") {
                "an alias refers to a node that contains it (a cycle)".into()
            } else if message == "expected string scalar" {
                "mapping keys must be strings".into()
            } else {
                message.to_string()
            };
            let loc = err.location().and_then(|l| loc_of(&l));
            Err(SyntaxError { message, loc })
        }
    }
}

fn loc_of(l: &Location) -> Option<Loc> {
    if l.line() == 0 {
        return None;
    }
    Some(Loc {
        line: u32::try_from(l.line()).unwrap_or(u32::MAX),
        column: u32::try_from(l.column()).unwrap_or(u32::MAX),
        len: u32::try_from(l.span().len()).unwrap_or(1),
        file: 0,
    })
}

fn to_node(source: &str, raw: Spanned<Raw>) -> Node {
    let loc = loc_of(&raw.referenced).unwrap_or_default();
    let kind = match raw.value {
        Raw::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let loc = loc_of(&k.referenced).unwrap_or_default();
                    let key = Key {
                        loc,
                        def: loc_of(&k.defined).unwrap_or(loc),
                        name: k.value,
                    };
                    (key, to_node(source, v))
                })
                .collect(),
        ),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(|n| to_node(source, n)).collect()),
        Raw::Null => Kind::Null,
        Raw::Str(text) => Kind::Scalar(Scalar {
            text,
            ty: ScalarType::Str,
        }),
        Raw::Other(ty, decoded) => {
            // Plain scalars that YAML resolved to a number or boolean keep their source text.
            let span = raw.defined.span();
            let text = span
                .byte_offset()
                .zip(span.byte_len())
                .and_then(|(start, len)| {
                    let start = usize::try_from(start).ok()?;
                    let end = start.checked_add(usize::try_from(len).ok()?)?;
                    source.get(start..end)
                })
                .filter(|t| !t.is_empty())
                .map_or(decoded, str::to_string);
            Kind::Scalar(Scalar { text, ty })
        }
    };
    Node { kind, loc }
}

/// What serde-saphyr hands us; converted to [`Node`] right away.
enum Raw {
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
    Seq(Vec<Spanned<Raw>>),
    Str(String),
    /// A non-string scalar: its type and its decoded value (fallback text).
    Other(ScalarType, String),
    Null,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Other(ScalarType::Int, v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Other(ScalarType::Int, v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Other(ScalarType::Int, v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Other(ScalarType::Int, v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Other(ScalarType::Float, v.to_string()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Other(ScalarType::Bool, v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::{Kind, parse_tree};

    #[test]
    fn a_key_copied_by_a_merge_key_is_defined_in_the_anchor() {
        let tree = parse_tree("x: &a\n  k: 1\ny:\n  <<: *a\n  j: 2\n").unwrap();
        let Kind::Map(top) = &tree.kind else { panic!() };
        let Kind::Map(y) = &top[1].1.kind else {
            panic!()
        };
        let k = &y.iter().find(|(k, _)| k.name == "k").unwrap().0;
        let j = &y.iter().find(|(k, _)| k.name == "j").unwrap().0;
        assert_eq!((k.def.line, k.def.column), (2, 3));
        assert_eq!(j.def, j.loc);
    }
}
