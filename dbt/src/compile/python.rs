//! The Python semantics dbt's Jinja has and minijinja's does not (dbt renders with Jinja2 on
//! Python: every value is a Python object): mutable lists and dicts, `return()` from
//! anywhere in a macro, Python's list/dict/str methods, and dbt's context functions over
//! values (`tojson`, `fromjson`, `toyaml`, `fromyaml`, `zip`, `set`, `set_strict`) and
//! `modules` (`re` here, `datetime` and `pytz` in [`super::datetime`]). Source: dbt's "Jinja and macros" reference (docs.getdbt.com/reference/dbt-jinja-functions).
//!
//! Two source rewrites, both keeping every line where it was (errors keep their file:line):
//! - list and dict literals `[…]`, `{…}` inside tags become `__rb_list([…])`/`__rb_dict({…})`,
//!   values with Python's mutating methods (`append`, `extend`, `update`, `pop`, …);
//! - after each `{% endmacro %}` comes `{% set name = __rb_macro(name) %}`: the macro called
//!   through a wrapper that turns `return(x)` — an error unwinding the macro's rendering, as
//!   dbt's is an exception — into the call's value.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

/// Words after which `[` starts a list literal, not a subscript.
const KEYWORDS: &[&str] = &[
    "in", "and", "or", "not", "if", "else", "elif", "is", "set", "for", "do", "with", "print",
];

#[derive(Clone, Copy, PartialEq)]
enum Prev {
    /// Start of a tag, an operator, `(`, `,`, `:` or a keyword: `[` starts a literal.
    Operator,
    /// A name, literal or closing bracket: `[` is a subscript.
    Operand,
}

/// Rewrites list/dict literals and macro ends (see the module doc). Text outside tags, comments
/// and `{% raw %}` blocks are left as they are.
pub(crate) fn python_compat(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut macros: Vec<String> = Vec::new();
    while i < text.len() {
        let rest = &text[i..];
        let Some(open) = rest.find('{') else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..open]);
        i += open;
        match bytes.get(i + 1) {
            Some(b'#') => {
                let end = text[i..]
                    .find("#}")
                    .map(|e| i + e + 2)
                    .unwrap_or(text.len());
                out.push_str(&text[i..end]);
                i = end;
            }
            Some(b'{') | Some(b'%') => {
                let is_tag = bytes[i + 1] == b'%';
                let (body_start, end, after) = region(text, i + 2, is_tag);
                let inner = &text[body_start..end];
                let word = tag_word(inner);
                if is_tag && word == "raw" {
                    let stop = text[i..]
                        .find("endraw")
                        .and_then(|e| text[i + e..].find("%}").map(|c| i + e + c + 2))
                        .unwrap_or(text.len());
                    out.push_str(&text[i..stop]);
                    i = stop;
                    continue;
                }
                out.push_str(&text[i..body_start]);
                out.push_str(&rewrite_literals(&execute_comparisons(inner), is_tag));
                out.push_str(&text[end..after]);
                if is_tag && word == "macro" {
                    let name: String = inner
                        .trim_start_matches(['-', '+'])
                        .trim_start()
                        .trim_start_matches("macro")
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    macros.push(name);
                } else if is_tag
                    && word == "endmacro"
                    && let Some(name) = macros.pop().filter(|n| !n.is_empty())
                {
                    out.push_str(&format!("{{% set {name} = __rb_macro({name}) %}}"));
                }
                i = after;
            }
            _ => {
                out.push('{');
                i += 1;
            }
        }
    }
    out
}

/// `execute == true` (and `== false`, `!=`, `is true`, `is false`, either capitalisation) as
/// `(execute)` / `(not execute)`: dbt's `execute` is a boolean, Rainbow's an object whose
/// reading is recorded (a comparison would be false and unrecorded).
fn execute_comparisons(inner: &str) -> std::borrow::Cow<'_, str> {
    static COMPARISON: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = COMPARISON.get_or_init(|| {
        regex::Regex::new(r"\bexecute\s*(==|!=|\bis\s+not\b|\bis\b)\s*(true|True|false|False)\b")
            .ok()
    });
    match re {
        Some(re) if inner.contains("execute") => re.replace_all(inner, |c: &regex::Captures| {
            let positive = matches!(&c[1], "==") || c[1].trim() == "is";
            let truthy = c[2].eq_ignore_ascii_case("true");
            if positive == truthy {
                "(execute)".to_owned()
            } else {
                "(not execute)".to_owned()
            }
        }),
        _ => std::borrow::Cow::Borrowed(inner),
    }
}

