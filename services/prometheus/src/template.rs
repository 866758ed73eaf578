//! Query templates: `{{stage}}` and `{{feature_key}}` filled in with escaping.
//!
//! A placeholder may only stand inside a double-quoted PromQL string (a label matcher's value,
//! e.g. `{stage="{{stage}}"}`), and its value is escaped for that string (backslash, quote,
//! newline and other control characters), so no value can end the string and add matchers or
//! operators. Inside a regex matcher (`=~"…"`, `!~"…"`) the value is also regex-quoted, so it
//! matches itself only. Unknown placeholders, placeholders outside a double-quoted string and
//! unterminated strings are refused when the plan is created.

use std::fmt::Write as _;

/// The values a template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateVars<'a> {
    /// The stage's name.
    pub stage: &'a str,
    pub feature_key: &'a str,
}

/// The placeholders a template may name.
pub const PLACEHOLDERS: [&str; 2] = ["stage", "feature_key"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{{{0}}}}}: only {{{{stage}}}} and {{{{feature_key}}}} exist")]
    UnknownPlaceholder(String),
    #[error("placeholder {{{{{0}}}}} must stand inside a double-quoted string, e.g. a label matcher's value")]
    OutsideString(String),
    #[error("a placeholder opened with {{{{ is never closed with }}}}")]
    Unclosed,
    #[error("the query has an unterminated string")]
    UnterminatedString,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Code,
    /// Inside `"…"`; `regex` when the string follows `=~` or `!~`.
    Double {
        regex: bool,
    },
    Single,
    Backtick,
    Comment,
}

/// Checks a template without values: known placeholders, each inside a double-quoted string.
pub fn check(template: &str) -> Result<(), TemplateError> {
    walk(template, |_, _| Ok(String::new())).map(|_| ())
}

/// The placeholders a template uses, in order.
pub fn placeholders(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut found = Vec::new();
    walk(template, |name, _| {
        found.push(name.to_owned());
        Ok(String::new())
    })?;
    Ok(found)
}

/// Fills in the placeholders with escaped values.
pub fn render(template: &str, vars: &TemplateVars<'_>) -> Result<String, TemplateError> {
    walk(template, |name, regex| {
        let raw = match name {
            "stage" => vars.stage,
            "feature_key" => vars.feature_key,
            other => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
        };
        Ok(if regex {
            escape_string(&escape_regex(raw))
        } else {
            escape_string(raw)
        })
    })
}

