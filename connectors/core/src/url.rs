//! Source URLs: credentials in them are percent-encoded, and never shown.

/// Decodes `%XX` escapes (a password with `@` is written `%40`).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL's query (`a=1&b=x%20y&flag`) as decoded pairs; a key without `=`
/// means `true`.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, "true"));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The URL with its password replaced, for messages, logs and state files.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_hides_passwords() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(redact_url("mysql://u:secret@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact_url("not a url"), "<unparseable URL>");
    }
}
