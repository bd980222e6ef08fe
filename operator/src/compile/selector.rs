//! Kubernetes label selectors, evaluated against a pod's labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`, with the semantics of the API server:
/// every `matchLabels` entry and every `matchExpressions` requirement must hold, and the
/// empty selector selects everything. An unknown operator selects nothing (fail closed).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|req| {
            let value = labels.get(&req.key);
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Checks a selector's shape: known operators, values present exactly where they must be.
pub fn check_selector(selector: &LabelSelector) -> Result<(), String> {
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        match req.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                return Err(format!("matchExpressions[{i}]: operator {} needs values", req.operator));
            }
            "Exists" | "DoesNotExist" if has_values => {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} takes no values",
                    req.operator
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "matchExpressions[{i}].operator: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let pod = labels(&[("app", "finance"), ("tier", "api")]);
        let empty = LabelSelector::default();
        assert!(selector_matches(&empty, &pod));

        let by_app = LabelSelector {
            match_labels: Some(labels(&[("app", "finance")])),
            ..Default::default()
        };
        assert!(selector_matches(&by_app, &pod));
        assert!(!selector_matches(&by_app, &labels(&[("app", "hr")])));

        for (e, want) in [
            (expr("tier", "In", &["api", "web"]), true),
            (expr("tier", "In", &["web"]), false),
            (expr("tier", "NotIn", &["web"]), true),
            (expr("missing", "NotIn", &["x"]), true),
            (expr("app", "Exists", &[]), true),
            (expr("app", "DoesNotExist", &[]), false),
            (expr("app", "Bogus", &[]), false),
        ] {
            let sel = LabelSelector {
                match_expressions: Some(vec![e.clone()]),
                ..Default::default()
            };
            assert_eq!(selector_matches(&sel, &pod), want, "{e:?}");
        }
    }

    #[test]
    fn selector_shape_errors_name_the_field() {
        let sel = LabelSelector {
            match_expressions: Some(vec![expr("a", "Near", &[])]),
            ..Default::default()
        };
        assert!(
            check_selector(&sel)
                .unwrap_err()
                .contains("matchExpressions[0].operator")
        );
        let sel = LabelSelector {
            match_expressions: Some(vec![expr("a", "In", &[])]),
            ..Default::default()
        };
        assert!(check_selector(&sel).unwrap_err().contains("needs values"));
    }
}
