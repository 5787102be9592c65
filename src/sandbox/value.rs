//! Type-tagged plain data that a candidate's returned value is turned into inside the child, and
//! the comparisons that decide a verdict outside it.
//!
//! The worker describes a value as nested JSON arrays whose first element is a tag (`["i", "3"]`,
//! `["f", "-0.0"]`, `["S", [...]]`, ...). [`Value::from_json`] checks that shape strictly: a
//! child that sends anything else gets an error verdict, never a pass. [`Value::py_eq`] follows
//! Python's `==` on plain data (numbers compare across bool/int/float/complex, NaN never equals,
//! sets and dicts ignore order, list and tuple differ), while [`Value::signature_hash`] keeps
//! every tag apart (`1`, `1.0` and `True` hash differently, as do `0.0` and `-0.0`), which is
//! what an execution signature wants.

use sha2::{Digest, Sha256};

/// A returned value described as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// Canonical decimal digits (Python's `repr` of an int), any size.
    Int(String),
    Float(f64),
    Complex(f64, f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    /// Entries in the order the dict had them.
    Dict(Vec<(Value, Value)>),
    /// Anything that is not plain data: only its type name travels. Equal to nothing.
    Opaque(String),
    /// The value was larger than the size cap. Equal to nothing.
    Truncated,
}

/// Why a tagged value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tagged value: {0}")]
pub struct MalformedValue(pub String);

fn bad(what: &str) -> MalformedValue {
    MalformedValue(what.to_string())
}

fn parse_float(s: &str) -> Result<f64, MalformedValue> {
    match s {
        "nan" => Ok(f64::NAN),
        "inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().map_err(|_| bad("float repr")),
    }
}

