//! Keeping secrets out of errors, logs and `Debug` output: a broker URL may carry a password or a token
//! in its userinfo (`scheme://user:secret@host`), and so may the messages of the client libraries that
//! echo it. Every backend shows URLs only through these functions.

/// `url` (or each URL of a comma-separated list) with its credentials hidden:
/// `amqp://user:secret@host/` → `amqp://user:<redacted>@host/`, `nats://token@host` →
/// `nats://<redacted>@host`. A URL without a scheme (`user:secret@host`) is redacted the same way.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

/// `text` with every secret of `url` replaced by `<redacted>`: for error messages of client libraries,
/// which may quote the URL they were given.
pub(crate) fn without_secrets(text: &str, url: &str) -> String {
    url.split(',')
        .filter_map(|u| userinfo(u).map(|(_, info)| secret_of(info)))
        .filter(|secret| !secret.is_empty())
        .fold(text.to_string(), |text, secret| text.replace(secret, "<redacted>"))
}

/// Where `url`'s userinfo starts, and the userinfo (what precedes the last `@` of the authority).
fn userinfo(url: &str) -> Option<(usize, &str)> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((start, &rest[..at]))
}

/// The secret part of a userinfo: after the first `:`, or all of it (a token).
fn secret_of(info: &str) -> &str {
    info.split_once(':').map_or(info, |(_, secret)| secret)
}

fn redact_one(url: &str) -> String {
    let Some((start, info)) = userinfo(url) else {
        return url.to_string();
    };
    let shown = match info.split_once(':') {
        Some((user, _)) => format!("{user}:<redacted>"),
        None => "<redacted>".to_string(),
    };
    format!("{}{shown}{}", &url[..start], &url[start + info.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        let cases = [
            (
                "amqp://app:s3cret@127.0.0.1:5672/%2f",
                "amqp://app:<redacted>@127.0.0.1:5672/%2f",
            ),
            ("app:s3cret@127.0.0.1:5672", "app:<redacted>@127.0.0.1:5672"),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:<redacted>@127.0.0.1:6379/0",
            ),
            ("nats://tok3n@g:4222/x@y", "nats://<redacted>@g:4222/x@y"),
            (
                "nats://a:p1@h:4222,nats://b:p2@g:4222",
                "nats://a:<redacted>@h:4222,nats://b:<redacted>@g:4222",
            ),
            ("amqp://localhost", "amqp://localhost"),
            ("localhost", "localhost"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn messages_lose_the_secrets_of_their_url() {
        let url = "redis://alice:s3cretpw@127.0.0.1:1/";
        let text = format!("failed to connect to {url}: refused (password s3cretpw)");
        let clean = without_secrets(&text, url);
        assert!(!clean.contains("s3cretpw"), "{clean}");
        assert!(clean.contains("alice"), "{clean}");
        assert_eq!(without_secrets("no url here", "redis://127.0.0.1/"), "no url here");
    }
}