/// Escapes `value` for the inside of a PromQL double-quoted string (Go escaping rules).
pub fn escape_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Quotes RE2 metacharacters so a value inside a regex matcher matches only itself.
pub fn escape_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Scans PromQL, calling `fill(name, in_regex)` for each placeholder and copying the rest.
fn walk(
    template: &str,
    mut fill: impl FnMut(&str, bool) -> Result<String, TemplateError>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut mode = Mode::Code;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") {
            let close = rest.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = rest[2..close].trim();
            if !PLACEHOLDERS.contains(&name) {
                return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
            }
            let Mode::Double { regex } = mode else {
                return Err(TemplateError::OutsideString(name.to_owned()));
            };
            out.push_str(&fill(name, regex)?);
            rest = &rest[close + 2..];
            continue;
        }
        let len = c.len_utf8();
        match (mode, c) {
            (Mode::Code, '"') => {
                let before = out.trim_end();
                mode = Mode::Double {
                    regex: before.ends_with("=~") || before.ends_with("!~"),
                };
            }
            (Mode::Code, '\'') => mode = Mode::Single,
            (Mode::Code, '`') => mode = Mode::Backtick,
            (Mode::Code, '#') => mode = Mode::Comment,
            (Mode::Double { .. } | Mode::Single, '\\') => {
                // An escape: copy it and the escaped character as they are.
                out.push(c);
                rest = &rest[len..];
                if let Some(next) = rest.chars().next() {
                    out.push(next);
                    rest = &rest[next.len_utf8()..];
                }
                continue;
            }
            (Mode::Double { .. }, '"') | (Mode::Single, '\'') | (Mode::Backtick, '`') => {
                mode = Mode::Code
            }
            (Mode::Double { .. } | Mode::Single, '\n') => {
                return Err(TemplateError::UnterminatedString)
            }
            (Mode::Comment, '\n') => mode = Mode::Code,
            _ => {}
        }
        out.push(c);
        rest = &rest[len..];
    }
    match mode {
        Mode::Code | Mode::Comment => Ok(out),
        _ => Err(TemplateError::UnterminatedString),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VARS: TemplateVars<'static> = TemplateVars {
        stage: "beta",
        feature_key: "checkout-v2",
    };

    #[test]
    fn fills_placeholders_inside_matchers() {
        let q =
            r#"sum(rate(http_requests_total{feature="{{feature_key}}",stage="{{ stage }}"}[1m]))"#;
        assert_eq!(
            render(q, &VARS).unwrap(),
            r#"sum(rate(http_requests_total{feature="checkout-v2",stage="beta"}[1m]))"#
        );
        assert_eq!(placeholders(q).unwrap(), vec!["feature_key", "stage"]);
    }

    #[test]
    fn a_query_without_placeholders_is_unchanged() {
        let q = "sum(rate(x{code=~\"5..\"}[1m])) # a comment with {braces}\n/ 2";
        assert_eq!(render(q, &VARS).unwrap(), q);
    }

    #[test]
    fn escapes_quote_backslash_and_newline() {
        let vars = TemplateVars {
            stage: "a\"b\\c\nd}e",
            feature_key: "k",
        };
        assert_eq!(
            render(r#"x{stage="{{stage}}"}"#, &vars).unwrap(),
            r#"x{stage="a\"b\\c\nd}e"}"#
        );
    }

    #[test]
    fn regex_matchers_quote_metacharacters() {
        let vars = TemplateVars {
            stage: ".*",
            feature_key: "a|b",
        };
        assert_eq!(
            render(r#"x{stage=~"{{stage}}", f !~ "{{feature_key}}"}"#, &vars).unwrap(),
            r#"x{stage=~"\\.\\*", f !~ "a\\|b"}"#
        );
    }

    #[test]
    fn refuses_unknown_placeholders() {
        assert_eq!(
            check(r#"x{a="{{team}}"}"#),
            Err(TemplateError::UnknownPlaceholder("team".into()))
        );
        assert_eq!(
            render(r#"x{a="{{ Stage }}"}"#, &VARS),
            Err(TemplateError::UnknownPlaceholder("Stage".into()))
        );
    }

    #[test]
    fn refuses_placeholders_outside_double_quotes() {
        for q in [
            "x{stage={{stage}}}",
            "x{stage='{{stage}}'}",
            "x{stage=`{{stage}}`}",
            "x # {{stage}}",
            "{{feature_key}}",
        ] {
            assert!(
                matches!(check(q), Err(TemplateError::OutsideString(_))),
                "{q}"
            );
        }
    }

    #[test]
    fn refuses_unclosed_placeholders_and_strings() {
        assert_eq!(check(r#"x{a="{{stage"}"#), Err(TemplateError::Unclosed));
        assert_eq!(check(r#"x{a="b}"#), Err(TemplateError::UnterminatedString));
        assert_eq!(
            check("x{a=\"b\nc\"}"),
            Err(TemplateError::UnterminatedString)
        );
    }

    #[test]
    fn escaped_quotes_in_the_template_do_not_end_the_string() {
        let q = r#"x{a="q\"{{stage}}"}"#;
        assert_eq!(render(q, &VARS).unwrap(), r#"x{a="q\"beta"}"#);
    }

    /// Reads a Go/PromQL double-quoted string body back (the escapes `escape_string` emits).
    fn unquote(body: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' | '\n' => return None,
                '\\' => match chars.next()? {
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                    }
                    _ => return None,
                },
                c => out.push(c),
            }
        }
        Some(out)
    }

    const META: &str = "\\.+*?()|[]{}^$";

    proptest! {
        /// Whatever the value, the rendered query has exactly one string where the
        /// placeholder stood, and that string reads back as the value.
        #[test]
        fn values_stay_inside_their_string(stage in "\\PC*|[\"}{\\\\\n\r\t'`#,=~]{0,12}") {
            let vars = TemplateVars { stage: &stage, feature_key: "k" };
            let q = render(r#"x{stage="{{stage}}",f="k"}"#, &vars).unwrap();
            let body = q
                .strip_prefix("x{stage=\"")
                .and_then(|s| s.strip_suffix("\",f=\"k\"}"))
                .expect("prefix and suffix intact");
            prop_assert_eq!(unquote(body), Some(stage.clone()));
        }

        #[test]
        fn regex_values_match_only_themselves(v in "[a-z.*+?()|\\[\\]{}^$\\\\-]{0,12}") {
            let quoted = escape_regex(&v);
            // every metacharacter is preceded by a backslash
            let mut chars = quoted.chars();
            let mut read = String::new();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    read.push(chars.next().unwrap());
                } else {
                    prop_assert!(!META.contains(c), "unquoted metacharacter {}", c);
                    read.push(c);
                }
            }
            prop_assert_eq!(read, v);
        }
    }
}
