//! JSON documents and bodies read through one generic value.
//!
//! `serde_json::from_slice::<T>` compiles a streaming deserializer for every
//! type `T` read; through a `serde_json::Value` each type costs only a value
//! deserializer, and the parser exists once. The value is read by `Doc`,
//! which takes a struct only from an object (JSON's form of it; serde_json's
//! own value deserializer also takes an array, so every struct carried a
//! second, positional reader). In the Worker bundle this is tens of kilobytes
//! (BENCHMARKS.md, "The edge Worker"). Errors name the field and the reason,
//! without a line and column. The history, the one large document, is read
//! straight from its bytes.

use serde::de::{
    self, value::StringDeserializer, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess,
    Error as _, MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde_json::{Error, Map, Value};

/// `bytes` as a `T`.
pub fn read<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    from_value(serde_json::from_slice::<Value>(bytes)?)
}

/// A parsed `value` as a `T`, by the same reader (a posted target, say).
pub fn from_value<T: DeserializeOwned>(value: Value) -> serde_json::Result<T> {
    T::deserialize(Doc(value))
}

/// A parsed JSON value read as a document (see the module's comment).
struct Doc(Value);

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

fn wrong<T>(v: &Value, expected: &dyn de::Expected) -> Result<T, Error> {
    Err(Error::invalid_type(unexpected(v), expected))
}

fn visit_seq<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let len = items.len();
    let mut seq = Seq(items.into_iter());
    let out = visitor.visit_seq(&mut seq)?;
    match seq.0.len() {
        0 => Ok(out),
        _ => Err(Error::invalid_length(len, &"fewer elements in array")),
    }
}

fn visit_map<'de, V: Visitor<'de>>(map: Map<String, Value>, visitor: V) -> Result<V::Value, Error> {
    visitor.visit_map(Fields {
        iter: map.into_iter(),
        value: None,
    })
}

macro_rules! numbers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Number(n) => n.deserialize_any(visitor),
                other => wrong(&other, &visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Doc {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n.deserialize_any(visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visit_seq(a, visitor),
            Value::Object(m) => visit_map(m, visitor),
        }
    }

    numbers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64);

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(b),
            other => wrong(&other, &visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            other => wrong(&other, &visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            other => wrong(&other, &visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(a) => visit_seq(a, visitor),
            other => wrong(&other, &visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) => visit_map(m, visitor),
            other => wrong(&other, &visitor),
        }
    }

    /// An object only: JSON's form of a struct.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (variant, value) = match self.0 {
            Value::String(variant) => (variant, None),
            Value::Object(m) if m.len() == 1 => {
                let (variant, value) = m.into_iter().next().expect("one entry");
                (variant, Some(value))
            }
            other => return wrong(&other, &"a string or a map with a single key"),
        };
        visitor.visit_enum(Enum { variant, value })
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|v| seed.deserialize(Doc(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Fields {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                // serde's own string deserializer: a key is always a string,
                // so no `Value` match and no type error per key type (bundle size).
                seed.deserialize(StringDeserializer::<Error>::new(key))
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Doc(value)),
            None => Err(Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Enum {
    variant: String,
    value: Option<Value>,
}

impl<'de> EnumAccess<'de> for Enum {
    type Error = Error;
    type Variant = Variant;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Variant), Error> {
        let variant = seed.deserialize(Doc(Value::String(self.variant)))?;
        Ok((variant, Variant(self.value)))
    }
}

struct Variant(Option<Value>);

impl<'de> VariantAccess<'de> for Variant {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(other) => wrong(&other, &"unit variant"),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.0 {
            Some(value) => seed.deserialize(Doc(value)),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Some(Value::Array(a)) => visit_seq(a, visitor),
            Some(other) => wrong(&other, &"tuple variant"),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Some(Value::Object(m)) => visit_map(m, visitor),
            Some(other) => wrong(&other, &"struct variant"),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crash::{CrashReport, Timestamp};
    use crate::core::incident::{Incident, RemediationStatus};

    #[test]
    fn documents_read_as_serde_json_reads_them() {
        let mut inc = Incident::new("inc-1".into(), "api".into(), 5, RemediationStatus::Pending);
        inc.remediation = RemediationStatus::Escalated("disk full".into());
        let text = serde_json::to_string(&inc).unwrap();
        let ours: Incident = read(text.as_bytes()).unwrap();
        assert_eq!(ours, serde_json::from_str::<Incident>(&text).unwrap());
        // An untagged enum, an alias, an option, a defaulted field.
        let body = br#"{"app":"web","message":"boom","userAgent":"ua","timestamp":"yesterday"}"#;
        let r: CrashReport = read(body).unwrap();
        assert_eq!(r, serde_json::from_slice::<CrashReport>(body).unwrap());
        assert_eq!(r.timestamp, Some(Timestamp::Text("yesterday".into())));
        let r: CrashReport = read(br#"{"app":"web","message":"m","timestamp":7}"#).unwrap();
        assert_eq!(r.timestamp, Some(Timestamp::Ms(7)));
    }

    #[test]
    fn bad_documents_are_refused_naming_what_is_wrong() {
        let why = |body: &[u8]| read::<CrashReport>(body).unwrap_err().to_string();
        // A struct is an object, never a positional array.
        assert!(
            why(br#"["web","boom"]"#).contains("invalid type: sequence"),
            "{}",
            why(br#"["web","boom"]"#)
        );
        assert!(why(br#"{"app":"web"}"#).contains("missing field `message`"));
        assert!(why(br#"{"app":7,"message":"m"}"#)
            .contains("invalid type: integer `7`, expected a string"));
        assert!(why(br#"{"app":"a","message":"m","x":1}"#).contains("unknown field `x`"));
        assert!(why(br#"{"app":"a","message":"m","severity":"loud"}"#)
            .contains("unknown variant `loud`"));
        assert!(why(b"{").contains("EOF"));
        assert!(read::<(u64, u64)>(b"[1,2,3]").is_err());
        assert_eq!(read::<(u64, u64)>(b"[1,2]").unwrap(), (1, 2));
    }
}
