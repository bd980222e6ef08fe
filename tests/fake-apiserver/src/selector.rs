//! Label and field selectors, as in `?labelSelector=` and `?fieldSelector=`.

use serde_json::Value;

/// Why a selector could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid selector {selector:?}: {problem}")]
pub struct SelectorError {
    selector: String,
    problem: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`app=a,tier!=db,env in (a,b),!legacy`). Empty selects all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let err = |problem| SelectorError {
            selector: selector.to_owned(),
            problem,
        };
        let mut requirements = Vec::new();
        for term in split_terms(selector) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((key, values)) = split_set(term, " notin ") {
                Requirement::NotIn(key, values.ok_or_else(|| err("bad value set"))?)
            } else if let Some((key, values)) = split_set(term, " in ") {
                Requirement::In(key, values.ok_or_else(|| err("bad value set"))?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if term.contains(char::is_whitespace) {
                return Err(err("unexpected whitespace"));
            } else {
                Requirement::Exists(term.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v),
            Requirement::NotEquals(k, v) => label(k) != Some(v),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits at commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// `key op (a,b)`: `Some((key, Some(values)))`, `Some((key, None))` when the set is malformed.
fn split_set(term: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (key, set) = term.split_once(op)?;
    let values = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_owned()).collect());
    Some((key.trim().to_owned(), values))
}

/// A parsed field selector (`metadata.name=a,type!=helm.sh/release.v1`); fields are dotted
/// paths into the object and compare as strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(SelectorError {
                    selector: selector.to_owned(),
                    problem: "a field selector term needs = or !=",
                });
            };
            let path = path.trim().split('.').map(str::to_owned).collect();
            terms.push((path, equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let found = path.iter().try_fold(object, |v, segment| v.get(segment));
            let text = match found {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (text == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "prod", "labels": labels}, "type": "Opaque"})
    }

    #[test]
    fn label_selector_operators() {
        let obj = pod(json!({"app": "a", "tier": "web"}));
        let yes = [
            "",
            "app=a",
            "app==a",
            "app=a,tier=web",
            "app in (a, b)",
            "tier notin (db)",
            "app",
            "!legacy",
            "app!=b",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        let no = ["app=b", "app in (b,c)", "tier notin (web)", "legacy", "!app", "app!=a"];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        assert!(LabelSelector::parse("app in a,b").is_err());
    }

    #[test]
    fn field_selector_paths() {
        let obj = pod(json!({}));
        assert!(FieldSelector::parse("metadata.name=p").unwrap().matches(&obj));
        assert!(
            FieldSelector::parse("metadata.namespace==prod,type!=x")
                .unwrap()
                .matches(&obj)
        );
        assert!(!FieldSelector::parse("metadata.name=q").unwrap().matches(&obj));
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&obj));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
