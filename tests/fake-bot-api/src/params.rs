//! Bot API method parameters, from wherever the client put them: the query string, a JSON body,
//! an `application/x-www-form-urlencoded` body or a `multipart/form-data` body. Like Telegram,
//! the fake is liberal: numbers and booleans may arrive as strings, and JSON-typed parameters
//! (`allowed_updates`, `commands`, `scope`) as JSON text.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Uri, header};
use serde_json::Value;

/// The parameters of one call, by name (body values override query values).
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, Value>);

impl Params {
    pub(crate) fn parse(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Self, String> {
        let mut params = BTreeMap::new();
        if let Some(query) = uri.query() {
            params.extend(form_pairs(query.as_bytes()));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(params));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            let boundary =
                boundary(&content_type, headers).ok_or("multipart/form-data without a boundary")?;
            params.extend(multipart(body, &boundary)?);
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            params.extend(form_pairs(body));
        } else {
            // application/json, or no content type at all: JSON if it parses, else a form.
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => params.extend(map),
                Ok(_) => return Err("the JSON body is not an object".into()),
                Err(_) if !content_type.contains("json") => params.extend(form_pairs(body)),
                Err(error) => return Err(format!("can't parse JSON body: {error}")),
            }
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// An integer given as a JSON number or as a string.
    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, String> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) if s.trim().is_empty() => return Ok(None),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| format!("field \"{name}\" must be an integer"))
    }

    /// A string; numbers and booleans are turned into their text.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A boolean given as JSON `true`/`false`, or as "true"/"false"/"1"/"0" text.
    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, String> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value {
            Value::Bool(b) => Ok(Some(*b)),
            Value::Number(n) => Ok(Some(n.as_f64() != Some(0.0))),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" | "" => Ok(Some(false)),
                _ => Err(format!("field \"{name}\" must be a Boolean")),
            },
            _ => Err(format!("field \"{name}\" must be a Boolean")),
        }
    }

    /// A JSON-typed parameter: JSON as is, or a string holding JSON text.
    pub(crate) fn json(&self, name: &str) -> Result<Option<Value>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| format!("can't parse {name} JSON object")),
            Some(value) => Ok(Some(value.clone())),
        }
    }

    /// A list of strings (`allowed_updates`).
    pub(crate) fn string_list(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        let Some(value) = self.json(name)? else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|_| format!("can't parse {name}: expected an array of strings"))
    }
}

fn form_pairs(bytes: &[u8]) -> impl Iterator<Item = (String, Value)> + '_ {
    form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
}

fn boundary(lowercase_content_type: &str, headers: &HeaderMap) -> Option<String> {
    // The boundary is case-sensitive: find its position in the lowercased copy, cut the original.
    let original = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let start = lowercase_content_type.find("boundary=")? + "boundary=".len();
    let rest = original.get(start..)?;
    let value = rest.split(';').next()?.trim().trim_matches('"');
    (!value.is_empty()).then(|| value.to_owned())
}

/// The text fields of a `multipart/form-data` body (file parts are kept as lossy text too).
fn multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, Value)>, String> {
    let bad = |what: &str| format!("malformed multipart body: {what}");
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes()).ok_or_else(|| bad("no boundary"))?;
    let mut rest = &body[start + delimiter.len()..];
    let next_delimiter = format!("\r\n--{boundary}");
    let mut fields = Vec::new();
    while !rest.starts_with(b"--") {
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("no CRLF after a boundary"))?;
        let end = find(rest, next_delimiter.as_bytes()).ok_or_else(|| bad("unterminated part"))?;
        let part = &rest[..end];
        rest = &rest[end + next_delimiter.len()..];
        let split = find(part, b"\r\n\r\n").ok_or_else(|| bad("part without headers"))?;
        let head = String::from_utf8_lossy(&part[..split]);
        let content = String::from_utf8_lossy(&part[split + 4..]).into_owned();
        let name = head
            .lines()
            .filter(|line| {
                line.to_ascii_lowercase()
                    .starts_with("content-disposition:")
            })
            .find_map(disposition_name)
            .ok_or_else(|| bad("part without a name"))?;
        fields.push((name, Value::String(content)));
    }
    Ok(fields)
}

fn disposition_name(line: &str) -> Option<String> {
    line.split(';').find_map(|item| {
        let value = item.trim().strip_prefix("name=")?;
        Some(value.trim_matches('"').to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Decodes `%XX` escapes in a URL path segment (tokens may arrive as `123%3Aabc`).
pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn parse(uri: &str, content_type: Option<&str>, body: &[u8]) -> Params {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        Params::parse(&uri.parse().unwrap(), &headers, body).unwrap()
    }

    #[test]
    fn query_and_form_values_are_liberal_about_types() {
        let p = parse("/x?offset=-2&timeout=5&flag=true", None, b"");
        assert_eq!(p.int("offset").unwrap(), Some(-2));
        assert_eq!(p.int("timeout").unwrap(), Some(5));
        assert_eq!(p.boolean("flag").unwrap(), Some(true));
        let p = parse(
            "/x",
            Some("application/x-www-form-urlencoded"),
            b"chat_id=42&text=a+b%21",
        );
        assert_eq!(p.int("chat_id").unwrap(), Some(42));
        assert_eq!(p.string("text").as_deref(), Some("a b!"));
    }

    #[test]
    fn json_body_overrides_query_and_nested_json_text_is_parsed() {
        let body = br#"{"offset": 7, "allowed_updates": "[\"message\"]"}"#;
        let p = parse("/x?offset=1", Some("application/json"), body);
        assert_eq!(p.int("offset").unwrap(), Some(7));
        assert_eq!(
            p.string_list("allowed_updates").unwrap(),
            Some(vec!["message".to_owned()])
        );
        assert!(p.int("missing").unwrap().is_none());
    }

    #[test]
    fn multipart_fields_are_read() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nline1\r\nline2\r\n--XyZ--\r\n";
        let p = parse("/x", Some("multipart/form-data; boundary=XyZ"), body);
        assert_eq!(p.int("chat_id").unwrap(), Some(42));
        assert_eq!(p.string("text").as_deref(), Some("line1\r\nline2"));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("123%3Aabc"), "123:abc");
        assert_eq!(percent_decode("50%"), "50%");
    }
}
