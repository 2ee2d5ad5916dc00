//! Typed key/value metadata as GGUF stores it, with getters that name the missing or mistyped key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// One GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// uint8
    U8(u8),
    /// int8
    I8(i8),
    /// uint16
    U16(u16),
    /// int16
    I16(i16),
    /// uint32
    U32(u32),
    /// int32
    I32(i32),
    /// uint64
    U64(u64),
    /// int64
    I64(i64),
    /// float32
    F32(f32),
    /// float64
    F64(f64),
    /// bool
    Bool(bool),
    /// UTF-8 string
    Str(String),
    /// Homogeneous array
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) if v >= 0 => Some(v as u64),
            MetaValue::I16(v) if v >= 0 => Some(v as u64),
            MetaValue::I32(v) if v >= 0 => Some(v as u64),
            MetaValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// All metadata of one model file, with typed getters whose errors name the key and the file.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Key/value pairs in key order.
    pub entries: BTreeMap<String, MetaValue>,
    /// File the metadata came from (named in errors).
    pub source: PathBuf,
}

impl Metadata {
    /// Raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.entries.get(key)
    }

    fn typed<T>(&self, key: &str, what: &str, f: impl Fn(&MetaValue) -> Option<T>) -> Result<Option<T>> {
        match self.entries.get(key) {
            None => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| Error::format(&self.source, format!("metadata key {key} is not {what}"))),
        }
    }

    fn required<T>(&self, key: &str, v: Option<T>) -> Result<T> {
        v.ok_or_else(|| Error::format(&self.source, format!("missing metadata key {key}")))
    }

    /// Optional string.
    pub fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.entries.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(_) => Err(Error::format(&self.source, format!("metadata key {key} is not a string"))),
        }
    }

    /// Required string.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.str_opt(key)?;
        self.required(key, v)
    }

    /// Optional unsigned integer.
    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    /// Required unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.u64_opt(key)?;
        self.required(key, v)
    }

    /// Optional float.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", MetaValue::as_f64)
    }

    /// Optional bool.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    /// Optional array.
    pub fn array_opt(&self, key: &str) -> Result<Option<&[MetaValue]>> {
        match self.entries.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(a)) => Ok(Some(a)),
            Some(_) => Err(Error::format(&self.source, format!("metadata key {key} is not an array"))),
        }
    }

    /// Optional array of strings.
    pub fn str_array_opt(&self, key: &str) -> Result<Option<Vec<&str>>> {
        match self.array_opt(key)? {
            None => Ok(None),
            Some(a) => a
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| Error::format(&self.source, format!("metadata key {key} is not an array of strings"))),
        }
    }

    /// Optional array of numbers as f64.
    pub fn f64_array_opt(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.array_opt(key)? {
            None => Ok(None),
            Some(a) => a
                .iter()
                .map(|v| v.as_f64())
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| Error::format(&self.source, format!("metadata key {key} is not an array of numbers"))),
        }
    }

    /// Optional array of integers as i64.
    pub fn i64_array_opt(&self, key: &str) -> Result<Option<Vec<i64>>> {
        match self.array_opt(key)? {
            None => Ok(None),
            Some(a) => a
                .iter()
                .map(|v| v.as_i64())
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| Error::format(&self.source, format!("metadata key {key} is not an array of integers"))),
        }
    }
}
