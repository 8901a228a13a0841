//! The one YAML loader: parses text into a [`Node`] tree that remembers where every value and
//! key came from, substitutes `${VAR}` environment variables, applies `--set` overrides, and
//! deserializes typed configuration out of the tree with errors that carry line and column.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    /// A position in the YAML file (1-based line and column).
    File {
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
    },
    /// A `--set` override given on the command line.
    Set(String),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::File { line, column } => write!(f, "{line}:{column}"),
            Loc::Set(s) => write!(f, "--set {s}"),
        }
    }
}

/// A YAML value with its location.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it came from.
    pub loc: Option<Loc>,
    /// True when the scalar was produced by `${VAR}` substitution: it may then be read as a
    /// number or boolean even though it is stored as text.
    pub from_env: bool,
}

/// A YAML value.
#[derive(Debug, Clone)]
pub enum Value {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its location.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key stands.
    pub loc: Option<Loc>,
}

impl Node {
    /// A node built from code or an override, with the given location.
    pub fn new(value: Value, loc: Option<Loc>) -> Node {
        Node {
            value,
            loc,
            from_env: false,
        }
    }

    /// The entries when this node is a mapping.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The string when this node is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The key entry named `key` when this node is a mapping.
    pub fn key(&self, key: &str) -> Option<&Key> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k)
    }

    /// Follows a path of mapping keys and sequence indices; returns the node found.
    pub fn path(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match &node.value {
                Value::Map(_) => node.get(seg)?,
                Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// A copy of this mapping node without `key`.
    pub fn without_key(&self, key: &str) -> Node {
        let mut n = self.clone();
        if let Value::Map(m) = &mut n.value {
            m.retain(|(k, _)| k.name != key);
        }
        n
    }

    /// Converts to JSON (used for hashing the resolved configuration).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

fn loc_of(l: &serde_saphyr::Location) -> Option<Loc> {
    if l.line() == 0 {
        None
    } else {
        Some(Loc::File {
            line: l.line(),
            column: l.column(),
        })
    }
}

struct RawValue(Value);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<RawValue>::deserialize(d)?;
        Ok(Node::new(s.value.0, loc_of(&s.referenced)))
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue(Value::Null))
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
                RawValue::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
                Ok(RawValue(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue(Value::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
                Ok(RawValue(match i64::try_from(v) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::UInt(v),
                }))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
                Ok(RawValue(Value::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue(Value::Str(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
                Ok(RawValue(Value::Str(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = a.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(RawValue(Value::Seq(items)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<RawValue, A::Error> {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                while let Some(k) = a.next_key::<Spanned<KeyText>>()? {
                    let v = a.next_value::<Node>()?;
                    let name = k.value.0;
                    if entries.iter().any(|(e, _)| e.name == name) {
                        return Err(de::Error::custom(format!("duplicate key `{name}`")));
                    }
                    entries.push((
                        Key {
                            name,
                            loc: loc_of(&k.referenced),
                        },
                        v,
                    ));
                }
                Ok(RawValue(Value::Map(entries)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping key: any scalar, kept as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML syntax error or a deserialization error, with the location it was found at.
#[derive(Debug, Clone)]
pub struct NodeError {
    /// What is wrong.
    pub message: String,
    /// Where, when known.
    pub loc: Option<Loc>,
}

impl NodeError {
    fn at(mut self, loc: &Option<Loc>) -> Self {
        if self.loc.is_none() {
            self.loc = loc.clone();
        }
        self
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl de::Error for NodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NodeError {
            message: add_suggestion(&msg.to_string()),
            loc: None,
        }
    }
}

/// Parses YAML text into a [`Node`] tree.
///
/// # Errors
/// A syntax error, with its line and column.
pub fn parse(text: &str) -> Result<Node, NodeError> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Map(Vec::new()), None));
    }
    // YAML 1.2 booleans only (`true`/`false`): `n`, `y`, `on`, `off`, `yes`, `no` stay strings,
    // so keys such as `n:` and values such as `[x, y]` mean what they say.
    let options = serde_saphyr::options!(strict_booleans: true);
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let loc = e.location().and_then(|l| loc_of(&l));
        NodeError {
            message: first_line(&e.to_string()),
            loc,
        }
    })
}

fn first_line(s: &str) -> String {
    // serde-saphyr may render a snippet below the message; keep the message itself.
    let msg = s.lines().next().unwrap_or(s).trim().to_string();
    // Strip a trailing " at line X column Y" that duplicates our own location prefix.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// Deserializes a typed value out of `node`.
///
/// # Errors
/// The first problem serde meets, with the location of the innermost node involved.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, NodeError> {
    T::deserialize(node).map_err(|e| e.at(&node.loc))
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string scalar (not in keys). `$${` is a
/// literal `${`. Returns one error per undefined variable.
pub fn substitute_env(node: &mut Node, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<NodeError> {
    let mut errors = Vec::new();
    subst_rec(node, lookup, &mut errors);
    errors
}

fn subst_rec(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<NodeError>,
) {
    match &mut node.value {
        Value::Str(s) if s.contains('$') => match expand(s, lookup) {
            Ok(Some(new)) => {
                node.value = Value::Str(new);
                node.from_env = true;
            }
            Ok(None) => {}
            Err(msg) => errors.push(NodeError {
                message: msg,
                loc: node.loc.clone(),
            }),
        },
        Value::Seq(items) => items.iter_mut().for_each(|n| subst_rec(n, lookup, errors)),
        Value::Map(m) => m.iter_mut().for_each(|(_, n)| subst_rec(n, lookup, errors)),
        _ => {}
    }
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
            changed = true;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.find(":-") {
                Some(j) => (&expr[..j], Some(&expr[j + 2..])),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "invalid environment variable name `{name}` in {s:?}"
                ));
            }
            match lookup(name).or_else(|| default.map(str::to_string)) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                    ));
                }
            }
            rest = &body[end + 1..];
            changed = true;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(changed.then_some(out))
}

/// Applies one `path.to.key=value` override. The value is parsed as YAML (so `4`, `true`,
/// `[a, b]` keep their types); missing mapping keys are created.
///
/// # Errors
/// A malformed override, or a path that runs through a scalar.
pub fn apply_override(root: &mut Node, spec: &str) -> Result<(), NodeError> {
    let err = |m: String| NodeError {
        message: m,
        loc: Some(Loc::Set(spec.to_string())),
    };
    let (path, raw) = spec
        .split_once('=')
        .ok_or_else(|| err("expected `path.to.key=value`".into()))?;
    let segs: Vec<&str> = path.split('.').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(err(format!("empty segment in path `{path}`")));
    }
    let mut value = if raw.trim().is_empty() {
        Node::new(Value::Str(String::new()), None)
    } else {
        parse(raw).map_err(|e| err(format!("value `{raw}` is not valid YAML: {}", e.message)))?
    };
    relocate(&mut value, &Loc::Set(spec.to_string()));
    let mut node = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match &mut node.value {
            Value::Map(m) => {
                let pos = match m.iter().position(|(k, _)| k.name == *seg) {
                    Some(p) => p,
                    None => {
                        m.push((
                            Key {
                                name: seg.to_string(),
                                loc: Some(Loc::Set(spec.to_string())),
                            },
                            Node::new(Value::Map(Vec::new()), Some(Loc::Set(spec.to_string()))),
                        ));
                        m.len() - 1
                    }
                };
                if last {
                    m[pos].1 = value;
                    return Ok(());
                }
                node = &mut m[pos].1;
            }
            Value::Seq(items) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| err(format!("`{seg}` indexes a sequence: expected a number")))?;
                let len = items.len();
                let item = items.get_mut(idx).ok_or_else(|| {
                    err(format!(
                        "index {idx} is out of range (the sequence has {len} items)"
                    ))
                })?;
                if last {
                    *item = value;
                    return Ok(());
                }
                node = item;
            }
            other => {
                let kind = Node::new(other.clone(), None).kind();
                return Err(err(format!(
                    "`{}` is {kind}, so it has no key `{seg}`",
                    segs[..i].join(".")
                )));
            }
        }
    }
    Ok(())
}

fn relocate(node: &mut Node, loc: &Loc) {
    node.loc = Some(loc.clone());
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| relocate(n, loc)),
        Value::Map(m) => m.iter_mut().for_each(|(k, n)| {
            k.loc = Some(loc.clone());
            relocate(n, loc)
        }),
        _ => {}
    }
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" (and the same for variants)
/// with a "did you mean" suggestion when a candidate is close.
fn add_suggestion(msg: &str) -> String {
    let Some(rest) = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("unknown variant `"))
    else {
        return msg.to_string();
    };
    let Some(end) = rest.find('`') else {
        return msg.to_string();
    };
    let bad = &rest[..end];
    let candidates: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    match suggest(bad, candidates.iter().copied()) {
        Some(s) => format!("{msg}; did you mean `{s}`?"),
        None => msg.to_string(),
    }
}