/// The first word of a tag's inside (`set`, `macro`, `endmacro`, …).
fn tag_word(inner: &str) -> &str {
    let t = inner.trim_start_matches(['-', '+']).trim_start();
    let end = t
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    &t[..end]
}

/// Where a tag's inside ends (the index of its closing `%}`/`}}`, or of the `-` before it),
/// skipping strings and nested braces: `(start, end)` of the inside and the index after the
/// closing delimiter.
fn region(text: &str, start: usize, is_tag: bool) -> (usize, usize, usize) {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' if !is_tag && depth == 0 && bytes.get(i + 1) == Some(&b'}') => {
                return (start, i, i + 2);
            }
            b'}' => depth = depth.saturating_sub(1),
            b'%' if is_tag && depth == 0 && bytes.get(i + 1) == Some(&b'}') => {
                // `-%}`: the dash belongs to the delimiter.
                let end = if i > start && bytes[i - 1] == b'-' {
                    i - 1
                } else {
                    i
                };
                return (start, end, i + 2);
            }
            _ => {}
        }
        i += 1;
    }
    (start, text.len(), text.len())
}

/// Wraps list and dict literals of one tag's inside in `__rb_list(…)`/`__rb_dict(…)`.
fn rewrite_literals(inner: &str, is_tag: bool) -> String {
    let mut out = String::with_capacity(inner.len() + 16);
    let chars: Vec<char> = inner.chars().collect();
    let mut prev = Prev::Operator;
    // For each open bracket: whether its close needs a `)`.
    let mut stack: Vec<bool> = Vec::new();
    let mut i = 0;
    let mut first_word = is_tag;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(chars.len());
                out.extend(&chars[start..i]);
                prev = Prev::Operand;
                continue;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                prev = if first_word || KEYWORDS.contains(&word.as_str()) {
                    Prev::Operator
                } else {
                    Prev::Operand
                };
                first_word = false;
                out.push_str(&word);
                continue;
            }
            c if c.is_ascii_digit() => {
                out.push(c);
                prev = Prev::Operand;
            }
            '[' if prev == Prev::Operator => {
                out.push_str("__rb_list([");
                stack.push(true);
                prev = Prev::Operator;
            }
            '{' => {
                out.push_str("__rb_dict({");
                stack.push(true);
                prev = Prev::Operator;
            }
            '[' | '(' => {
                out.push(c);
                stack.push(false);
                prev = Prev::Operator;
            }
            ']' | '}' | ')' => {
                out.push(c);
                if stack.pop() == Some(true) {
                    out.push(')');
                }
                prev = Prev::Operand;
            }
            c if c.is_whitespace() => out.push(c),
            '-' if i == 0 => out.push(c),
            _ => {
                out.push(c);
                prev = Prev::Operator;
            }
        }
        i += 1;
    }
    out
}

/// A Python list: a sequence with `append`, `extend`, `insert`, `pop`, `remove`, `index`,
/// `reverse`, `copy`, `count`.
#[derive(Debug, Default)]
pub(crate) struct List(Mutex<Vec<Value>>);

impl List {
    fn items(&self) -> Vec<Value> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn list_value(items: Vec<Value>) -> Value {
    Value::from_object(List(Mutex::new(items)))
}

fn one_arg<'a>(method: &str, args: &'a [Value]) -> Result<&'a Value, Error> {
    match args {
        [a] => Ok(a),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "{method}() takes exactly one argument ({} given)",
                args.len()
            ),
        )),
    }
}

fn index(len: usize, i: i64) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

