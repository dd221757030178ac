//! Credentials out of printed settings: the one redaction helper of sessionkit.
//!
//! Settings such as a Redis URL can carry a password; everything that prints
//! one (errors, `Debug`, logs) passes it through [`redact_credentials`].

use std::borrow::Cow;
use std::ops::Range;

const MASK: &str = "***";

/// Query parameters whose values are secrets (compared in ASCII lowercase).
const SECRET_PARAMS: &[&str] = &[
    "pass",
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "auth",
    "key",
    "api_key",
    "apikey",
    "access_token",
    "sslpassword",
];

/// `text` with every credential it carries replaced by `***`. Borrows when
/// there is nothing to hide.
///
/// Store settings such as a Redis URL can carry a password
/// (`redis://user:password@host`, `unix:///redis.sock?pass=…`). Every place
/// of sessionkit that prints such a setting — an error message, a `Debug`
/// impl, a log line — passes it through this function first, so the password
/// never reaches a log, a terminal or a bug report. The setting's value itself
/// is never changed, only what is printed. Store implementations should do
/// the same; [`Error::invalid_config`](crate::Error::invalid_config) applies
/// it to its detail as a safety net.
///
/// What is replaced by `***`:
///
/// - the user-info of a URL, user name included (`scheme://user:password@host`
///   → `scheme://***@host`), also without a scheme (`user:password@host:11211`)
///   and in comma-separated lists;
/// - the value of a query parameter that commonly holds a secret (`pass`,
///   `password`, `passwd`, `pwd`, `secret`, `token`, `auth`, `key`, `api_key`,
///   `apikey`, `access_token`, `sslpassword`, in any case).
///
/// What is *not* guaranteed: a secret that is not written in one of these
/// forms (a bare password in a free-text setting) cannot be recognised.
/// Settings that are secrets as a whole are never printed at all (`Debug` of a
/// signing key shows its length only). When text is ambiguous (a `,` or an `@`
/// inside a password), more is redacted, never less.
///
/// # Security
///
/// Credentials must not be written to logs
/// ([OWASP Logging Cheat Sheet: data to exclude](https://cheatsheetseries.owasp.org/cheatsheets/Logging_Cheat_Sheet.html#data-to-exclude)).
///
/// ```
/// use sessionkit_core::redact_credentials;
///
/// assert_eq!(redact_credentials("redis://app:hunter2@10.0.0.1:6379/2"), "redis://***@10.0.0.1:6379/2");
/// assert_eq!(
///     redact_credentials("redis://:a@h1:7000,redis://:b@h2:7000"),
///     "redis://***@h1:7000,redis://***@h2:7000",
/// );
/// assert_eq!(redact_credentials("unix:///run/redis.sock?db=1&pass=hunter2"), "unix:///run/redis.sock?db=1&pass=***");
/// assert_eq!(redact_credentials("user:hunter2@cache:11211"), "***@cache:11211");
/// assert!(matches!(redact_credentials("redis://127.0.0.1:6379"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn redact_credentials(text: &str) -> Cow<'_, str> {
    let mut spans = user_info_spans(text);
    spans.extend(secret_param_spans(text));
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_by_key(|s| s.start);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for span in spans {
        if span.end <= copied {
            continue;
        }
        let start = span.start.max(copied);
        out.push_str(&text[copied..start]);
        if start == span.start {
            out.push_str(MASK);
        }
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Characters that end a token in free text: the user-info of a URL never
/// reaches back over them.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// The byte ranges of the user-info before each `@`.
fn user_info_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = Vec::new();
    let mut prev_at: Option<usize> = None;
    for (at, _) in text.match_indices('@') {
        let token_start = text[..at].rfind(is_delimiter).map_or(0, |i| {
            i + text[i..].chars().next().map_or(1, char::len_utf8)
        });
        let mut start = match text[token_start..at].rfind("://") {
            Some(i) => token_start + i + 3,
            None => token_start,
        };
        if let Some(prev) = prev_at.filter(|&p| p >= start) {
            // The previous `@` ended a user-info; a host follows it, up to
            // the `,` that starts the next entry of a list. Without such a
            // `,`, this `@` is inside the same user-info: widen it.
            match text[prev + 1..at].find(',') {
                Some(comma) => start = prev + 1 + comma + 1,
                None => {
                    if let Some(last) = spans.last_mut() {
                        last.end = at;
                    }
                    prev_at = Some(at);
                    continue;
                }
            }
        }
        if start < at {
            spans.push(start..at);
        }
        prev_at = Some(at);
    }
    spans
}

