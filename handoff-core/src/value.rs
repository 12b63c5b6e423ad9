//! Values flowing between functions.
//!
//! Inside one process a [`Value`] is a shared pointer to the typed result: handing it to
//! a consumer clones a pointer, never the data. It is encoded to MessagePack only when
//! something asks for bytes ([`Value::to_msgpack`], or the network), and a value that
//! arrived as bytes is decoded when a consumer asks for a type.

use std::any::{Any, type_name};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a [`Value`] could not be read as the type asked for, or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ValueError {
    /// The value holds another type, and its MessagePack form does not decode as the one asked for.
    #[error("expected a value of type `{expected}`, found `{found}`: {reason}")]
    TypeMismatch {
        /// The type asked for.
        expected: String,
        /// The type the value holds (or `msgpack` for a value that arrived as bytes).
        found: String,
        /// What the decoder said.
        reason: String,
    },
    /// A value could not be encoded as MessagePack.
    #[error("could not encode a value of type `{type_name}` as MessagePack: {reason}")]
    Encode {
        /// The type of the value.
        type_name: String,
        /// What the encoder said.
        reason: String,
    },
    /// A [`List`] was asked for, but the value is not the list of an as-list argument.
    #[error("expected the list of an as-list argument, found `{found}`")]
    NotAList {
        /// The type the value holds.
        found: String,
    },
}

/// A result or constant: a typed shared pointer locally, MessagePack bytes on the wire.
#[derive(Clone)]
pub struct Value(Repr);

#[derive(Clone)]
enum Repr {
    Local(Arc<dyn Payload>),
    Encoded(Bytes),
    List(Arc<[Value]>),
}