impl Object for List {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.0.lock().ok()?;
        let i = index(items.len(), i64::try_from(key.clone()).ok()?)?;
        items.get(i).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        self.0.lock().ok().map(|v| v.len())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let poisoned = || Error::new(ErrorKind::InvalidOperation, "list lock poisoned");
        let mut items = self.0.lock().map_err(|_| poisoned())?;
        match method {
            "append" => items.push(one_arg(method, args)?.clone()),
            "extend" => {
                let more: Vec<Value> = one_arg(method, args)?.try_iter()?.collect();
                items.extend(more);
            }
            "insert" => {
                let [at, value] = args else {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "insert() takes an index and a value",
                    ));
                };
                let len = items.len() as i64;
                let at = i64::try_from(at.clone())?;
                let at = if at < 0 {
                    (len + at).max(0)
                } else {
                    at.min(len)
                };
                items.insert(at as usize, value.clone());
            }
            "pop" => {
                let at = match args.first() {
                    Some(a) => i64::try_from(a.clone())?,
                    None => -1,
                };
                let i = index(items.len(), at).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "pop index out of range")
                })?;
                return Ok(items.remove(i));
            }
            "remove" => {
                let v = one_arg(method, args)?;
                let i = items.iter().position(|x| x == v).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("list.remove({v}): not in list"),
                    )
                })?;
                items.remove(i);
            }
            "index" => {
                let v = one_arg(method, args)?;
                return items
                    .iter()
                    .position(|x| x == v)
                    .map(Value::from)
                    .ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, format!("{v} is not in list"))
                    });
            }
            "count" => {
                let v = one_arg(method, args)?;
                return Ok(Value::from(items.iter().filter(|x| *x == v).count()));
            }
            "reverse" => items.reverse(),
            "sort" => {
                // `sort(reverse=True)`; a `key=` function cannot be given from Jinja.
                let reverse = match args.last().filter(|a| a.is_kwargs()) {
                    Some(k) => {
                        let k = Kwargs::try_from(k.clone())?;
                        let reverse: Option<bool> = k.get("reverse")?;
                        k.assert_all_used()?;
                        reverse.unwrap_or(false)
                    }
                    None => false,
                };
                items.sort();
                if reverse {
                    items.reverse();
                }
            }
            "clear" => items.clear(),
            "copy" => return Ok(list_value(items.clone())),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }
        Ok(Value::from(()))
    }
}

/// A Python dict (insertion-ordered): a map with `update`, `pop`, `setdefault`, `get`,
/// `items`, `keys`, `values`, `copy`, `clear`.
#[derive(Debug, Default)]
pub(crate) struct Dict(Mutex<Vec<(Value, Value)>>);

impl Dict {
    fn entries(&self) -> Vec<(Value, Value)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn set(entries: &mut Vec<(Value, Value)>, key: Value, value: Value) {
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => entries.push((key, value)),
        }
    }
}

fn dict_value(entries: Vec<(Value, Value)>) -> Value {
    Value::from_object(Dict(Mutex::new(entries)))
}

/// The entries of a map-like value, in its order.
fn map_entries(value: &Value) -> Result<Vec<(Value, Value)>, Error> {
    if let Some(d) = value.downcast_object_ref::<Dict>() {
        return Ok(d.entries());
    }
    if value.kind() != ValueKind::Map {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("expected a dict, got {}", value.kind()),
        ));
    }
    value
        .try_iter()?
        .map(|k| {
            let v = value.get_item(&k)?;
            Ok((k, v))
        })
        .collect()
}

