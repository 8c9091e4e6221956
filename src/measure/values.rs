//! Named per-image values (`norm_l2`, `adv_pred`, ...): a small map kept
//! sorted by name.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// A value's name: a literal (nothing allocated) or a formatted string.
pub type Name = Cow<'static, str>;

/// The named numbers of one image's result, sorted by name.
///
/// An audit keeps one per image and measure until the report is written, so
/// this is a sorted vector: one allocation per image, where a
/// `BTreeMap<String, f64>` makes one per name plus a 384-byte node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values(Vec<(Name, f64)>);

impl Values {
    /// No values.
    pub fn new() -> Self {
        Values(Vec::new())
    }

    /// Sets `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: impl Into<Name>, value: f64) -> Option<f64> {
        let name = name.into();
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<&f64> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// Whether a value is named `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// `(name, value)` pairs, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }
}

/// `values["norm_l2"]`: panics when there is no such value, as a map does.
impl<Q: AsRef<str> + ?Sized> std::ops::Index<&Q> for Values {
    type Output = f64;

    fn index(&self, name: &Q) -> &f64 {
        let name = name.as_ref();
        self.get(name)
            .unwrap_or_else(|| panic!("no value named {name:?}"))
    }
}

impl<K: Into<Name>> FromIterator<(K, f64)> for Values {
    fn from_iter<I: IntoIterator<Item = (K, f64)>>(iter: I) -> Self {
        let mut v = Values::new();
        for (k, x) in iter {
            v.insert(k, x);
        }
        v
    }
}

impl<K: Into<Name>, const N: usize> From<[(K, f64); N]> for Values {
    fn from(pairs: [(K, f64); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// A JSON object `{name: value}`.
impl Serialize for Values {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// From a JSON object; `null` (how JSON writes NaN) reads back as NaN.
impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut v = Values::from([("rho", 0.5), ("adv_pred", 3.0)]);
        assert_eq!(v.insert(format!("eig{}", 1), 2.0), None);
        assert_eq!(v.insert("rho", 0.25), Some(0.5));
        assert_eq!(v.keys().collect::<Vec<_>>(), ["adv_pred", "eig1", "rho"]);
        assert_eq!(v["rho"], 0.25);
        assert_eq!(v[&"eig1".to_string()], 2.0);
        assert_eq!(v.get("norm_l2"), None);
        assert!(v.contains_key("adv_pred") && !v.contains_key("adv"));
        assert_eq!(v.len(), 3);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"adv_pred":3.0,"eig1":2.0,"rho":0.25}"#);
        let back: Values = serde_json::from_str(r#"{"rho":0.25,"x":null}"#).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["rho", "x"]);
        assert!(back["x"].is_nan());
    }
}