fn is_int_repr(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl Value {
    /// Reads the worker's tagged JSON.
    pub fn from_json(v: &serde_json::Value) -> Result<Value, MalformedValue> {
        Self::from_json_depth(v, 0)
    }

    fn from_json_depth(v: &serde_json::Value, depth: usize) -> Result<Value, MalformedValue> {
        if depth > 200 {
            return Err(bad("nesting"));
        }
        let arr = v.as_array().ok_or_else(|| bad("not an array"))?;
        let tag = arr
            .first()
            .and_then(|t| t.as_str())
            .ok_or_else(|| bad("missing tag"))?;
        let arg = |i: usize| arr.get(i).ok_or_else(|| bad("missing field"));
        let text = |i: usize| arg(i)?.as_str().ok_or_else(|| bad("field is not a string"));
        let items = |i: usize| -> Result<Vec<Value>, MalformedValue> {
            arg(i)?
                .as_array()
                .ok_or_else(|| bad("items"))?
                .iter()
                .map(|x| Self::from_json_depth(x, depth + 1))
                .collect()
        };
        Ok(match tag {
            "N" => Value::None,
            "b" => Value::Bool(arg(1)?.as_bool().ok_or_else(|| bad("bool"))?),
            "i" => {
                let s = text(1)?;
                if !is_int_repr(s) {
                    return Err(bad("int repr"));
                }
                Value::Int(s.to_string())
            }
            "f" => Value::Float(parse_float(text(1)?)?),
            "c" => Value::Complex(parse_float(text(1)?)?, parse_float(text(2)?)?),
            "s" => Value::Str(text(1)?.to_string()),
            "u" => Value::Str(
                arg(1)?
                    .as_array()
                    .ok_or_else(|| bad("code points"))?
                    .iter()
                    .map(|c| {
                        c.as_u64()
                            .map(|c| {
                                char::from_u32(c as u32).unwrap_or(char::REPLACEMENT_CHARACTER)
                            })
                            .ok_or_else(|| bad("code point"))
                    })
                    .collect::<Result<String, _>>()?,
            ),
            "y" => {
                let hex = text(1)?;
                if hex.len() % 2 != 0 {
                    return Err(bad("bytes hex"));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad("bytes hex")))
                    .collect::<Result<Vec<u8>, _>>()
                    .map(Value::Bytes)?
            }
            "l" => Value::List(items(1)?),
            "t" => Value::Tuple(items(1)?),
            "S" => Value::Set(items(1)?),
            "F" => Value::FrozenSet(items(1)?),
            "d" => {
                let entries = arg(1)?.as_array().ok_or_else(|| bad("dict entries"))?;
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    let pair = e
                        .as_array()
                        .filter(|p| p.len() == 2)
                        .ok_or_else(|| bad("dict entry"))?;
                    out.push((
                        Self::from_json_depth(&pair[0], depth + 1)?,
                        Self::from_json_depth(&pair[1], depth + 1)?,
                    ));
                }
                Value::Dict(out)
            }
            "o" => Value::Opaque(text(1)?.to_string()),
            "T" => Value::Truncated,
            _ => return Err(bad("unknown tag")),
        })
    }

    /// Python's truthiness, where it is decidable from plain data.
    pub fn truthy(&self) -> Option<bool> {
        Some(match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(s) => s != "0",
            Value::Float(f) => *f != 0.0,
            Value::Complex(re, im) => *re != 0.0 || *im != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Opaque(_) | Value::Truncated => return None,
        })
    }

    /// The number as (real, imaginary) if this is a number, with bool and int exact where possible.
    fn number(&self) -> Option<Number<'_>> {
        match self {
            Value::Bool(b) => Some(Number::Int(if *b { "1" } else { "0" })),
            Value::Int(s) => Some(Number::Int(s)),
            Value::Float(f) => Some(Number::Real(*f)),
            Value::Complex(re, im) => Some(Number::Complex(*re, *im)),
            _ => None,
        }
    }

    /// Python's `==` between two plain values.
    pub fn py_eq(&self, other: &Value) -> bool {
        self.eq_within(other, 0.0)
    }

    /// Python's `==`, except that two numbers of which one is a float (or complex) are also
    /// equal when `|a − b| ≤ tol · max(1, |a|, |b|)` (relative for large magnitudes, absolute
    /// below 1), at any depth of nesting. `tol = 0` is exactly Python's `==`.
    pub fn eq_within(&self, other: &Value, tol: f64) -> bool {
        if let (Some(a), Some(b)) = (self.number(), other.number()) {
            return a.eq(&b, tol);
        }
        let eq = |x: &Value, y: &Value| x.eq_within(y, tol);
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(x, y))
            }
            (Value::Set(a) | Value::FrozenSet(a), Value::Set(b) | Value::FrozenSet(b)) => {
                a.len() == b.len()
                    && a.iter().all(|x| b.iter().any(|y| eq(x, y)))
                    && b.iter().all(|y| a.iter().any(|x| eq(x, y)))
            }
            (Value::Dict(a), Value::Dict(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| eq(k, k2) && eq(v, v2)))
            }
            _ => false,
        }
    }

    /// Python's `is` against a singleton (`None`, `True`, `False`).
    pub fn is_same_singleton(&self, other: &Value) -> bool {
        matches!(
            (self, other),
            (Value::None, Value::None)
                | (Value::Bool(true), Value::Bool(true))
                | (Value::Bool(false), Value::Bool(false))
        )
    }

    /// Appends a canonical encoding: every tag distinct, sets and dicts in sorted order.
    fn canonical(&self, out: &mut Vec<u8>) {
        let seq = |out: &mut Vec<u8>, tag: u8, items: &[Value], sort: bool| {
            let mut encoded: Vec<Vec<u8>> = items
                .iter()
                .map(|x| {
                    let mut e = Vec::new();
                    x.canonical(&mut e);
                    e
                })
                .collect();
            if sort {
                encoded.sort();
            }
            out.push(tag);
            out.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
            for e in encoded {
                out.extend_from_slice(&(e.len() as u64).to_le_bytes());
                out.extend_from_slice(&e);
            }
        };
        let text = |out: &mut Vec<u8>, tag: u8, bytes: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match self {
            Value::None => out.push(b'N'),
            Value::Bool(b) => out.extend_from_slice(if *b { b"bT" } else { b"bF" }),
            Value::Int(s) => text(out, b'i', s.as_bytes()),
            Value::Float(f) => text(out, b'f', rounded(*f).as_bytes()),
            Value::Complex(re, im) => {
                text(out, b'c', rounded(*re).as_bytes());
                text(out, b'c', rounded(*im).as_bytes());
            }
            Value::Str(s) => text(out, b's', s.as_bytes()),
            Value::Bytes(b) => text(out, b'y', b),
            Value::List(v) => seq(out, b'l', v, false),
            Value::Tuple(v) => seq(out, b't', v, false),
            Value::Set(v) => seq(out, b'S', v, true),
            Value::FrozenSet(v) => seq(out, b'F', v, true),
            Value::Dict(d) => {
                let mut entries: Vec<Vec<u8>> = d
                    .iter()
                    .map(|(k, v)| {
                        let mut e = Vec::new();
                        k.canonical(&mut e);
                        v.canonical(&mut e);
                        e
                    })
                    .collect();
                entries.sort();
                out.push(b'd');
                out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
                for e in entries {
                    out.extend_from_slice(&(e.len() as u64).to_le_bytes());
                    out.extend_from_slice(&e);
                }
            }
            Value::Opaque(name) => text(out, b'o', name.as_bytes()),
            Value::Truncated => out.push(b'T'),
        }
    }

    /// A stable 64-bit hash of the value for execution signatures. Floats are hashed rounded to
    /// 12 significant digits (and -0.0 as 0.0), so values that differ only by the order of a
    /// summation (0.1 + 0.2 against 0.3) hash equally; two floats that straddle a rounding
    /// boundary can still hash apart.
    pub fn signature_hash(&self) -> u64 {
        let mut bytes = Vec::new();
        self.canonical(&mut bytes);
        let digest = Sha256::digest(&bytes);
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
    }
}