impl Object for Dict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let entries = self.0.lock().ok()?;
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.entries().into_iter().map(|(k, _)| k).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        self.0.lock().ok().map(|v| v.len())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let poisoned = || Error::new(ErrorKind::InvalidOperation, "dict lock poisoned");
        let (args, kwargs): (&[Value], Option<Kwargs>) = super::datetime::split_args(args)?;
        match method {
            "update" => {
                let mut new = Vec::new();
                for a in args {
                    new.extend(map_entries(a)?);
                }
                if let Some(kw) = &kwargs {
                    for k in kw.args() {
                        new.push((Value::from(k), kw.get::<Value>(k)?));
                    }
                }
                let mut entries = self.0.lock().map_err(|_| poisoned())?;
                for (k, v) in new {
                    Dict::set(&mut entries, k, v);
                }
                Ok(Value::from(()))
            }
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                Ok(self
                    .get_value(&key)
                    .or_else(|| args.get(1).cloned())
                    .unwrap_or(Value::from(())))
            }
            "pop" => {
                let key = args.first().cloned().unwrap_or_default();
                let mut entries = self.0.lock().map_err(|_| poisoned())?;
                match entries.iter().position(|(k, _)| *k == key) {
                    Some(i) => Ok(entries.remove(i).1),
                    None => args.get(1).cloned().ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, format!("KeyError: {key}"))
                    }),
                }
            }
            "setdefault" => {
                let key = args.first().cloned().unwrap_or_default();
                let default = args.get(1).cloned().unwrap_or(Value::from(()));
                let mut entries = self.0.lock().map_err(|_| poisoned())?;
                if let Some((_, v)) = entries.iter().find(|(k, _)| *k == key) {
                    return Ok(v.clone());
                }
                entries.push((key, default.clone()));
                Ok(default)
            }
            "items" => Ok(list_value(
                self.entries()
                    .into_iter()
                    .map(|(k, v)| Value::from(vec![k, v]))
                    .collect(),
            )),
            "keys" => Ok(list_value(
                self.entries().into_iter().map(|(k, _)| k).collect(),
            )),
            "values" => Ok(list_value(
                self.entries().into_iter().map(|(_, v)| v).collect(),
            )),
            "copy" => Ok(dict_value(self.entries())),
            "clear" => {
                self.0.lock().map_err(|_| poisoned())?.clear();
                Ok(Value::from(()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

thread_local! {
    /// One slot per macro call being rendered on this thread (innermost last): what its
    /// `return()` gave.
    static RETURNS: RefCell<Vec<Option<Value>>> = const { RefCell::new(Vec::new()) };
}

/// A macro called through dbt's semantics: its value is what `return()` gave, else its text.
#[derive(Debug)]
pub(crate) struct DbtMacro(Value);

impl Object for DbtMacro {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        RETURNS.with(|r| r.borrow_mut().push(None));
        let result = self.0.call(state, args);
        let returned = RETURNS.with(|r| r.borrow_mut().pop()).flatten();
        match (result, returned) {
            (_, Some(v)) => Ok(v),
            (r, None) => r,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0
            .get_attr(key.as_str()?)
            .ok()
            .filter(|v| !v.is_undefined())
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `return(value)`: ends the innermost macro call with `value`.
fn dbt_return(value: Option<Value>) -> Result<Value, Error> {
    let set = RETURNS.with(|r| match r.borrow_mut().last_mut() {
        Some(slot) => {
            *slot = Some(value.unwrap_or(Value::from(())));
            true
        }
        None => false,
    });
    if set {
        // Unwinds the macro's rendering up to its DbtMacro wrapper.
        Err(Error::new(ErrorKind::InvalidOperation, "return()"))
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            "return() outside a macro",
        ))
    }
}

/// `json.dumps(value, sort_keys=…)`'s text: Python's separators (`", "`, `": "`) and
/// `ensure_ascii` (non-ASCII as `\uXXXX`).
fn python_json(v: &Value, sort: bool) -> Result<String, Error> {
    struct Python;
    impl serde_json::ser::Formatter for Python {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
        fn write_string_fragment<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            fragment: &str,
        ) -> std::io::Result<()> {
            for c in fragment.chars() {
                if c.is_ascii() {
                    write!(w, "{c}")?;
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        write!(w, "\\u{u:04x}")?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Python);
    let written = if sort {
        let json = serde_json::to_value(v).map_err(|e| json_error("tojson", e))?;
        serde::Serialize::serialize(&json, &mut ser)
    } else {
        serde::Serialize::serialize(v, &mut ser)
    };
    written.map_err(|e| json_error("tojson", e))?;
    String::from_utf8(out).map_err(|e| json_error("tojson", e))
}

fn json_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{what}: {e}"))
}

/// A JSON/YAML document as a Jinja value keeping its keys in document order (Python's dicts
/// do; serde_json's maps sort them): mutable lists and dicts.
struct Ordered(Value);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON or YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(v)))
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(())))
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(())))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Ordered, D::Error> {
                <Ordered as serde::Deserialize>::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(Ordered(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Ordered(list_value(items)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((Ordered(k), Ordered(v))) = map.next_entry()? {
                    entries.push((k, v));
                }
                Ok(Ordered(dict_value(entries)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `modules.re`: Python's `re` over the regex crate (`search`, `match`, `fullmatch`,
/// `findall`, `sub`, `split`, `escape`, `compile`). Match objects answer `group(n)` and
/// `groups()`.
#[derive(Debug)]
struct Re;

#[derive(Debug)]
struct Pattern(regex::Regex);

#[derive(Debug)]
struct Match(Vec<Option<String>>);

const RE_IGNORECASE: i64 = 2;
const RE_MULTILINE: i64 = 8;
const RE_DOTALL: i64 = 16;
const RE_VERBOSE: i64 = 64;

/// The pattern compiled with Python's flags.
fn regex_with(v: &Value, flags: i64) -> Result<regex::Regex, Error> {
    if flags == 0 {
        return regex_of(v);
    }
    let s = v.as_str().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "modules.re: the pattern must be a string",
        )
    })?;
    regex::RegexBuilder::new(s)
        .case_insensitive(flags & RE_IGNORECASE != 0)
        .multi_line(flags & RE_MULTILINE != 0)
        .dot_matches_new_line(flags & RE_DOTALL != 0)
        .ignore_whitespace(flags & RE_VERBOSE != 0)
        .build()
        .map_err(|e| json_error(&format!("modules.re: pattern `{s}`"), e))
}

fn regex_of(v: &Value) -> Result<regex::Regex, Error> {
    if let Some(p) = v.downcast_object_ref::<Pattern>() {
        return Ok(p.0.clone());
    }
    let s = v.as_str().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "modules.re: the pattern must be a string",
        )
    })?;
    regex::Regex::new(s).map_err(|e| json_error(&format!("modules.re: pattern `{s}`"), e))
}

