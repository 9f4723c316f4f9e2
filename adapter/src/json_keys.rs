//! One reading of every body: a JSON object that names a key twice is refused, at any depth.
//!
//! serde keeps the last of duplicate keys silently, and other parsers keep the first, so a body
//! with a repeated key means one thing to this service and another to a consumer of the raw body
//! kept as evidence (the parser-differential class behind several webhook and JWT signature
//! bypasses). [`first_duplicate_key`] walks the whole document once, without building it, and
//! names the first repeated key by its path, e.g. `payload.scheduled_event.uri`.

use std::{borrow::Cow, collections::HashSet, fmt};

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The path of the first key that an object of `text` names twice, if any. Syntax errors are
/// not reported here: the typed parse that follows reports them.
pub fn first_duplicate_key(text: &str) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let (mut path, mut keys) = (Vec::new(), Vec::new());
    let walk = Walk {
        path: &mut path,
        keys: &mut keys,
    };
    match walk.deserialize(&mut deserializer) {
        Ok(()) => None,
        Err(error) => {
            let message = error.to_string();
            message
                .strip_prefix(DUPLICATE)
                .map(|rest| rest.split(" at line ").next().unwrap_or(rest).to_owned())
        }
    }
}

/// How the walk reports a duplicate through serde's error channel.
const DUPLICATE: &str = "duplicate key: ";

/// Up to this many keys an object's keys are compared one by one, which for the dozen keys of a
/// Calendly object costs less than hashing them; past it they go into a set, so a body of many
/// thousand keys in one object still takes linear time.
const LINEAR_SCAN_MAX: usize = 32;

enum Segment<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

