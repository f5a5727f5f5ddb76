//! Values computed from the environment before the settings are typed, so that one
//! pod template (Kubernetes StatefulSet) or one image configures every node, with no
//! shell in the image to compute anything.
//!
//! - [`interpolate`]: `${NAME}` in any configuration value is replaced by the
//!   environment variable `NAME`; `$${` is a literal `${`. A variable that is not set
//!   is an error naming it, never an empty string.
//! - [`ordinal_of`]: the trailing `-<n>` of a StatefulSet pod name (`rafka-2` → 2),
//!   from which `node.id` is derived when it is not set (see [`super::Settings`]).
//! - [`voters_from_pattern`]: `controller.quorum.voters` for ids `0..count` from a
//!   `host:port` pattern holding `{id}` (the StatefulSet ordinals).
//!
//! All three are pure: the caller supplies the environment and reports errors with
//! the key and origin they concern.

use std::collections::BTreeMap;

/// Why a `${...}` reference could not be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${NAME}` names a variable that is not in the environment.
    Missing(String),
    /// `${` with no closing `}`, or a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    Malformed(String),
}

/// Replaces every `${NAME}` in `value` by `env[NAME]`. `$${` stands for a literal
/// `${`; any other `$` is kept as it is.
pub fn interpolate(value: &str, env: &BTreeMap<String, String>) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| InterpolationError::Malformed(after.to_string()))?;
            let name = &tail[..end];
            if !is_variable_name(name) {
                return Err(InterpolationError::Malformed(format!("${{{name}}}")));
            }
            let replacement = env.get(name).ok_or_else(|| InterpolationError::Missing(name.to_string()))?;
            out.push_str(replacement);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The ordinal at the end of a StatefulSet pod name: `rafka-2` → 2. `None` when the
/// name does not end in `-<digits>` (a Deployment's `rafka-7d9f-x2kq`, a bare host).
pub fn ordinal_of(pod_name: &str) -> Option<i32> {
    let (_, digits) = pod_name.trim().rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The placeholder a voter pattern must hold.
pub const ID_PLACEHOLDER: &str = "{id}";

/// `0@<pattern with 0>,1@<pattern with 1>,…` for ids `0..count`.
pub fn voters_from_pattern(count: u32, pattern: &str) -> Result<String, String> {
    if count == 0 {
        return Err("the voter count must be at least 1".to_string());
    }
    let pattern = pattern.trim();
    if !pattern.contains(ID_PLACEHOLDER) {
        return Err(format!("the pattern must contain {ID_PLACEHOLDER}, e.g. rafka-{{id}}.rafka-headless:9093"));
    }
    let mut voters = Vec::with_capacity(count as usize);
    for id in 0..count {
        let address = pattern.replace(ID_PLACEHOLDER, &id.to_string());
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(format!("voter {id} would be {address:?}, which is not HOST:PORT")),
        }
        voters.push(format!("{id}@{address}"));
    }
    Ok(voters.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn references_are_replaced_by_environment_values() {
        let e = env(&[("POD_NAME", "rafka-2"), ("POD_NAMESPACE", "prod")]);
        assert_eq!(
            interpolate("CLIENT://${POD_NAME}.rafka-headless.${POD_NAMESPACE}.svc.cluster.local:9092", &e).unwrap(),
            "CLIENT://rafka-2.rafka-headless.prod.svc.cluster.local:9092"
        );
        assert_eq!(interpolate("no references", &e).unwrap(), "no references");
        assert_eq!(interpolate("${POD_NAME}${POD_NAME}", &e).unwrap(), "rafka-2rafka-2");
    }

    #[test]
    fn a_missing_variable_is_named_not_emptied() {
        assert_eq!(interpolate("a-${NOPE}-b", &env(&[])), Err(InterpolationError::Missing("NOPE".into())));
        assert_eq!(interpolate("${EMPTY}", &env(&[("EMPTY", "")])).unwrap(), "");
    }

    #[test]
    fn dollars_that_are_not_references_stay() {
        let e = env(&[("X", "1")]);
        assert_eq!(interpolate("pa$$word$", &e).unwrap(), "pa$$word$");
        assert_eq!(interpolate("$${X} is ${X}", &e).unwrap(), "${X} is 1");
        assert_eq!(interpolate("$X", &e).unwrap(), "$X");
    }

    #[test]
    fn malformed_references_are_errors() {
        let e = env(&[("X", "1")]);
        assert!(matches!(interpolate("${X", &e), Err(InterpolationError::Malformed(_))));
        assert!(matches!(interpolate("${}", &e), Err(InterpolationError::Malformed(_))));
        assert!(matches!(interpolate("${1X}", &e), Err(InterpolationError::Malformed(_))));
        assert!(matches!(interpolate("${file:/etc/x:key}", &e), Err(InterpolationError::Malformed(_))));
    }

    #[test]
    fn ordinals_come_from_the_trailing_number() {
        assert_eq!(ordinal_of("rafka-0"), Some(0));
        assert_eq!(ordinal_of("my-rafka-cluster-12"), Some(12));
        assert_eq!(ordinal_of("rafka"), None);
        assert_eq!(ordinal_of("rafka-"), None);
        assert_eq!(ordinal_of("rafka-7d9f-x2kq"), None);
        assert_eq!(ordinal_of("rafka-99999999999"), None, "does not fit a node id");
    }

    #[test]
    fn voters_are_listed_for_every_ordinal() {
        assert_eq!(
            voters_from_pattern(3, "rafka-{id}.h.prod.svc.cluster.local:9093").unwrap(),
            "0@rafka-0.h.prod.svc.cluster.local:9093,1@rafka-1.h.prod.svc.cluster.local:9093,2@rafka-2.h.prod.svc.cluster.local:9093"
        );
        assert_eq!(voters_from_pattern(1, "127.0.0.1:1900{id}").unwrap(), "0@127.0.0.1:19000");
        assert!(voters_from_pattern(0, "r-{id}:9093").is_err());
        assert!(voters_from_pattern(3, "rafka-0:9093").is_err());
        assert!(voters_from_pattern(3, "rafka-{id}").is_err());
    }
}