fn re_call(method: &str, re: &regex::Regex, args: &[Value]) -> Result<Value, Error> {
    let text = |i: usize| -> Result<String, Error> {
        args.get(i)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("modules.re.{method}: argument {} must be a string", i + 1),
                )
            })
    };
    let to_match = |c: regex::Captures| {
        Value::from_object(Match(
            c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect(),
        ))
    };
    match method {
        "search" => Ok(re
            .captures(&text(0)?)
            .map(to_match)
            .unwrap_or(Value::from(()))),
        "match" | "fullmatch" => {
            let s = text(0)?;
            Ok(re
                .captures(&s)
                .filter(|c| {
                    c.get(0).is_some_and(|m| {
                        m.start() == 0 && (method == "match" || m.end() == s.len())
                    })
                })
                .map(to_match)
                .unwrap_or(Value::from(())))
        }
        "findall" => {
            let s = text(0)?;
            Ok(list_value(
                re.captures_iter(&s)
                    .map(|c| match c.len() {
                        1 => Value::from(c.get(0).map(|m| m.as_str()).unwrap_or("")),
                        2 => Value::from(c.get(1).map(|m| m.as_str()).unwrap_or("")),
                        _ => Value::from(
                            c.iter()
                                .skip(1)
                                .map(|m| Value::from(m.map(|m| m.as_str()).unwrap_or("")))
                                .collect::<Vec<_>>(),
                        ),
                    })
                    .collect(),
            ))
        }
        "sub" => {
            let (replacement, s) = (text(0)?, text(1)?);
            // Python's `$` is literal (the regex crate's `$$`); `\1` and `\g<1>` are `${1}`.
            let replacement = replacement.replace('$', "$$");
            let replacement = regex::Regex::new(r"\\(?:g<)?(\d+)>?")
                .map(|r| r.replace_all(&replacement, "$${$1}").into_owned())
                .unwrap_or(replacement);
            Ok(Value::from(
                re.replace_all(&s, replacement.as_str()).into_owned(),
            ))
        }
        "split" => Ok(list_value(re.split(&text(0)?).map(Value::from).collect())),
        _ => Err(Error::new(
            ErrorKind::UnknownMethod,
            format!("modules.re has no function `{method}`"),
        )),
    }
}