/// What a local value can do: be looked at as `Any`, and be encoded.
trait Payload: Any + Send + Sync {
    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), ValueError>;
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &(dyn Any + Send + Sync);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Serialize + Send + Sync + 'static> Payload for T {
    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), ValueError> {
        rmp_serde::encode::write(buf, self).map_err(|e| ValueError::Encode {
            type_name: type_name::<T>().to_owned(),
            reason: e.to_string(),
        })
    }
    fn type_name(&self) -> &'static str {
        type_name::<T>()
    }
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Moves `v` out as a `U` when `T` and `U` are the same type, without allocating.
fn cast<T: 'static, U: 'static>(v: T) -> Result<U, T> {
    let mut slot = Some(v);
    if let Some(u) = (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>()
        && let Some(u) = u.take()
    {
        return Ok(u);
    }
    match slot {
        Some(v) => Err(v),
        None => unreachable!("the slot is emptied only when the cast succeeds"),
    }
}

impl Value {
    /// Wraps a typed value. No copy and no encoding happens here.
    ///
    /// A `Value` passed in is returned as it is.
    pub fn new<T: Serialize + Send + Sync + 'static>(v: T) -> Self {
        match cast::<T, Value>(v) {
            Ok(value) => value,
            Err(v) => Value(Repr::Local(Arc::new(v))),
        }
    }

    /// Wraps a value that is already shared, without copying it.
    pub fn from_arc<T: Serialize + Send + Sync + 'static>(v: Arc<T>) -> Self {
        Value(Repr::Local(v))
    }

    /// A value received as MessagePack bytes; decoded when a consumer asks for a type.
    pub fn from_msgpack(bytes: Bytes) -> Self {
        Value(Repr::Encoded(bytes))
    }

    /// The list an as-list function receives: its dependency results, in order.
    pub fn list(items: Vec<Value>) -> Self {
        Value(Repr::List(items.into()))
    }

    /// The name of the type this value holds (`msgpack` for bytes not yet decoded).
    pub fn type_name(&self) -> &'static str {
        match &self.0 {
            Repr::Local(p) => p.type_name(),
            Repr::Encoded(_) => "msgpack",
            Repr::List(_) => "list",
        }
    }

    /// True when both values point at the same allocation (no copy was made between them).
    pub fn ptr_eq(&self, other: &Value) -> bool {
        match (&self.0, &other.0) {
            (Repr::Local(a), Repr::Local(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            (Repr::Encoded(a), Repr::Encoded(b)) => a.as_ptr() == b.as_ptr() && a.len() == b.len(),
            (Repr::List(a), Repr::List(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// A reference to the typed value, when it holds a `T` locally.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        match &self.0 {
            Repr::Local(p) => p.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The value as a `T`: a clone of the local value when it holds a `T`, otherwise
    /// decoded from its MessagePack form (so `i32` reads as `i64`, and a struct as an
    /// equivalent one), which is what a remote consumer would see.
    pub fn get<T: DeserializeOwned + Clone + 'static>(&self) -> Result<T, ValueError> {
        if let Some(t) = self.downcast_ref::<T>() {
            return Ok(t.clone());
        }
        self.decode()
    }

    /// Like [`get`](Self::get), but moves the value out without a clone when this is
    /// the last pointer to it.
    pub fn take<T: DeserializeOwned + Clone + Send + Sync + 'static>(
        self,
    ) -> Result<T, ValueError> {
        match self.0 {
            Repr::Local(p) if p.as_any().is::<T>() => match p.into_any().downcast::<T>() {
                Ok(arc) => Ok(Arc::try_unwrap(arc).unwrap_or_else(|arc| (*arc).clone())),
                Err(_) => unreachable!("checked with is::<T>()"),
            },
            repr => Value(repr).decode(),
        }
    }

    /// A shared pointer to the value as a `T`: no copy when it holds a `T` locally.
    pub fn shared<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Result<Arc<T>, ValueError> {
        if let Repr::Local(p) = &self.0
            && let Ok(arc) = Arc::clone(p).into_any().downcast::<T>()
        {
            return Ok(arc);
        }
        self.decode().map(Arc::new)
    }

    /// The items of an as-list argument.
    pub fn items(&self) -> Result<&[Value], ValueError> {
        match &self.0 {
            Repr::List(items) => Ok(items),
            _ => Err(ValueError::NotAList {
                found: self.type_name().to_owned(),
            }),
        }
    }

    /// Encodes the value as MessagePack.
    pub fn to_msgpack(&self) -> Result<Bytes, ValueError> {
        match &self.0 {
            Repr::Encoded(b) => Ok(b.clone()),
            _ => {
                let mut buf = Vec::new();
                self.encode_into(&mut buf)?;
                Ok(buf.into())
            }
        }
    }

    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), ValueError> {
        match &self.0 {
            Repr::Local(p) => p.encode_into(buf),
            Repr::Encoded(b) => {
                buf.extend_from_slice(b);
                Ok(())
            }
            Repr::List(items) => {
                let len = u32::try_from(items.len()).map_err(|_| ValueError::Encode {
                    type_name: "list".to_owned(),
                    reason: format!("{} items is more than MessagePack allows", items.len()),
                })?;
                rmp::encode::write_array_len(buf, len).map_err(|e| ValueError::Encode {
                    type_name: "list".to_owned(),
                    reason: e.to_string(),
                })?;
                items.iter().try_for_each(|item| item.encode_into(buf))
            }
        }
    }

    fn decode<T: DeserializeOwned>(&self) -> Result<T, ValueError> {
        let mismatch = |reason: String| ValueError::TypeMismatch {
            expected: type_name::<T>().to_owned(),
            found: self.type_name().to_owned(),
            reason,
        };
        match &self.0 {
            Repr::Encoded(b) => rmp_serde::from_slice(b).map_err(|e| mismatch(e.to_string())),
            _ => {
                let bytes = self.to_msgpack()?;
                rmp_serde::from_slice(&bytes).map_err(|e| mismatch(e.to_string()))
            }
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Local(p) => write!(f, "Value<{}>", p.type_name()),
            Repr::Encoded(b) => write!(f, "Value<msgpack, {} bytes>", b.len()),
            Repr::List(items) => f.debug_list().entries(items.iter()).finish(),
        }
    }
}

/// On the wire a value is its MessagePack encoding, carried as a byte string.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.to_msgpack().map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = Bytes::deserialize(deserializer)?;
        Ok(Value::from_msgpack(bytes))
    }
}

