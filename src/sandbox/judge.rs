//! The outside comparison: verdicts of split tests, decided in this process from the value (or
//! exception) the child reported and the expected part that never entered the child.
//!
//! The worker's supervisor plans each test and keeps its expected part (a [`Judge`]); the child
//! only runs the expression. Every judge follows Python's own semantics on plain data:
//! `==`/`!=` ([`Value::py_eq`], or [`Value::eq_within`] where the job asks for a float
//! tolerance, which also applies to membership), `is` against `None`/`True`/`False`, truthiness
//! of a returned
//! value, `abs(E - L) < tol` (or `<=`), `math.isclose(E, L, rel_tol=, abs_tol=)`, membership in a
//! literal container (`in` / `not in`: list, tuple, set, dict keys, substring), and an expected
//! exception (`try: E except X: pass else: assert False`, `pytest.raises(X)`). A value that is
//! not plain data ([`Value::Opaque`]) never passes a comparison: the methods that would decide it
//! are the candidate's own code.

use serde_json::Value as Json;

use super::value::Value;
use super::{SandboxError, Verdict};

/// What the child reported for one split test.
pub enum Report<'a> {
    /// The expression's value.
    Value(&'a Value),
    /// The expression raised: the exception's type name and its class names (most derived first).
    Raised { kind: &'a str, mro: &'a [String] },
    /// A statement expected to raise returned normally.
    Returned,
}

fn protocol(what: &str) -> SandboxError {
    SandboxError::Protocol(what.to_string())
}

fn error(kind: &str) -> Verdict {
    Verdict::Error {
        kind: kind.to_string(),
    }
}

fn pass_if(ok: bool) -> Verdict {
    if ok { Verdict::Pass } else { Verdict::Fail }
}

/// Decides a split test. `judge` is the supervisor's plan (`None` for a call test without an
/// expected value: returning is a pass).
/// The verdict of a split test. `float_tolerance` widens `==`, `!=` and membership for floats
/// ([`Value::eq_within`]); 0 is Python's exact `==`.
pub fn decide(
    report: Report<'_>,
    judge: Option<&Json>,
    float_tolerance: f64,
) -> Result<Verdict, SandboxError> {
    if let Report::Value(Value::Truncated) = report {
        return Ok(error("ValueTooLarge"));
    }
    let Some(judge) = judge else {
        return Ok(match report {
            Report::Value(_) => Verdict::Pass,
            Report::Raised { kind, .. } => error(kind),
            Report::Returned => return Err(protocol("a statement report without a judge")),
        });
    };
    let cmp = judge
        .get("cmp")
        .and_then(|c| c.as_str())
        .ok_or_else(|| protocol("judge without comparison"))?;
    let expected = || -> Result<Value, SandboxError> {
        let raw = judge
            .get("value")
            .ok_or_else(|| protocol("comparison without expected value"))?;
        Value::from_json(raw).map_err(|e| protocol(&format!("expected value: {e}")))
    };
    let number = |key: &str| -> Result<f64, SandboxError> {
        judge
            .get(key)
            .and_then(|x| x.as_f64())
            .ok_or_else(|| protocol(&format!("judge without {key}")))
    };
    if cmp == "raises" {
        let names: Vec<&str> = judge
            .get("names")
            .and_then(|n| n.as_array())
            .map(|n| n.iter().filter_map(|x| x.as_str()).collect())
            .ok_or_else(|| protocol("raises judge without names"))?;
        return Ok(match report {
            Report::Raised { kind, mro } => {
                if mro.iter().any(|c| names.contains(&c.as_str())) {
                    Verdict::Pass
                } else {
                    error(kind)
                }
            }
            Report::Returned => Verdict::Fail,
            Report::Value(_) => return Err(protocol("a value for a raises test")),
        });
    }
    let value = match report {
        Report::Value(v) => v,
        Report::Raised { kind, .. } => return Ok(error(kind)),
        Report::Returned => return Err(protocol("a statement report for a value test")),
    };
    Ok(match cmp {
        "eq" => pass_if(value.eq_within(&expected()?, float_tolerance)),
        "ne" => pass_if(
            !value.eq_within(&expected()?, float_tolerance) && !matches!(value, Value::Opaque(_)),
        ),
        "is" => pass_if(value.is_same_singleton(&expected()?)),
        "isnot" => pass_if(!value.is_same_singleton(&expected()?)),
        "truthy" => pass_if(value.truthy() == Some(true)),
        "falsy" => pass_if(value.truthy() == Some(false)),
        "in" => contains(&expected()?, value, float_tolerance)?,
        "notin" => match contains(&expected()?, value, float_tolerance)? {
            Verdict::Pass => Verdict::Fail,
            Verdict::Fail if !matches!(value, Value::Opaque(_)) => Verdict::Pass,
            other => other,
        },
        "absdiff" => {
            let strict = judge
                .get("strict")
                .and_then(|s| s.as_bool())
                .ok_or_else(|| protocol("absdiff judge without strict"))?;
            abs_diff_within(value, &expected()?, number("tol")?, strict)
        }
        "isclose" => is_close(value, &expected()?, number("rel_tol")?, number("abs_tol")?),
        other => return Err(protocol(&format!("unknown comparison {other:?}"))),
    })
}