impl Object for Re {
    /// The flags: `re.IGNORECASE`/`re.I`, `re.MULTILINE`/`re.M`, `re.DOTALL`/`re.S`,
    /// `re.VERBOSE`/`re.X` (Python's values).
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from(match key.as_str()? {
            "IGNORECASE" | "I" => RE_IGNORECASE,
            "MULTILINE" | "M" => RE_MULTILINE,
            "DOTALL" | "S" => RE_DOTALL,
            "VERBOSE" | "X" => RE_VERBOSE,
            _ => return None,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let pattern = args.first().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("modules.re.{method} needs a pattern"),
            )
        })?;
        // Flags: the argument after the text (`re.search(p, s, re.I)`; `re.sub(p, r, s, 0, f)`
        // takes a count first) or `flags=`.
        let (positional, kwargs) = super::datetime::split_args(args)?;
        let flag_at = match method {
            "compile" => 1,
            "sub" => 4,
            "split" => 3,
            _ => 2,
        };
        let flags = match (positional.get(flag_at), &kwargs) {
            (Some(f), _) => i64::try_from(f.clone())?,
            (None, Some(k)) => k.get::<Option<i64>>("flags")?.unwrap_or(0),
            (None, None) => 0,
        };
        let positional = &positional[..positional.len().min(flag_at)];
        match method {
            "escape" => Ok(Value::from(regex::escape(pattern.as_str().unwrap_or("")))),
            "compile" => Ok(Value::from_object(Pattern(regex_with(pattern, flags)?))),
            _ => re_call(method, &regex_with(pattern, flags)?, &positional[1..]),
        }
    }
}

impl Object for Pattern {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        re_call(method, &self.0, args)
    }
}

impl Object for Match {
    /// A match is true (Python's match objects are); no match is `none`.
    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let group = |i: usize| {
            self.0
                .get(i)
                .cloned()
                .map(|g| g.map(Value::from).unwrap_or(Value::from(())))
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "no such group"))
        };
        match method {
            "group" => match args {
                [] => group(0),
                [i] => group(usize::try_from(i.clone())?),
                many => many
                    .iter()
                    .map(|i| group(usize::try_from(i.clone())?))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::from),
            },
            "groups" => Ok(Value::from(
                self.0
                    .iter()
                    .skip(1)
                    .map(|g| g.clone().map(Value::from).unwrap_or(Value::from(())))
                    .collect::<Vec<_>>(),
            )),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `modules`: `re` (see [`Re`]), `datetime` and `pytz` (see [`super::datetime`]).
#[derive(Debug)]
struct Modules;

impl Object for Modules {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "re" => Some(Value::from_object(Re)),
            "datetime" => Some(Value::from_object(super::datetime::DatetimeModule)),
            "pytz" => Some(Value::from_object(super::datetime::Pytz)),
            _ => None,
        }
    }
}

/// Python's methods on values minijinja keeps immutable: pycompat's string/dict/list methods,
/// and a clear error for a mutating one called on such a value.
fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args) {
        Err(e) if e.kind() == ErrorKind::UnknownMethod => match (value.kind(), method) {
            (
                ValueKind::Seq | ValueKind::Map,
                "append" | "extend" | "insert" | "pop" | "remove" | "update" | "setdefault"
                | "clear",
            ) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{method}() on a {} that is not a Python list/dict (a filter's result): build it with [] or {{}} and append",
                    value.kind()
                ),
            )),
            _ => Err(e),
        },
        other => other,
    }
}

