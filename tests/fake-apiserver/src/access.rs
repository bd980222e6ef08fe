//! SubjectAccessReviews (`authorization.k8s.io/v1`): the server answers them from an
//! allow-list tests configure ([`crate::FakeApiServer::allow`]); anything not allowed is
//! denied. Only resource attributes are modelled (a review of a non-resource URL is denied).

use serde_json::{Value, json};

use crate::error::ApiError;

/// One allowed access. Every field is matched exactly, `*` matching anything; `subject` is
/// a user name, or `group:<name>` for every member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub subject: String,
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Plural resource name (`secrets`), with `/subresource` when one is asked about.
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl AccessRule {
    /// `user` may `get` the Secret `namespace/name`.
    pub fn get_secret(user: &str, namespace: &str, name: &str) -> Self {
        Self {
            subject: user.to_owned(),
            verb: "get".to_owned(),
            group: String::new(),
            resource: "secrets".to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn matches(&self, user: &str, groups: &[&str], attributes: &Value) -> bool {
        let field = |key: &str| attributes[key].as_str().unwrap_or_default();
        let eq = |rule: &str, value: &str| rule == "*" || rule == value;
        let subject = match self.subject.strip_prefix("group:") {
            Some(group) => groups.contains(&group),
            None => self.subject == user,
        };
        let resource = match field("subresource") {
            "" => field("resource").to_owned(),
            sub => format!("{}/{sub}", field("resource")),
        };
        subject
            && eq(&self.verb, field("verb"))
            && eq(&self.group, field("group"))
            && eq(&self.resource, &resource)
            && eq(&self.namespace, field("namespace"))
            && eq(&self.name, field("name"))
    }
}

/// The created review, with its `status` decided by `rules`.
pub(crate) fn review(rules: &[AccessRule], mut body: Value) -> Result<Value, ApiError> {
    if body["kind"] != "SubjectAccessReview" {
        return Err(ApiError::bad_request("expected a SubjectAccessReview"));
    }
    let spec = &body["spec"];
    let user = spec["user"].as_str().unwrap_or_default();
    if user.is_empty() && spec["groups"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::bad_request(
            "spec.user or spec.groups: at least one is required",
        ));
    }
    let groups: Vec<&str> = spec["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let attributes = &spec["resourceAttributes"];
    let allowed = attributes.is_object() && rules.iter().any(|r| r.matches(user, &groups, attributes));
    body["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the fake API server's access rules"})
    } else {
        json!({"allowed": false, "reason": "no access rule of the fake API server allows it"})
    };
    Ok(body)
}
