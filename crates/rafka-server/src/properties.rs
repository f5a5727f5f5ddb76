//! Java `.properties` syntax, as Kafka's `server.properties` uses it: `key=value`,
//! `key: value` or `key value`; `#` and `!` comments; a trailing backslash continues a
//! line; `\t`, `\n`, `\\`, `\=`, `\:` and `\uXXXX` escapes.

use thiserror::Error;

/// A line that cannot be read as a property.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{path}:{line}: {reason}")]
pub struct PropertiesError {
    pub path: String,
    pub line: usize,
    pub reason: String,
}

/// One `key=value` with the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub line: usize,
}

fn unescape(raw: &str, path: &str, line: usize) -> Result<String, PropertiesError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| PropertiesError {
                        path: path.into(),
                        line,
                        reason: format!("bad unicode escape \\u{hex}"),
                    })?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Splits a logical line into raw key and raw value at the first unescaped separator.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' => return (&line[..i], line[i + 1..].trim_start()),
            b' ' | b'\t' | b'\x0c' => {
                let rest = line[i..].trim_start();
                let rest = rest
                    .strip_prefix('=')
                    .or_else(|| rest.strip_prefix(':'))
                    .unwrap_or(rest);
                return (&line[..i], rest.trim_start());
            }
            _ => i += 1,
        }
    }
    (line, "")
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Parses the text of a properties file. `path` is only used in error messages.
pub fn parse(text: &str, path: &str) -> Result<Vec<Property>, PropertiesError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let start_line = index + 1;
        let mut logical = trimmed.to_string();
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        let key = unescape(key, path, start_line)?;
        let value = unescape(value.trim_end(), path, start_line)?;
        if key.is_empty() {
            return Err(PropertiesError {
                path: path.into(),
                line: start_line,
                reason: "missing key before the separator".into(),
            });
        }
        out.push(Property {
            key,
            value,
            line: start_line,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse(text, "t").unwrap().into_iter().map(|p| (p.key, p.value)).collect()
    }

    #[test]
    fn separators_comments_and_whitespace() {
        let got = kv("# c\n! c\n\na=1\nb: 2\nc 3\n  d =  4  \ne=\n");
        let want: Vec<(String, String)> = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn values_keep_later_separators() {
        assert_eq!(
            kv("listeners=PLAINTEXT://127.0.0.1:9092,B://h:1"),
            vec![("listeners".into(), "PLAINTEXT://127.0.0.1:9092,B://h:1".into())]
        );
    }

    #[test]
    fn continuation_and_escapes() {
        assert_eq!(
            kv("log.dirs=/a,\\\n    /b\nk\\=x=\\u0041\\t"),
            vec![("log.dirs".into(), "/a,/b".into()), ("k=x".into(), "A\t".into())]
        );
    }

    #[test]
    fn line_numbers_are_reported() {
        let props = parse("\n\na=1\n", "f").unwrap();
        assert_eq!(props[0].line, 3);
        assert!(parse("=1", "f").unwrap_err().to_string().starts_with("f:1:"));
    }
}