/// Registers the above on `env`.
pub(crate) fn register(env: &mut Environment<'_>) {
    env.set_unknown_method_callback(unknown_method);
    env.add_function("__rb_list", |v: Value| -> Result<Value, Error> {
        Ok(list_value(v.try_iter()?.collect()))
    });
    env.add_function("__rb_dict", |v: Value| -> Result<Value, Error> {
        Ok(dict_value(map_entries(&v)?))
    });
    env.add_function("__rb_macro", |m: Value| Value::from_object(DbtMacro(m)));
    env.add_function("return", dbt_return);
    env.add_function("list", |v: Option<Value>| -> Result<Value, Error> {
        Ok(list_value(match v {
            Some(v) => v.try_iter()?.collect(),
            None => Vec::new(),
        }))
    });
    env.add_function("dict", |kwargs: Kwargs| -> Result<Value, Error> {
        let mut entries = Vec::new();
        for k in kwargs.args() {
            entries.push((Value::from(k), kwargs.get::<Value>(k)?));
        }
        Ok(dict_value(entries))
    });
    // dbt's `tojson(value, default=None, sort_keys=False)` is Python's `json.dumps`: `", "`
    // and `": "` between items, non-ASCII escaped, keys in the dict's order unless sorted.
    env.add_function(
        "tojson",
        |v: Value, _default: Option<Value>, kwargs: Kwargs| -> Result<String, Error> {
            let sort: Option<bool> = kwargs.get("sort_keys")?;
            let _: Option<Value> = kwargs.get("default")?;
            kwargs.assert_all_used()?;
            python_json(&v, sort.unwrap_or(false))
        },
    );
    env.add_function(
        "fromjson",
        |s: String, default: Option<Value>| -> Result<Value, Error> {
            match (serde_json::from_str::<Ordered>(&s), default) {
                (Ok(Ordered(v)), _) => Ok(v),
                (Err(_), Some(d)) => Ok(d),
                (Err(e), None) => Err(json_error("fromjson", e)),
            }
        },
    );
    env.add_function("toyaml", |v: Value| -> Result<String, Error> {
        serde_norway::to_string(&v).map_err(|e| json_error("toyaml", e))
    });
    env.add_function(
        "fromyaml",
        |s: String, default: Option<Value>| -> Result<Value, Error> {
            match (serde_norway::from_str::<Ordered>(&s), default) {
                (Ok(Ordered(v)), _) => Ok(v),
                (Err(_), Some(d)) => Ok(d),
                (Err(e), None) => Err(json_error("fromyaml", e)),
            }
        },
    );
    env.add_function(
        "zip",
        |args: minijinja::value::Rest<Value>| -> Result<Value, Error> {
            let lists: Vec<Vec<Value>> = args
                .iter()
                .map(|a| a.try_iter().map(Iterator::collect))
                .collect::<Result<_, _>>()?;
            let n = lists.iter().map(Vec::len).min().unwrap_or(0);
            Ok(list_value(
                (0..n)
                    .map(|i| Value::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>()))
                    .collect(),
            ))
        },
    );
    // dbt's `set(value, default=None)`: the distinct items (None if not iterable);
    // `set_strict` fails instead.
    fn distinct(v: &Value) -> Result<Value, Error> {
        let mut out: Vec<Value> = Vec::new();
        for item in v.try_iter()? {
            if !out.contains(&item) {
                out.push(item);
            }
        }
        Ok(list_value(out))
    }
    env.add_function("set", |v: Value, default: Option<Value>| -> Value {
        distinct(&v).unwrap_or_else(|_| default.unwrap_or_default())
    });
    env.add_function("set_strict", |v: Value| distinct(&v));
}

