//! Gates: thresholds on report values and regressions against a baseline.
//!
//! A threshold reads `ID.KEY OP VALUE`, e.g. `deepfool.median_rho >= 0.002`:
//! `ID` is a measure's id in the suite, `KEY` a key of its summary, `OP` one
//! of `>=`, `>`, `<=`, `<`. It is checked for every model of a report. A
//! baseline comparison takes the same keys (a `>=`/`>` gate means higher is
//! better) and fails when the value moved the wrong way by more than the
//! allowed fraction of the baseline value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `<`
    #[serde(rename = "<")]
    Lt,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Ge => actual >= limit,
            Op::Gt => actual > limit,
            Op::Le => actual <= limit,
            Op::Lt => actual < limit,
        }
    }

    /// Whether larger values are better under this gate.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Op::Ge | Op::Gt)
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }
}

/// One threshold, `measure.key OP value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Measure id in the suite.
    pub measure: String,
    /// Summary key.
    pub key: String,
    /// Comparison.
    pub op: Op,
    /// Limit.
    pub value: f64,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{} {} {}",
            self.measure,
            self.key,
            self.op.symbol(),
            self.value
        )
    }
}

impl FromStr for Threshold {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "threshold {s:?}: {why} (expected e.g. `deepfool.median_rho >= 0.002`)"
            ))
        };
        let (pos, op, len) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
            .iter()
            .find_map(|(sym, op)| s.find(sym).map(|p| (p, *op, sym.len())))
            .ok_or_else(|| bad("no comparison"))?;
        let lhs = s[..pos].trim();
        let value: f64 = s[pos + len..]
            .trim()
            .parse()
            .map_err(|_| bad("the limit is not a number"))?;
        // A NaN limit fails every comparison and an infinite one passes or fails them all:
        // a gate that cannot say anything is a mistake, not a gate.
        if !value.is_finite() {
            return Err(bad("the limit is not a finite number"));
        }
        let (measure, key) = lhs.split_once('.').ok_or_else(|| bad("no MEASURE.KEY"))?;
        if measure.is_empty() || key.is_empty() {
            return Err(bad("empty measure or key"));
        }
        Ok(Threshold {
            measure: measure.trim().into(),
            key: key.trim().into(),
            op,
            value,
        })
    }
}

/// What a gate checked and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Model (variant) name.
    pub model: String,
    /// The gate as text (`deepfool.median_rho >= 0.002`, or a baseline rule).
    pub gate: String,
    /// `threshold` or `baseline`.
    pub kind: String,
    /// Value found (None: the report has no such value).
    pub actual: Option<f64>,
    /// Whether it passed.
    pub passed: bool,
    /// One line for people.
    pub message: String,
}

/// Looks up `measure.key` for a model; a closure so gates do not depend on
/// the report layout.
pub type Lookup<'a> = &'a dyn Fn(&str, &str) -> Option<f64>;

/// Checks `thresholds` for `model`.
pub fn check(model: &str, thresholds: &[Threshold], lookup: Lookup) -> Vec<GateResult> {
    thresholds
        .iter()
        .map(|t| {
            let actual = lookup(&t.measure, &t.key).filter(|v| !v.is_nan());
            let passed = actual.is_some_and(|a| t.op.holds(a, t.value));
            let message = match actual {
                None => format!(
                    "{model}: {t}: the report has no value {}.{}",
                    t.measure, t.key
                ),
                Some(a) if passed => format!("{model}: {t}: {a:.6} passes"),
                Some(a) => format!("{model}: {t}: {a:.6} fails"),
            };
            GateResult {
                model: model.into(),
                gate: t.to_string(),
                kind: "threshold".into(),
                actual,
                passed,
                message,
            }
        })
        .collect()
}