/// `value in container` for a literal container.
fn contains(container: &Value, value: &Value, tol: f64) -> Result<Verdict, SandboxError> {
    // Hash-based containers: Python raises TypeError for an unhashable value; an opaque value's
    // hash and equality are its own code, so it never passes.
    let hashed = |keys: Vec<&Value>| match value {
        Value::Opaque(_) => Verdict::Fail,
        Value::List(_) | Value::Dict(_) | Value::Set(_) => error("TypeError"),
        _ => pass_if(keys.iter().any(|k| k.eq_within(value, tol))),
    };
    Ok(match container {
        Value::List(items) | Value::Tuple(items) => {
            pass_if(items.iter().any(|x| x.eq_within(value, tol)))
        }
        Value::Set(items) | Value::FrozenSet(items) => hashed(items.iter().collect()),
        Value::Dict(entries) => hashed(entries.iter().map(|(k, _)| k).collect()),
        Value::Str(s) => match value {
            Value::Str(v) => pass_if(s.contains(v.as_str())),
            Value::Opaque(_) => Verdict::Fail,
            _ => error("TypeError"),
        },
        Value::Bytes(b) => match value {
            Value::Bytes(v) => pass_if(v.is_empty() || b.windows(v.len()).any(|w| w == &v[..])),
            Value::Int(i) => match i.parse::<u8>() {
                Ok(byte) => pass_if(b.contains(&byte)),
                Err(_) => error("ValueError"),
            },
            Value::Opaque(_) => Verdict::Fail,
            _ => error("TypeError"),
        },
        _ => return Err(protocol("membership in a value that is not a container")),
    })
}

/// A real number as Python's `float(x)` would give it; `Err` carries the exception Python raises.
fn real(v: &Value) -> Result<f64, &'static str> {
    match v {
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::Int(s) => {
            let f: f64 = s.parse().map_err(|_| "OverflowError")?;
            if f.is_finite() {
                Ok(f)
            } else {
                Err("OverflowError")
            }
        }
        Value::Float(f) => Ok(*f),
        _ => Err("TypeError"),
    }
}

/// `abs(value - expected) < tol` (`<=` when not strict).
fn abs_diff_within(value: &Value, expected: &Value, tol: f64, strict: bool) -> Verdict {
    let within = |d: f64| if strict { d < tol } else { d <= tol };
    if let (Value::Int(a), Value::Int(b)) = (value, expected)
        && let (Ok(a), Ok(b)) = (a.parse::<i128>(), b.parse::<i128>())
    {
        // Exact integer arithmetic, then Python compares the int with the float tolerance.
        return pass_if(within(a.abs_diff(b) as f64));
    }
    if let Value::Complex(re, im) = value {
        return match real(expected) {
            Ok(e) => pass_if(within((re - e).hypot(*im))),
            Err(kind) => error(kind),
        };
    }
    if matches!(value, Value::Opaque(_)) {
        return Verdict::Fail;
    }
    match (real(value), real(expected)) {
        (Ok(a), Ok(b)) => pass_if(within((a - b).abs())),
        (Err(kind), _) | (_, Err(kind)) => error(kind),
    }
}