/// `modules` (dbt's Python modules for Jinja).
pub(crate) fn modules() -> Value {
    Value::from_object(Modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_wrapped_and_subscripts_are_not() {
        assert_eq!(
            python_compat("{% set x = [] %}{{ x[0] }}{% do x.append({'a': [1]}) %}"),
            "{% set x = __rb_list([]) %}{{ x[0] }}{% do x.append(__rb_dict({'a': __rb_list([1])})) %}"
        );
        assert_eq!(
            python_compat("{%- for a in [1, 2] -%}{{ f(x)[1] }}{{ 'a]' ~ y['k'] }}{%- endfor %}"),
            "{%- for a in __rb_list([1, 2]) -%}{{ f(x)[1] }}{{ 'a]' ~ y['k'] }}{%- endfor %}"
        );
        // Comments, raw blocks and plain text are untouched; line count is kept.
        let text = "{# [1] #}{% raw %}{{ [1] }}{% endraw %} a [b] {c}\n{{ x }}";
        assert_eq!(python_compat(text), text);
    }

    #[test]
    fn execute_comparisons_are_its_truth() {
        assert_eq!(
            python_compat(
                "{% if execute == true and x %}{% if execute is not True %}{{ execute != false }}"
            ),
            "{% if (execute) and x %}{% if (not execute) %}{{ (execute) }}"
        );
        assert_eq!(
            python_compat("{{ executed == true }}"),
            "{{ executed == true }}"
        );
    }

    #[test]
    fn macro_ends_wrap_the_macro() {
        assert_eq!(
            python_compat("{% macro m(a) -%}\n{{ a }}\n{%- endmacro %}x"),
            "{% macro m(a) -%}\n{{ a }}\n{%- endmacro %}{% set m = __rb_macro(m) %}x"
        );
        assert_eq!(
            python_compat("{%- macro m() -%}{{ [1] }}{%- endmacro -%}\n"),
            "{%- macro m() -%}{{ __rb_list([1]) }}{%- endmacro -%}{% set m = __rb_macro(m) %}\n"
        );
    }

    fn render(template: &str) -> String {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        register(&mut env);
        env.add_global("modules", modules());
        let text = python_compat(template);
        env.render_str(&text, ())
            .unwrap_or_else(|e| format!("error: {e:#}"))
    }

    #[test]
    fn python_semantics_hold() {
        assert_eq!(
            render(
                "{% set c = [] %}{% do c.append('x') %}{% do c.extend(['y', 'z']) %}{{ c | join(',') }} {{ c.pop() }} {{ c | length }}"
            ),
            "x,y,z z 2"
        );
        assert_eq!(
            render(
                "{% set d = {} %}{% do d.update({'a': 1}) %}{% do d.setdefault('b', 2) %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ d.get('z', 0) }}"
            ),
            "a=1;b=2;0"
        );
        // return() from inside a loop ends the macro with its value (not text).
        assert_eq!(
            render(
                "{% macro p(n) %}{% for i in range(1, 100) %}{% if n <= 2 ** loop.index %}{{ return(loop.index) }}{% endif %}{% endfor %}{% endmacro %}{{ p(3651) + 1 }}"
            ),
            "13"
        );
        assert_eq!(
            render(
                "{% macro cols() %}{{ return(['a', 'b']) }}{% endmacro %}{% set c = cols() %}{% do c.append('c') %}{{ c | join('|') }}"
            ),
            "a|b|c"
        );
        // A macro without return() is its text.
        assert_eq!(render("{% macro t() %}hi{% endmacro %}[{{ t() }}]"), "[hi]");
        assert_eq!(
            render(
                "{{ tojson({'b': [1, 'x'], 'a': 2}) }} {{ fromjson('{\"k\": [1]}')['k'][0] }} {{ zip([1, 2], ['a', 'b']) | list | length }}"
            ),
            "{\"b\": [1, \"x\"], \"a\": 2} 1 2"
        );
        assert_eq!(
            render(
                "{{ modules.re.search('(\\\\d+)-(\\\\d+)', 'a 12-34').groups() | join(',') }} {{ modules.re.sub('a', 'b', 'aXa') }}"
            ),
            "12,34 bXb"
        );
        assert_eq!(
            render("{{ 'a,b'.split(',') | length }} {{ ' x '.strip() }}"),
            "2 x"
        );
        assert_eq!(
            render(
                "{% for k in fromjson('{\\\"b\\\": 1, \\\"a\\\": [2]}') %}{{ k }}{% endfor %}{% for k in fromyaml('z: 1\\na: 2') %}{{ k }}{% endfor %}"
            ),
            "baza"
        );
        assert_eq!(
            render("{{ tojson({'b': 'é', 'a': none}, sort_keys=true) }}"),
            "{\"a\": null, \"b\": \"\\u00e9\"}"
        );
        assert!(render("{{ return(1) }}").contains("outside a macro"));
        assert!(
            render("{% set x = [1] | map('string') | list %}{% do (x | list).append(1) %}")
                .contains("not a Python list")
        );
    }
}