/// The closest candidate to `bad`, when one is close enough to be a likely typo.
pub fn suggest<'a>(bad: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(bad, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

// ---- serde Deserializer over &Node -------------------------------------------------------

fn invalid(node: &Node, exp: &dyn de::Expected) -> NodeError {
    let unexp = match &node.value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(i) => de::Unexpected::Signed(*i),
        Value::UInt(u) => de::Unexpected::Unsigned(*u),
        Value::Float(f) => de::Unexpected::Float(*f),
        Value::Str(s) => de::Unexpected::Str(s),
        Value::Seq(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    };
    <NodeError as de::Error>::invalid_type(unexp, exp).at(&node.loc)
}

/// A scalar produced by env substitution, resolved like a plain YAML scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        "null" | "~" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Int(i);
    }
    if let Ok(u) = s.parse::<u64>() {
        return Value::UInt(u);
    }
    if s.contains(['.', 'e', 'E'])
        && let Ok(f) = s.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(s.to_string())
}

impl<'de> Deserializer<'de> for &Node {
    type Error = NodeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        let resolved;
        let value = match (&self.value, self.from_env) {
            (Value::Str(s), true) => {
                resolved = resolve_plain(s);
                &resolved
            }
            (v, _) => v,
        };
        let r = match value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::UInt(u) => v.visit_u64(*u),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Seq(items) => v.visit_seq(SeqAccess { it: items.iter() }),
            Value::Map(m) => v.visit_map(MapAccess {
                it: m.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.at(&self.loc))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        match &self.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
        .map_err(|e| e.at(&self.loc))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        match &self.value {
            Value::Str(s) => v.visit_str(s).map_err(|e: NodeError| e.at(&self.loc)),
            _ => Err(invalid(self, &v)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        match &self.value {
            Value::Seq(items) => v
                .visit_seq(SeqAccess { it: items.iter() })
                .map_err(|e| e.at(&self.loc)),
            _ => Err(invalid(self, &v)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, NodeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        match &self.value {
            Value::Map(m) => v
                .visit_map(MapAccess {
                    it: m.iter(),
                    value: None,
                })
                .map_err(|e| e.at(&self.loc)),
            _ => Err(invalid(self, &v)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, NodeError> {
        self.deserialize_map(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, NodeError> {
        v.visit_newtype_struct(self).map_err(|e| e.at(&self.loc))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, NodeError> {
        match &self.value {
            Value::Str(s) => v
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: NodeError| e.at(&self.loc)),
            Value::Map(m) if m.len() == 1 => v
                .visit_enum(EnumAccess {
                    key: &m[0].0,
                    value: &m[0].1,
                })
                .map_err(|e| e.at(&self.loc)),
            _ => Err(invalid(self, &v)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NodeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        tuple_struct
    }
}

struct SeqAccess<'a> {
    it: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = NodeError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, NodeError> {
        match self.it.next() {
            Some(n) => seed.deserialize(n).map(Some).map_err(|e| e.at(&n.loc)),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

struct MapAccess<'a> {
    it: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = NodeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, NodeError> {
        match self.it.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let d: de::value::StrDeserializer<'_, NodeError> =
                    k.name.as_str().into_deserializer();
                seed.deserialize(d).map(Some).map_err(|e| e.at(&k.loc))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, NodeError> {
        let n = self
            .value
            .take()
            .expect("next_value_seed called before next_key_seed");
        seed.deserialize(n).map_err(|e| e.at(&n.loc))
    }
}

struct EnumAccess<'a> {
    key: &'a Key,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = NodeError;
    type Variant = &'a Node;
    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'a Node), NodeError> {
        let d: de::value::StrDeserializer<'_, NodeError> =
            self.key.name.as_str().into_deserializer();
        let v = seed.deserialize(d).map_err(|e| e.at(&self.key.loc))?;
        Ok((v, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for &Node {
    type Error = NodeError;
    fn unit_variant(self) -> Result<(), NodeError> {
        match self.value {
            Value::Null => Ok(()),
            _ => Err(invalid(self, &"a unit variant")),
        }
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, NodeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, NodeError> {
        self.deserialize_seq(v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, NodeError> {
        self.deserialize_map(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        a: u32,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn locates_values_and_keys() {
        let n = parse("top:\n  a: 1\n  b: [x, y]\n").unwrap();
        let a = n.path(&["top", "a"]).unwrap();
        assert_eq!(a.loc, Some(Loc::File { line: 2, column: 6 }));
        let key = n.get("top").unwrap().key("b").unwrap();
        assert_eq!(key.loc, Some(Loc::File { line: 3, column: 3 }));
        let y = n.path(&["top", "b", "1"]).unwrap();
        assert_eq!(y.as_str(), Some("y"));
    }

    #[test]
    fn unknown_field_is_located_with_suggestion() {
        let n = parse("a: 1\nnmae: x\n").unwrap();
        let e = from_node::<S>(&n).unwrap_err();
        assert_eq!(e.loc, Some(Loc::File { line: 2, column: 1 }));
        assert!(e.message.contains("did you mean `name`?"), "{}", e.message);
    }

    #[test]
    fn wrong_type_is_located_at_the_value() {
        let n = parse("a: lots\n").unwrap();
        let e = from_node::<S>(&n).unwrap_err();
        assert_eq!(e.loc, Some(Loc::File { line: 1, column: 4 }));
        assert!(e.message.contains("expected u32"), "{}", e.message);
    }

    #[test]
    fn env_substitution_resolves_types_and_defaults() {
        let mut n = parse("a: ${N}\nname: \"${WHO:-anon}-x\"\n").unwrap();
        let errs = substitute_env(&mut n, &|k| (k == "N").then(|| "12".to_string()));
        assert!(errs.is_empty());
        let s: S = from_node(&n).unwrap();
        assert_eq!(s.a, 12);
        assert_eq!(s.name.as_deref(), Some("anon-x"));
        let mut n = parse("a: ${MISSING}\n").unwrap();
        let errs = substitute_env(&mut n, &|_| None);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("`MISSING` is not set"));
        assert_eq!(errs[0].loc, Some(Loc::File { line: 1, column: 4 }));
    }

    #[test]
    fn overrides_replace_and_create_keys() {
        let mut n = parse("a: 1\nsub:\n  list: [1, 2]\n").unwrap();
        apply_override(&mut n, "a=5").unwrap();
        apply_override(&mut n, "sub.list.1=7").unwrap();
        apply_override(&mut n, "sub.new.deep=hello").unwrap();
        assert!(matches!(n.get("a").unwrap().value, Value::Int(5)));
        assert!(matches!(
            n.path(&["sub", "list", "1"]).unwrap().value,
            Value::Int(7)
        ));
        assert_eq!(
            n.path(&["sub", "new", "deep"]).unwrap().as_str(),
            Some("hello")
        );
        let e = apply_override(&mut n, "a.b=1").unwrap_err();
        assert!(e.message.contains("has no key `b`"), "{}", e.message);
        assert!(apply_override(&mut n, "novalue").is_err());
    }

    #[test]
    fn syntax_error_has_a_location() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.loc.is_some(), "{e:?}");
    }
}