/// `math.isclose(value, expected, rel_tol=, abs_tol=)`, as CPython computes it.
fn is_close(value: &Value, expected: &Value, rel_tol: f64, abs_tol: f64) -> Verdict {
    if matches!(value, Value::Opaque(_)) {
        return Verdict::Fail;
    }
    let (a, b) = match (real(value), real(expected)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(kind), _) | (_, Err(kind)) => return error(kind),
    };
    if a == b {
        return Verdict::Pass;
    }
    if a.is_infinite() || b.is_infinite() {
        return Verdict::Fail;
    }
    let diff = (b - a).abs();
    pass_if(diff <= (rel_tol * b).abs() || diff <= (rel_tol * a).abs() || diff <= abs_tol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(j: Json) -> Value {
        Value::from_json(&j).unwrap()
    }

    fn judge(report: Report<'_>, j: Json) -> Verdict {
        decide(report, Some(&j), 0.0).unwrap()
    }

    #[test]
    fn tolerance_comparisons_follow_python() {
        let half = value(json!(["f", "0.5000001"]));
        let j = json!({"cmp": "absdiff", "value": ["f", "0.5"], "tol": 1e-6, "strict": true});
        assert_eq!(judge(Report::Value(&half), j.clone()), Verdict::Pass);
        let far = value(json!(["f", "0.6"]));
        assert_eq!(judge(Report::Value(&far), j.clone()), Verdict::Fail);
        let text = value(json!(["s", "0.5"]));
        assert_eq!(
            judge(Report::Value(&text), j.clone()),
            error("TypeError"),
            "str - float raises in Python"
        );
        let nan = value(json!(["f", "nan"]));
        assert_eq!(judge(Report::Value(&nan), j), Verdict::Fail);
        let opaque = value(json!(["o", "AlwaysClose"]));
        let close = json!({"cmp": "isclose", "value": ["i", "3"], "rel_tol": 1e-9, "abs_tol": 0.0});
        assert_eq!(judge(Report::Value(&opaque), close.clone()), Verdict::Fail);
        let three = value(json!(["f", "3.0000000000001"]));
        assert_eq!(judge(Report::Value(&three), close.clone()), Verdict::Pass);
        let inf = value(json!(["f", "inf"]));
        assert_eq!(judge(Report::Value(&inf), close), Verdict::Fail);
        let exact = json!({"cmp": "absdiff", "value": ["i", "10"], "tol": 1.0, "strict": false});
        assert_eq!(
            judge(Report::Value(&value(json!(["i", "11"]))), exact),
            Verdict::Pass
        );
    }

    #[test]
    fn a_float_tolerance_widens_equality_and_membership() {
        let sum = value(json!(["f", "0.30000000000000004"]));
        let eq = json!({"cmp": "eq", "value": ["f", "0.3"]});
        let within = |j: &Json, tol| decide(Report::Value(&sum), Some(j), tol).unwrap();
        assert_eq!(within(&eq, 0.0), Verdict::Fail);
        assert_eq!(within(&eq, 1e-9), Verdict::Pass);
        let ne = json!({"cmp": "ne", "value": ["f", "0.3"]});
        assert_eq!(within(&ne, 1e-9), Verdict::Fail);
        let member = json!({"cmp": "in", "value": ["t", [["f", "0.3"], ["f", "0.6"]]]});
        assert_eq!(within(&member, 0.0), Verdict::Fail);
        assert_eq!(within(&member, 1e-9), Verdict::Pass);
    }

    #[test]
    fn membership_follows_python() {
        let two = value(json!(["i", "2"]));
        let tuple = json!({"cmp": "in", "value": ["t", [["i", "1"], ["f", "2.0"]]]});
        assert_eq!(judge(Report::Value(&two), tuple.clone()), Verdict::Pass);
        let three = value(json!(["i", "3"]));
        assert_eq!(judge(Report::Value(&three), tuple), Verdict::Fail);
        let sub = json!({"cmp": "in", "value": ["s", "hello world"]});
        assert_eq!(
            judge(Report::Value(&value(json!(["s", "lo w"]))), sub.clone()),
            Verdict::Pass
        );
        assert_eq!(judge(Report::Value(&two), sub), error("TypeError"));
        let set = json!({"cmp": "notin", "value": ["S", [["i", "1"]]]});
        assert_eq!(judge(Report::Value(&two), set.clone()), Verdict::Pass);
        let list = value(json!(["l", []]));
        assert_eq!(judge(Report::Value(&list), set.clone()), error("TypeError"));
        let opaque = value(json!(["o", "X"]));
        assert_eq!(
            judge(Report::Value(&opaque), set),
            Verdict::Fail,
            "an opaque value never passes `not in`"
        );
    }

    #[test]
    fn expected_exceptions_match_by_class_name() {
        let j = json!({"cmp": "raises", "names": ["ValueError"]});
        let mro = vec![
            "UnicodeDecodeError".to_string(),
            "UnicodeError".into(),
            "ValueError".into(),
            "Exception".into(),
        ];
        let raised = Report::Raised {
            kind: "UnicodeDecodeError",
            mro: &mro,
        };
        assert_eq!(judge(raised, j.clone()), Verdict::Pass);
        let other = vec!["KeyError".to_string(), "LookupError".into()];
        let raised = Report::Raised {
            kind: "KeyError",
            mro: &other,
        };
        assert_eq!(judge(raised, j.clone()), error("KeyError"));
        assert_eq!(judge(Report::Returned, j), Verdict::Fail);
    }

    #[test]
    fn malformed_judges_are_protocol_errors() {
        let one = value(json!(["i", "1"]));
        assert!(decide(Report::Value(&one), Some(&json!({"cmp": "approx"})), 0.0).is_err());
        assert!(decide(Report::Value(&one), Some(&json!({"cmp": "eq"})), 0.0).is_err());
        assert!(decide(Report::Returned, None, 0.0).is_err());
        assert_eq!(
            decide(Report::Value(&one), None, 0.0).unwrap(),
            Verdict::Pass
        );
    }
}