fn render(path: &[Segment<'_>]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A key as the body spells it, decoded: borrowed from the text unless it has escapes. (serde's
/// own `Cow<str>` always copies.)
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

/// `path` leads to the value being walked; `keys` holds the keys seen so far of every object
/// that encloses it, each object's after its parent's, so the walk allocates per document, not
/// per object.
struct Walk<'a, 'de> {
    path: &'a mut Vec<Segment<'de>>,
    keys: &'a mut Vec<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            self.path.push(Segment::Index(index));
            let more = seq.next_element_seed(Walk {
                path: self.path,
                keys: self.keys,
            })?;
            self.path.pop();
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let first = self.keys.len();
        let mut many_keys: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(Key(key)) = map.next_key()? {
            let repeated = match many_keys.as_mut() {
                Some(seen) => !seen.insert(key.clone()),
                None => {
                    let repeated = self.keys[first..].contains(&key);
                    self.keys.push(key.clone());
                    if self.keys.len() - first > LINEAR_SCAN_MAX {
                        many_keys = Some(self.keys.drain(first..).collect());
                    }
                    repeated
                }
            };
            self.path.push(Segment::Key(key));
            if repeated {
                let path = render(self.path);
                return Err(de::Error::custom(format!("{DUPLICATE}{path}")));
            }
            map.next_value_seed(Walk {
                path: self.path,
                keys: self.keys,
            })?;
            self.path.pop();
        }
        self.keys.truncate(first);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_repeated_at_any_depth_is_named_by_its_path() {
        let cases = [
            (r#"{"a":1,"a":2}"#, Some("a")),
            (r#"{"payload":{"uri":"x","uri":"y"}}"#, Some("payload.uri")),
            (
                r#"{"payload":{"scheduled_event":{"uri":"x","name":"n","uri":"y"}}}"#,
                Some("payload.scheduled_event.uri"),
            ),
            (r#"{"list":[{"q":1},{"q":1,"q":2}]}"#, Some("list[1].q")),
            (r#"[{"a":1},{"a":1,"a":1}]"#, Some("[1].a")),
            // An escaped spelling of the same key is the same key.
            (r#"{"uri":"x","\u0075ri":"y"}"#, Some("uri")),
            (r#"{"a":{"b":1},"b":{"a":1}}"#, None),
            (r#"{"a":[1,2,{"a":1}]}"#, None),
            (r#"{}"#, None),
            (r#"not json"#, None),
        ];
        for (body, expected) in cases {
            assert_eq!(first_duplicate_key(body).as_deref(), expected, "{body}");
        }
    }

    /// Objects past the linear scan's size, with the repeat before and after the switch to a set,
    /// and nested objects whose keys must not leak into their parent's.
    #[test]
    fn a_key_repeated_in_a_large_object_is_found_and_nested_keys_stay_apart() {
        let members = |n: usize| {
            (0..n)
                .map(|i| format!(r#""k{i}":{{"k{i}":1,"x":[{{"x":2}}]}}"#))
                .collect::<Vec<_>>()
        };
        let object = |members: &[String]| format!("{{{}}}", members.join(","));
        for n in [LINEAR_SCAN_MAX - 1, LINEAR_SCAN_MAX, LINEAR_SCAN_MAX + 1, 200] {
            let distinct = members(n);
            assert_eq!(first_duplicate_key(&object(&distinct)), None, "{n} keys");
            for repeat in [0, n / 2, n - 1] {
                let mut repeated = distinct.clone();
                repeated.push(format!(r#""k{repeat}":0"#));
                assert_eq!(
                    first_duplicate_key(&object(&repeated)).as_deref(),
                    Some(format!("k{repeat}").as_str()),
                    "{n} keys, k{repeat} twice"
                );
                let escaped = format!(r#""\u006b{repeat}":0"#);
                let mut repeated = distinct.clone();
                repeated.push(escaped);
                assert_eq!(
                    first_duplicate_key(&object(&repeated)).as_deref(),
                    Some(format!("k{repeat}").as_str()),
                    "{n} keys, k{repeat} twice, once escaped"
                );
            }
        }
    }

    /// Any JSON value, small and nested.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "[a-z]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_document_serde_wrote_has_no_duplicates(value in json_value()) {
            prop_assert_eq!(first_duplicate_key(&value.to_string()), None);
        }

        #[test]
        fn repeating_any_key_of_any_object_is_found(value in json_value(), pick in any::<prop::sample::Index>()) {
            // Wrapped, so every document has a member to repeat and no case is thrown away.
            let document = serde_json::json!({ "payload": value }).to_string();
            let doubled = testing::with_a_member_repeated(&document, pick).expect("a member to repeat");
            prop_assert!(first_duplicate_key(&doubled).is_some(), "{}", doubled);
        }
    }
}

/// Bodies with a repeated key, for this crate's property tests.
#[cfg(test)]
pub(crate) mod testing {
    /// `text` (compact JSON as serde_json writes it) with one of its members, picked by `pick`
    /// among all members at any depth, written twice in place; `None` when it has none.
    pub(crate) fn with_a_member_repeated(text: &str, pick: proptest::sample::Index) -> Option<String> {
        let keys = key_spans(text);
        if keys.is_empty() {
            return None;
        }
        let (start, end) = keys[pick.index(keys.len())];
        let value_end = value_end(text, end);
        let member = &text[start..value_end];
        Some(format!(
            "{}{},{}{}",
            &text[..start],
            member,
            member,
            &text[value_end..]
        ))
    }

    /// Byte spans of each `"key":` in compact JSON written by serde_json.
    pub(super) fn key_spans(text: &str) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut spans = Vec::new();
        let mut i = 0;
        let mut in_string = false;
        let mut string_start = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_string => i += 1,
                b'"' if in_string => {
                    in_string = false;
                    if bytes.get(i + 1) == Some(&b':') {
                        spans.push((string_start, i + 2));
                    }
                }
                b'"' => {
                    in_string = true;
                    string_start = i;
                }
                _ => {}
            }
            i += 1;
        }
        spans
    }

    /// Where the value starting at `from` ends (compact JSON).
    pub(super) fn value_end(text: &str, from: usize) -> usize {
        let mut stream = serde_json::Deserializer::from_str(&text[from..]).into_iter::<serde_json::Value>();
        stream.next();
        from + stream.byte_offset()
    }
}