/// A float as the signature hash sees it: 12 significant digits, one zero, one NaN.
fn rounded(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f == 0.0 {
        "0".into()
    } else {
        format!("{f:.11e}")
    }
}

enum Number<'a> {
    Int(&'a str),
    Real(f64),
    Complex(f64, f64),
}

impl Number<'_> {
    /// Python's `==`, widened by `tol` wherever a float takes part (see [`Value::eq_within`]).
    fn eq(&self, other: &Number<'_>, tol: f64) -> bool {
        let close = |a: f64, b: f64| a == b || (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0);
        let int_close = |i: &str, f: f64| {
            int_eq_float(i, f) || (tol > 0.0 && i.parse::<f64>().is_ok_and(|i| close(i, f)))
        };
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Int(i), Number::Real(f)) | (Number::Real(f), Number::Int(i)) => {
                int_close(i, *f)
            }
            (Number::Real(a), Number::Real(b)) => close(*a, *b),
            (Number::Complex(re, im), other) | (other, Number::Complex(re, im)) => match other {
                Number::Complex(re2, im2) => close(*re, *re2) && close(*im, *im2),
                Number::Real(f) => close(*im, 0.0) && close(*re, *f),
                Number::Int(i) => close(*im, 0.0) && int_close(i, *re),
            },
        }
    }
}

