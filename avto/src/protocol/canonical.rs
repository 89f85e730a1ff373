//! Canonical JSON, byte-for-byte as RXON produces it.
//!
//! rxon signs `orjson.dumps(to_dict(body), option=OPT_SORT_KEYS)`, where `to_dict` drops `null`
//! object members (recursively; `null` list items stay) and turns floats with an integral value into
//! integers. The result is also exactly what the Python SDK puts on the wire for HTTP bodies.
//!
//! * object keys sorted by code point (= UTF-8 byte order), no whitespace;
//! * strings unescaped UTF-8; `"`, `\` and control characters below U+0020 escaped
//!   (`\b \t \n \f \r`, otherwise `\u00XX` with lowercase hex), like orjson and
//!   `json.dumps(ensure_ascii=False)`; DEL and U+2028 stay raw;
//! * integral floats as integers (`1.0` → `1`, `-0.0` → `0`, `1e16` → `10000000000000000`);
//! * other floats in orjson's shortest round-trip form, which is ryu's: decimal notation for
//!   `1e-5 <= |x| < 1e16` (`0.00001`, `0.0000435`), scientific below (`1e-7`, `1.5e-6`, `5e-324`).
//!   (A non-integral double is always below 2^53, so positive exponents never occur.)
//!
//! Python cannot sign integral floats of 2^64 or more (orjson raises); they are written here as
//! their exact integer digits.

use serde_json::{Map, Number, Value};
use std::fmt::Write as _;

/// The canonical serialisation of `value` (see the module docs).
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// The canonical serialisation as bytes (what gets HMAC'd).
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    to_canonical_string(value).into_bytes()
}

/// The canonical serialisation of `value` with the top-level object members for which `skip`
/// says true left out (what a signature covers), without copying the value.
pub fn to_canonical_vec_filtered(value: &Value, skip: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    match value {
        Value::Object(map) => write_object(&mut out, map, skip),
        other => write_value(&mut out, other),
    }
    out.into_bytes()
}

/// Serialise any `Serialize` value canonically (through `serde_json::Value`).
pub fn to_canonical_string_of<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    Ok(to_canonical_string(&serde_json::to_value(value)?))
}

/// `to_dict` normalisation as a value: `null` object members dropped recursively, integral floats
/// turned into integers, keys sorted. `normalize(v)` serialised with any compact serialiser that
/// keeps key order equals [`to_canonical_string`], except for integral floats beyond 64-bit
/// integers (which Python cannot sign): they stay floats here, and the canonical form writes their
/// digits. Parsing the canonical form always gives back `normalize(v)`.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !v.is_null()).collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                out.insert(k.clone(), normalize(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Number(n) => Value::Number(normalize_number(n)),
        other => other.clone(),
    }
}

fn normalize_number(n: &Number) -> Number {
    if n.is_f64() {
        let f = n.as_f64().unwrap_or(0.0);
        if f.is_finite() && f.fract() == 0.0 {
            if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                return Number::from(f as i64);
            }
            if f >= 0.0 && f < u64::MAX as f64 {
                return Number::from(f as u64);
            }
        }
    }
    n.clone()
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, |_| false),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, skip: impl Fn(&str) -> bool) {
    let mut entries: Vec<(&String, &Value)> = map.iter().filter(|(k, v)| !v.is_null() && !skip(k)).collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else {
        write_float(out, n.as_f64().unwrap_or(0.0));
    }
}

/// One float the way orjson prints it after rxon's `to_dict` (integral values as integers).
pub fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // orjson writes NaN and ±inf as null (serde_json cannot even hold them).
        out.push_str("null");
        return;
    }
    if f.fract() == 0.0 {
        if f >= i64::MIN as f64 && f < i64::MAX as f64 {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f:.0}");
        }
        return;
    }
    // serde_json formats finite floats with ryu's shortest representation, which is orjson's;
    // the only difference would be the sign of a positive exponent, impossible for non-integral
    // doubles (they are all below 2^53), but keep the `e+` form for completeness.
    let s = Number::from_f64(f).map(|n| n.to_string()).unwrap_or_else(|| "null".into());
    match s.find('e') {
        Some(pos) if !s[pos + 1..].starts_with('-') => {
            out.push_str(&s[..=pos]);
            out.push('+');
            out.push_str(&s[pos + 1..]);
        }
        _ => out.push_str(&s),
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_drops_nulls_and_ints_floats() {
        let v = json!({"b": 1.0, "a": null, "c": [null, {"x": null, "y": 2.5}], "A": -0.0});
        assert_eq!(to_canonical_string(&v), r#"{"A":0,"b":1,"c":[null,{"y":2.5}]}"#);
        assert_eq!(to_canonical_string(&normalize(&v)), to_canonical_string(&v));
        assert_eq!(serde_json::to_string(&normalize(&v)).unwrap(), to_canonical_string(&v));
    }

    #[test]
    fn escapes_like_orjson() {
        let v = json!({"s": "a\u{0}\u{1}\u{1f}\u{7f}\u{2028} é \"\\/\n\t\r\u{8}\u{c} 😀"});
        assert_eq!(
            to_canonical_string(&v),
            "{\"s\":\"a\\u0000\\u0001\\u001f\u{7f}\u{2028} é \\\"\\\\/\\n\\t\\r\\b\\f 😀\"}"
        );
    }
}
