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

/// The canonical form of `map` plus members that depend on a signature over part of it, with
/// the signed part written once: `sign` gets the canonical form of `map`'s members that
/// `covered` says true for, and returns the members to add (distinct names, replacing members
/// of `map` of the same name; `null` ones dropped like every `null` member). The answer is byte
/// for byte `to_canonical_vec(map with those members)`.
pub fn to_canonical_vec_signed(
    map: &Map<String, Value>,
    covered: impl Fn(&str) -> bool,
    sign: impl FnOnce(&[u8]) -> Vec<(&'static str, Value)>,
) -> Vec<u8> {
    let mut entries: Vec<(&str, &Value)> = map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (&**k, v)).collect();
    if !entries.is_sorted_by(|a, b| a.0.as_bytes() < b.0.as_bytes()) {
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    // The covered members, each one's span in `signed` kept for the answer.
    let mut signed = String::with_capacity(256);
    let mut spans = Vec::with_capacity(entries.len());
    signed.push('{');
    for &(k, v) in &entries {
        if !covered(k) {
            spans.push(None);
            continue;
        }
        write_comma(&mut signed);
        let start = signed.len();
        write_member(&mut signed, k, v);
        spans.push(Some(start..signed.len()));
    }
    signed.push('}');
    let mut extra = sign(signed.as_bytes());
    extra.retain(|(_, v)| !v.is_null());
    extra.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // The answer: the members of `map` (covered ones copied from `signed`) and the added ones,
    // merged in key order.
    let mut out = String::with_capacity(signed.len() + 160);
    out.push('{');
    let mut extra = extra.into_iter().peekable();
    for (&(k, v), span) in entries.iter().zip(spans) {
        let mut replaced = false;
        while let Some((ek, ev)) = extra.next_if(|(ek, _)| ek.as_bytes() <= k.as_bytes()) {
            replaced |= ek == k;
            write_comma(&mut out);
            write_member(&mut out, ek, &ev);
        }
        if replaced {
            continue;
        }
        write_comma(&mut out);
        match span {
            Some(span) => out.push_str(&signed[span]),
            None => write_member(&mut out, k, v),
        }
    }
    for (ek, ev) in extra {
        write_comma(&mut out);
        write_member(&mut out, ek, &ev);
    }
    out.push('}');
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
    let keep = |(k, v): &(&String, &Value)| !v.is_null() && !skip(k);
    out.push('{');
    // Objects parsed from canonical JSON (what the SDKs send) keep their sorted order: write
    // them as they are, without sorting a copy of their entries.
    if map.keys().is_sorted_by(|a, b| a.as_bytes() < b.as_bytes()) {
        for (k, v) in map.iter().filter(keep) {
            write_comma(out);
            write_member(out, k, v);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().filter(keep).collect();
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (k, v) in entries {
            write_comma(out);
            write_member(out, k, v);
        }
    }
    out.push('}');
}

/// The comma before an object's member, unless it is the first (`out` then ends with the `{`:
/// no value ends with one).
fn write_comma(out: &mut String) {
    if !out.ends_with('{') {
        out.push(',');
    }
}

/// One member of an object, `"key":value`.
fn write_member(out: &mut String, k: &str, v: &Value) {
    write_string(out, k);
    out.push(':');
    write_value(out, v);
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
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

/// How each byte of a string is written: 0 as is, `u` as `\u00XX`, else as `\` and that letter.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.push_str(&s[start..i]);
        if esc == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push('\\');
            out.push(esc as char);
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

    #[test]
    fn signed_form_equals_the_canonical_form_with_the_added_members() {
        let v = json!({"z": 1, "sig": "old", "b": null, "security": {"k": "v"}, "a": [1.0, "x\n"], "m": 2.5});
        let map = v.as_object().unwrap();
        let covered = |k: &str| k != "sig" && k != "security";
        let mut seen = Vec::new();
        let out = to_canonical_vec_signed(map, covered, |input| {
            seen = input.to_vec();
            vec![("sig", json!("new")), ("n", json!("added")), ("zz", Value::Null), ("0", json!(0))]
        });
        assert_eq!(String::from_utf8(seen).unwrap(), r#"{"a":[1,"x\n"],"m":2.5,"z":1}"#);
        let mut whole = map.clone();
        whole.insert("sig".into(), json!("new"));
        whole.insert("n".into(), json!("added"));
        whole.insert("0".into(), json!(0));
        assert_eq!(out, to_canonical_vec(&Value::Object(whole)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"0":0,"a":[1,"x\n"],"m":2.5,"n":"added","security":{"k":"v"},"sig":"new","z":1}"#
        );
        // Nothing covered, nothing added.
        let empty = to_canonical_vec_signed(
            &Map::new(),
            |_| true,
            |input| {
                assert_eq!(input, b"{}");
                Vec::new()
            },
        );
        assert_eq!(empty, b"{}");
    }

    #[test]
    fn sorted_and_unsorted_objects_write_alike() {
        let sorted = json!({"a": 1, "b": {"c": null, "d": "\u{1}"}, "c": null});
        let unsorted = json!({"c": null, "b": {"d": "\u{1}", "c": null}, "a": 1});
        assert_eq!(to_canonical_string(&sorted), r#"{"a":1,"b":{"d":"\u0001"}}"#);
        assert_eq!(to_canonical_string(&unsorted), to_canonical_string(&sorted));
        let skipped = to_canonical_vec_filtered(&unsorted, |k| k == "a");
        assert_eq!(skipped, br#"{"b":{"d":"\u0001"}}"#);
    }
}