/// A parameter type that receives its argument by shared pointer: a function taking
/// `Shared<Vec<u8>>` reads a 10 MB buffer without copying it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Shares a value.
    pub fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }

    /// The shared pointer inside.
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T> From<Arc<T>> for Shared<T> {
    fn from(arc: Arc<T>) -> Self {
        Shared(arc)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The parameter type of an as-list function: its dependency results, in order, each
/// read as a `T` (use `List<Shared<T>>` to read large items without copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(Vec<T>);

impl<T> List<T> {
    /// The items.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T> Deref for List<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> IntoIterator for List<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A type a registered function can take as a parameter.
///
/// Any `T: DeserializeOwned + Clone` works (cloned from the shared value, or moved out
/// when it is the last pointer); [`Shared<T>`] borrows without a copy; [`List<T>`] receives
/// an as-list argument; [`Value`] receives the value untouched.
pub trait FromValue: Sized + 'static {
    /// Reads the parameter from its argument.
    fn from_value(value: Value) -> Result<Self, ValueError>;

    /// Reads the parameter from a borrowed argument (how a [`List<T>`] reads its items):
    /// the same as [`from_value`](Self::from_value) on a clone of it, which is what it
    /// does unless a type can do better.
    fn from_value_ref(value: &Value) -> Result<Self, ValueError> {
        Self::from_value(value.clone())
    }
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> FromValue for T {
    fn from_value(value: Value) -> Result<Self, ValueError> {
        match cast::<Value, T>(value) {
            Ok(t) => Ok(t),
            Err(value) => value.take(),
        }
    }

    /// A borrowed value is not the last pointer to what it holds: cloned from it in
    /// place (or decoded), as `from_value` would, without a clone of the value itself.
    fn from_value_ref(value: &Value) -> Result<Self, ValueError> {
        if let Some(same) = (value as &dyn Any).downcast_ref::<T>() {
            return Ok(same.clone());
        }
        value.get::<T>()
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> FromValue for Shared<T> {
    fn from_value(value: Value) -> Result<Self, ValueError> {
        value.shared().map(Shared)
    }
}

impl<T: FromValue> FromValue for List<T> {
    fn from_value(value: Value) -> Result<Self, ValueError> {
        let items = value.items()?;
        items
            .iter()
            .map(T::from_value_ref)
            .collect::<Result<Vec<T>, _>>()
            .map(List)
    }
}

/// A type a registered function can return: any `T: Serialize`, kept as a shared
/// pointer, or a [`Shared<T>`] (handed on without a copy: a function that takes
/// `Shared<T>` and returns it passes the very same buffer along). Do not return an
/// `Arc<T>`: it is serialized as a value of type `Arc<T>`, not `T`; use `Shared` instead.
pub trait IntoValue {
    /// Wraps the result.
    fn into_value(self) -> Value;
}

impl<T: Serialize + Send + Sync + 'static> IntoValue for T {
    fn into_value(self) -> Value {
        Value::new(self)
    }
}

impl<T: Serialize + Send + Sync + 'static> IntoValue for Shared<T> {
    fn into_value(self) -> Value {
        Value::from_arc(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_values_are_read_without_encoding() {
        let v = Value::new(42_i64);
        assert_eq!(v.get::<i64>(), Ok(42));
        assert_eq!(v.downcast_ref::<i64>(), Some(&42));
        assert_eq!(v.type_name(), "i64");
    }

    #[test]
    fn compatible_types_convert_through_msgpack() {
        let v = Value::new(7_i32);
        assert_eq!(v.get::<i64>(), Ok(7));
    }

    #[test]
    fn wrong_types_are_typed_errors() {
        let v = Value::new("text".to_owned());
        let err = v.get::<i64>().expect_err("a string is not an integer");
        match err {
            ValueError::TypeMismatch {
                expected, found, ..
            } => {
                assert_eq!(expected, "i64");
                assert_eq!(found, "alloc::string::String");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn shared_reads_do_not_copy() {
        let big = Value::new(vec![7_u8; 1 << 20]);
        let a = Shared::<Vec<u8>>::from_value(big.clone()).expect("shared");
        let b = big.shared::<Vec<u8>>().expect("shared");
        assert!(Arc::ptr_eq(&a.0, &b));
        assert_eq!(a.len(), 1 << 20);
    }

    #[test]
    fn shared_results_are_handed_on_without_a_copy() {
        let first = Value::new(vec![1_u8; 4096]);
        let passed = Shared::<Vec<u8>>::from_value(first.clone()).expect("shared");
        let again = passed.into_value();
        assert!(again.ptr_eq(&first));
        assert_eq!(again.downcast_ref::<Vec<u8>>().map(Vec::len), Some(4096));
    }

    #[test]
    fn take_moves_the_last_pointer_out() {
        let v = Value::new(vec![1_u8, 2, 3]);
        let ptr = v.downcast_ref::<Vec<u8>>().map(|b| b.as_ptr());
        let out: Vec<u8> = v.take().expect("take");
        assert_eq!(Some(out.as_ptr()), ptr);
    }

    #[test]
    fn values_round_trip_through_msgpack() {
        let v = Value::new((1_u32, "two".to_owned(), vec![3.5_f64]));
        let wire = rmp_serde::to_vec(&v).expect("encode");
        let back: Value = rmp_serde::from_slice(&wire).expect("decode");
        assert_eq!(back.type_name(), "msgpack");
        assert_eq!(
            back.get::<(u32, String, Vec<f64>)>(),
            Ok((1, "two".to_owned(), vec![3.5]))
        );
    }

    #[test]
    fn list_items_read_in_place_as_they_would_from_a_clone() {
        let shared = Value::new(vec![1_u8, 2]);
        let encoded = Value::from_msgpack(Value::new(3_i64).to_msgpack().expect("encode"));
        let v = Value::list(vec![shared.clone(), encoded.clone()]);
        let values = List::<Value>::from_value(v.clone()).expect("values");
        assert!(
            values[0].ptr_eq(&shared),
            "a `Value` item is the item itself"
        );
        assert!(values[1].ptr_eq(&encoded));
        let bytes = List::<Vec<u8>>::from_value(Value::list(vec![shared.clone()]));
        assert_eq!(bytes.expect("bytes")[0], vec![1, 2]);
        let decoded = List::<i64>::from_value(Value::list(vec![encoded]));
        assert_eq!(decoded.expect("decoded")[0], 3);
        let wrong = List::<String>::from_value(v);
        assert!(wrong.is_err(), "{wrong:?}");
    }

    #[test]
    fn lists_read_as_lists_or_vecs() {
        let v = Value::list(vec![Value::new(1_i64), Value::new(2_i64)]);
        let list = List::<i64>::from_value(v.clone()).expect("list");
        assert_eq!(&*list, &[1, 2]);
        assert_eq!(v.get::<Vec<i64>>(), Ok(vec![1, 2]));
        assert!(matches!(
            List::<i64>::from_value(Value::new(1_i64)),
            Err(ValueError::NotAList { .. })
        ));
    }

    #[test]
    fn a_value_passed_as_value_is_untouched() {
        let inner = Value::new(5_u8);
        let outer = Value::new(inner.clone());
        assert!(outer.ptr_eq(&inner));
        let param = Value::from_value(inner.clone()).expect("value");
        assert!(param.ptr_eq(&inner));
    }

    #[test]
    fn bytes_payloads_encode_as_binary() {
        let v = Value::new(Bytes::from(vec![0_u8; 1000]));
        let encoded = v.to_msgpack().expect("encode");
        assert!(encoded.len() < 1010, "bin format, not an array of ints");
    }
}