/// The byte ranges of the values of secret query parameters.
fn secret_param_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    for (sep, _) in text.match_indices(['?', '&']) {
        let rest = &text[sep + 1..];
        let Some(eq) = rest.find('=') else { continue };
        let name = &rest[..eq];
        if name.contains(['&', '?', ',', '#']) || name.contains(is_delimiter) {
            continue;
        }
        if !SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            continue;
        }
        let value_start = sep + 1 + eq + 1;
        let value_len = text[value_start..]
            .find(|c: char| matches!(c, '&' | '#' | ',') || is_delimiter(c))
            .unwrap_or(text.len() - value_start);
        if value_len > 0 {
            spans.push(value_start..value_start + value_len);
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::redact_credentials as r;

    #[test]
    fn user_info_is_replaced_in_every_url_form() {
        assert_eq!(r("redis://:pw@h:6379"), "redis://***@h:6379");
        assert_eq!(r("redis://user:pw@h"), "redis://***@h");
        assert_eq!(r("redis://pw@h"), "redis://***@h");
        assert_eq!(r("rediss://u:pw@[::1]:6380/0"), "rediss://***@[::1]:6380/0");
        assert_eq!(
            r("postgres://app:pw@db.internal/sessions?sslmode=require"),
            "postgres://***@db.internal/sessions?sslmode=require"
        );
        assert_eq!(r("redis://@h"), "redis://@h");
    }

    #[test]
    fn lists_keep_every_host() {
        assert_eq!(
            r("redis://:a@h1:1,redis://b:c@h2:2, redis://h3:3"),
            "redis://***@h1:1,redis://***@h2:2, redis://h3:3"
        );
        assert_eq!(r("u:p@h:1,u2:p2@h3:3:2"), "***@h:1,***@h3:3:2");
        // Without a scheme, where a user-info starts is a guess: the first
        // `,` after the previous host, so that a `,` in a password never
        // shows part of it. An entry without credentials before it is hidden
        // too.
        assert_eq!(r("u:p@h:1,h2:2,u2:p2@h3:3:2"), "***@h:1,***@h3:3:2");
    }

    #[test]
    fn awkward_passwords_are_hidden_whole() {
        // A `,` or an `@` inside the password: more is hidden, never less.
        assert_eq!(r("redis://:pa,ss@h"), "redis://***@h");
        assert_eq!(r("redis://:p@ss@h"), "redis://***@h");
        assert_eq!(r("redis//:pw@h"), "***@h");
        assert_eq!(
            r("got \"redis://:pw@h\", expected"),
            "got \"redis://***@h\", expected"
        );
    }

    #[test]
    fn secret_query_parameters_are_replaced() {
        assert_eq!(
            r("unix:///s.sock?user=app&pass=pw&db=1"),
            "unix:///s.sock?user=app&pass=***&db=1"
        );
        assert_eq!(r("x://h/?PASSWORD=pw#f"), "x://h/?PASSWORD=***#f");
        assert_eq!(r("x://h/?passport=ok"), "x://h/?passport=ok");
        assert_eq!(r("x://h/?pass="), "x://h/?pass=");
        assert_eq!(r("x://u:pw@h/?pass=pw"), "x://***@h/?pass=***");
    }

    #[test]
    fn text_without_credentials_is_borrowed() {
        for text in [
            "",
            "redis://127.0.0.1:6379/2",
            "127.0.0.1:11211:2,[::1]:11211",
            "a@",
            "@",
            "müll@",
        ] {
            let out = r(text);
            if !text.contains('@') || text.starts_with('@') {
                assert!(matches!(out, std::borrow::Cow::Borrowed(_)), "{text}");
            }
            assert!(out.len() <= text.len() + 3, "{text}");
        }
        assert_eq!(r("müll@host"), "***@host");
        assert_eq!(r("über user:pw@h"), "über ***@h");
    }
}