/// Compares `model`'s values against a baseline for the keys of `thresholds`:
/// fails when a value got worse by more than `max_regression` (a fraction)
/// of the baseline's magnitude.
pub fn regression(
    model: &str,
    thresholds: &[Threshold],
    max_regression: f64,
    now: Lookup,
    before: Lookup,
) -> Vec<GateResult> {
    thresholds
        .iter()
        .map(|t| {
            let gate = format!(
                "{}.{} regression <= {:.4}% of baseline",
                t.measure,
                t.key,
                100.0 * max_regression
            );
            let (a, b) = (now(&t.measure, &t.key), before(&t.measure, &t.key));
            let (passed, actual, message) = match (a, b) {
                (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                    let worse = if t.op.higher_is_better() { b - a } else { a - b };
                    let rel = worse / b.abs().max(1e-300);
                    let ok = rel <= max_regression;
                    let verb = if ok { "within" } else { "beyond" };
                    (
                        ok,
                        Some(a),
                        format!(
                            "{model}: {}.{} {a:.6} vs baseline {b:.6}: {:+.2}% worse, {verb} the {:.2}% allowed",
                            t.measure,
                            t.key,
                            100.0 * rel,
                            100.0 * max_regression
                        ),
                    )
                }
                (a, _) => (
                    false,
                    a,
                    format!(
                        "{model}: {}.{}: missing in the {} report",
                        t.measure,
                        t.key,
                        if a.is_none() { "current" } else { "baseline" }
                    ),
                ),
            };
            GateResult {
                model: model.into(),
                gate,
                kind: "baseline".into(),
                actual,
                passed,
                message,
            }
        })
        .collect()
}

/// Parses `"5%"` or `"0.05"` as a fraction.
pub fn parse_fraction(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| Error::Config(format!("{s:?} is not a fraction (e.g. 5% or 0.05)")))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(Error::Config(format!(
            "{s:?} must be a non-negative fraction"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_print() {
        let t: Threshold = "deepfool.median_rho >= 0.002".parse().unwrap();
        assert_eq!(
            (t.measure.as_str(), t.key.as_str(), t.op, t.value),
            ("deepfool", "median_rho", Op::Ge, 0.002)
        );
        assert_eq!(t.to_string(), "deepfool.median_rho >= 0.002");
        let t: Threshold = "uap.fooling_rate<0.5".parse().unwrap();
        assert_eq!(t.op, Op::Lt);
        // A budget key: the dot of its budget belongs to the key.
        let t: Threshold = "minnorm_linf.robust_accuracy@0.05 >= 0.6".parse().unwrap();
        assert_eq!(
            (t.measure.as_str(), t.key.as_str(), t.value),
            ("minnorm_linf", "robust_accuracy@0.05", 0.6)
        );
        for bad in [
            "deepfool.median_rho",
            "median_rho >= 1",
            "a.b >= x",
            ".b >= 1",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gates_pass_fail_and_flag_missing_values() {
        let ts: Vec<Threshold> = ["a.x >= 1", "a.x < 1", "a.y >= 0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let lookup = |m: &str, k: &str| (m == "a" && k == "x").then_some(1.5);
        let r = check("m", &ts, &lookup);
        assert_eq!(
            r.iter().map(|g| g.passed).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert!(r[2].message.contains("no value"));
    }

    #[test]
    fn regressions_follow_the_gate_direction() {
        let ts: Vec<Threshold> = ["a.up >= 0", "a.down <= 1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let before = |_: &str, k: &str| Some(if k == "up" { 1.0 } else { 0.5 });
        // 'up' fell 10%, 'down' rose 4%.
        let now = |_: &str, k: &str| Some(if k == "up" { 0.9 } else { 0.52 });
        let r = regression("m", &ts, 0.05, &now, &before);
        assert_eq!(
            r.iter().map(|g| g.passed).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(parse_fraction("5%").unwrap(), 0.05);
        assert_eq!(parse_fraction("0.1").unwrap(), 0.1);
        assert!(parse_fraction("-1%").is_err() && parse_fraction("x").is_err());
    }
}
