//! Kafka's topic-name rules (`org.apache.kafka.common.internals.Topic`).

/// Longest legal topic name.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// Checks a topic name against Kafka's rules: 1..=249 characters from
/// `[a-zA-Z0-9._-]`, and not `.` or `..`. Returns the reason when it is invalid.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".to_string());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".to_string());
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(format!(
            "topic name is {} characters long, the limit is {MAX_TOPIC_NAME_LENGTH}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name contains {bad:?}; legal characters are ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Kafka refuses a topic whose name differs from an existing one only by '.' versus '_'
/// (they collide in metric names).
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kafka_legal_names() {
        for name in ["a", "orders", "my.topic-1_x", &"x".repeat(249)] {
            assert!(validate_topic_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_illegal_names() {
        for name in ["", ".", "..", "bad/name", "sp ace", "ünï", &"x".repeat(250)] {
            assert!(validate_topic_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn dots_and_underscores_collide() {
        assert_eq!(collision_key("a.b_c"), collision_key("a_b.c"));
    }
}