/// Exact comparison of an int (decimal digits) with a float, as Python does it.
fn int_eq_float(int: &str, f: f64) -> bool {
    if !f.is_finite() || f.fract() != 0.0 {
        return false;
    }
    if let Ok(i) = int.parse::<i128>()
        && f.abs() < 1.0e38
    {
        return (f as i128) == i && (i as f64) == f;
    }
    // Large integral floats print their exact value with zero decimals.
    let exact = format!("{f:.0}");
    exact == int || (exact == "-0" && int == "0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(&j).unwrap()
    }

    #[test]
    fn floats_within_a_tolerance() {
        let sum = v(json!(["f", "0.30000000000000004"]));
        let third = v(json!(["f", "0.3"]));
        assert!(!sum.py_eq(&third), "Python's == is exact");
        assert!(sum.eq_within(&third, 1e-9));
        // Nested, against an int, and absolute below 1.
        let a = v(json!([
            "l",
            [["f", "2.0000000001"], ["t", [["f", "1e-12"]]]]
        ]));
        let b = v(json!(["l", [["i", "2"], ["t", [["i", "0"]]]]]));
        assert!(!a.py_eq(&b));
        assert!(a.eq_within(&b, 1e-9));
        // Relative above 1: 1e6 + 0.01 is within 1e-8 of 1e6, 1e6 + 1 is not.
        let big = v(json!(["f", "1000000.0"]));
        assert!(big.eq_within(&v(json!(["f", "1000000.01"])), 1e-8));
        assert!(!big.eq_within(&v(json!(["f", "1000001.0"])), 1e-8));
        // Ints and strings stay exact.
        assert!(!v(json!(["i", "1000000000"])).eq_within(&v(json!(["i", "1000000001"])), 1e-6));
        assert!(!v(json!(["s", "a"])).eq_within(&v(json!(["s", "b"])), 0.5));
    }

    #[test]
    fn signature_hashes_round_floats() {
        let hash = |j| v(j).signature_hash();
        assert_eq!(
            hash(json!(["f", "0.30000000000000004"])),
            hash(json!(["f", "0.3"]))
        );
        assert_eq!(hash(json!(["f", "-0.0"])), hash(json!(["f", "0.0"])));
        assert_ne!(hash(json!(["f", "0.3"])), hash(json!(["f", "0.30001"])));
        assert_ne!(hash(json!(["f", "1.0"])), hash(json!(["i", "1"])));
        assert_eq!(
            hash(json!(["l", [["f", "2.675000000000001"]]])),
            hash(json!(["l", [["f", "2.675"]]]))
        );
    }

    #[test]
    fn numbers_compare_like_python() {
        assert!(v(json!(["i", "1"])).py_eq(&v(json!(["f", "1.0"]))));
        assert!(v(json!(["b", true])).py_eq(&v(json!(["i", "1"]))));
        assert!(v(json!(["f", "-0.0"])).py_eq(&v(json!(["f", "0.0"]))));
        assert!(!v(json!(["f", "nan"])).py_eq(&v(json!(["f", "nan"]))));
        assert!(!v(json!(["i", "3"])).py_eq(&v(json!(["f", "3.5"]))));
        assert!(v(json!(["c", "2.0", "0.0"])).py_eq(&v(json!(["i", "2"]))));
        let big = "1".to_string() + &"0".repeat(40);
        assert!(
            v(json!(["i", big])).py_eq(&v(json!(["f", "1e+40"])))
                == (format!("{:.0}", 1e40) == big)
        );
        assert!(
            !v(json!(["i", "12345678901234567890123"]))
                .py_eq(&v(json!(["i", "12345678901234567890124"])))
        );
    }

    #[test]
    fn containers_compare_like_python() {
        let l = v(json!(["l", [["i", "1"], ["s", "a"]]]));
        let t = v(json!(["t", [["i", "1"], ["s", "a"]]]));
        assert!(!l.py_eq(&t));
        assert!(l.py_eq(&v(json!(["l", [["f", "1.0"], ["s", "a"]]]))));
        let s1 = v(json!(["S", [["i", "1"], ["i", "2"]]]));
        let s2 = v(json!(["F", [["i", "2"], ["i", "1"]]]));
        assert!(s1.py_eq(&s2));
        let d1 = v(json!([
            "d",
            [[["s", "a"], ["i", "1"]], [["s", "b"], ["N"]]]
        ]));
        let d2 = v(json!([
            "d",
            [[["s", "b"], ["N"]], [["s", "a"], ["b", true]]]
        ]));
        assert!(d1.py_eq(&d2));
        assert!(!v(json!(["o", "AlwaysEqual"])).py_eq(&v(json!(["o", "AlwaysEqual"]))));
        assert!(!Value::Truncated.py_eq(&Value::Truncated));
    }

    #[test]
    fn signature_hash_keeps_tags_apart_and_ignores_set_order() {
        let h = |j| v(j).signature_hash();
        assert_ne!(h(json!(["i", "1"])), h(json!(["f", "1.0"])));
        assert_ne!(h(json!(["i", "1"])), h(json!(["b", true])));
        assert_eq!(
            h(json!(["S", [["i", "1"], ["i", "2"]]])),
            h(json!(["S", [["i", "2"], ["i", "1"]]]))
        );
        assert_ne!(
            h(json!(["l", [["i", "1"], ["i", "2"]]])),
            h(json!(["l", [["i", "2"], ["i", "1"]]]))
        );
    }

    #[test]
    fn malformed_values_are_rejected() {
        for j in [
            json!("x"),
            json!(["i", "1.5"]),
            json!(["zz"]),
            json!(["d", [[["N"]]]]),
            json!(["y", "abc"]),
        ] {
            assert!(Value::from_json(&j).is_err(), "{j}");
        }
    }

    #[test]
    fn truthiness() {
        assert_eq!(v(json!(["i", "0"])).truthy(), Some(false));
        assert_eq!(v(json!(["l", []])).truthy(), Some(false));
        assert_eq!(v(json!(["s", "x"])).truthy(), Some(true));
        assert_eq!(v(json!(["o", "X"])).truthy(), None);
    }
}
