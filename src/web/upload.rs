//! The request forms of `POST /api/bots/{id}/messages`:
//!
//! - JSON (`application/json`): `{"to", "text"}` for a text; for a file
//!   `{"to", "file": {"base64", "mimetype"?, "file_name"?}, "caption"?,
//!   "as"?}`. The JSON body is at most [`MAX_JSON`] bytes (a file of about
//!   12 MiB in base64): larger files go as multipart.
//! - `multipart/form-data`: fields `to`, `file` (the file part; its
//!   `filename` and `Content-Type` are the defaults of `file_name` and
//!   `mimetype`), `caption`, `as`, `mimetype`, `file_name`, `reply_to`,
//!   `typing`, or `text` for a text without a file. The body is at most the
//!   file size limit plus 1 MiB.
//!
//! A file is at most [`attach::DEFAULT_MAX`] bytes (413 beyond); with a
//! file, `text` is refused (the caption is `caption`); `caption` and `as`
//! without a file are refused (400).

use crate::error::Error;
use crate::messaging::attach;
use crate::messaging::outbox::Outgoing;
use crate::messaging::send_body::{self, Form};
use axum::http::{header, HeaderMap, StatusCode};

/// Largest JSON body of a send.
pub const MAX_JSON: usize = 16 << 20;
/// Largest body of a send (multipart: the file and its fields).
pub const MAX_BODY: usize = attach::DEFAULT_MAX as usize + (1 << 20);

/// Why a send's body is refused: its status (400 or 413) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub StatusCode, pub String);

fn bad(msg: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, msg.into())
}

impl From<Error> for Refused {
    fn from(e: Error) -> Refused {
        bad(e.to_string())
    }
}

const FORMS: &str = "send JSON (content-type: application/json): {\"to\": \"4915112345678\", \"text\": \"...\"} \
     or {\"to\": ..., \"file\": {\"base64\": ...}, \"caption\": ...}, or multipart/form-data with the fields to, file, caption, as";

/// The message a send's body asks for, its file's bytes apart (the
/// payload of the operation). The idempotency key is the caller's.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<(Outgoing, Vec<u8>), Refused> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (msg, bytes) = if mime == "multipart/form-data" {
        multipart_send(ctype, body)?
    } else if mime == "application/json" || mime.ends_with("+json") {
        if body.len() > MAX_JSON {
            return Err(Refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a JSON send body is at most {MAX_JSON} bytes (a file of about 12 MiB in base64): \
                     send larger files as multipart/form-data"
                ),
            ));
        }
        json_send(body)?
    } else {
        return Err(bad(format!("the body must be JSON or multipart: {FORMS}")));
    };
    attach::check_size(bytes.len() as u64, attach::DEFAULT_MAX)
        .map_err(|e| Refused(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    Ok((msg, bytes))
}

fn json_send(body: &[u8]) -> Result<(Outgoing, Vec<u8>), Refused> {
    let (msg, bytes) = send_body::parse_json(body).map_err(|e| bad(format!("{e}: {FORMS}")))?;
    Ok((msg, bytes))
}

fn build(f: Form) -> Result<(Outgoing, Vec<u8>), Refused> {
    send_body::build(f).map_err(bad)
}

/// One part of a multipart body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// The `boundary` parameter of a multipart content type.
fn boundary(ctype: &str) -> Option<String> {
    ctype
        .split(';')
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_owned())
        })
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A `name="value"` parameter of a Content-Disposition header.
fn param(header: &str, key: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let pat = format!("{key}=");
    let mut at = 0;
    while let Some(i) = lower[at..].find(&pat).map(|i| i + at) {
        // A whole parameter name (not `filename` when looking for `name`).
        let before = lower[..i].trim_end().chars().last();
        at = i + pat.len();
        if !matches!(before, Some(';')) {
            continue;
        }
        let rest = &header[at..];
        return Some(if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next().unwrap_or("").to_owned()
        } else {
            rest.split(';').next().unwrap_or("").trim().to_owned()
        });
    }
    None
}

/// Splits a `multipart/form-data` body into its parts.
pub fn parts<'a>(ctype: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, Refused> {
    let b = boundary(ctype).ok_or_else(|| bad("multipart/form-data without a boundary"))?;
    let delim = format!("--{b}");
    let broken = || bad("the multipart body is malformed");
    let mut at = find(body, delim.as_bytes(), 0).ok_or_else(broken)? + delim.len();
    let close = format!("\r\n--{b}");
    let mut out = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(out);
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(broken());
        }
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or_else(broken)?;
        let head = std::str::from_utf8(&body[at..head_end])
            .map_err(|_| bad("a multipart part's headers are not UTF-8"))?;
        let (mut disposition, mut content_type) = (None, None);
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                return Err(broken());
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                disposition = Some(v.trim().to_owned());
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_owned());
            }
        }
        let disposition =
            disposition.ok_or_else(|| bad("a multipart part has no Content-Disposition"))?;
        let name =
            param(&disposition, "name").ok_or_else(|| bad("a multipart part has no field name"))?;
        let data_start = head_end + 4;
        let end = find(body, close.as_bytes(), data_start).ok_or_else(broken)?;
        out.push(Part {
            name,
            filename: param(&disposition, "filename"),
            content_type,
            data: &body[data_start..end],
        });
        at = end + close.len();
    }
}

fn multipart_send(ctype: &str, body: &[u8]) -> Result<(Outgoing, Vec<u8>), Refused> {
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    let mut file = None;
    for p in parts(ctype, body)? {
        if p.name == "file" {
            if file.is_some() {
                return Err(bad(
                    "one file per message: the field \"file\" is given twice",
                ));
            }
            file = Some(p);
            continue;
        }
        const KNOWN: [&str; 8] = [
            "to",
            "text",
            "caption",
            "as",
            "mimetype",
            "file_name",
            "reply_to",
            "typing",
        ];
        if !KNOWN.contains(&p.name.as_str()) {
            return Err(bad(format!(
                "unknown field {:?}: the fields are file, {}",
                p.name.chars().take(40).collect::<String>(),
                KNOWN.join(", ")
            )));
        }
        let v = String::from_utf8(p.data.to_vec())
            .map_err(|_| bad(format!("the field {:?} is not UTF-8", p.name)))?;
        if fields.insert(p.name.clone(), v).is_some() {
            return Err(bad(format!("the field {:?} is given twice", p.name)));
        }
    }
    let to = fields
        .remove("to")
        .ok_or_else(|| bad("the field \"to\" is missing"))?;
    let typing = match fields.remove("typing").as_deref() {
        None | Some("false") | Some("0") | Some("") => false,
        Some("true") | Some("1") | Some("on") => true,
        Some(v) => return Err(bad(format!("\"typing\" must be true or false, got {v:?}"))),
    };
    let file = match file {
        None => {
            if fields.contains_key("mimetype") || fields.contains_key("file_name") {
                return Err(bad("\"mimetype\" and \"file_name\" need a file"));
            }
            None
        }
        Some(p) => {
            let mimetype = fields.remove("mimetype").or_else(|| {
                p.content_type
                    .filter(|t| !t.eq_ignore_ascii_case("application/octet-stream"))
            });
            let file_name = fields
                .remove("file_name")
                .or(p.filename)
                .filter(|n| !n.is_empty());
            Some((mimetype, file_name, p.data.to_vec()))
        }
    };
    build(Form {
        to,
        text: fields.remove("text"),
        caption: fields.remove("caption"),
        kind: fields.remove("as"),
        reply_to: fields.remove("reply_to"),
        typing,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    fn headers(ctype: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ctype.parse().unwrap());
        h
    }

    fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (HeaderMap, Vec<u8>) {
        let b = "XyZ123";
        let mut body = Vec::new();
        for (name, filename, data) in fields {
            body.extend(
                format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
            );
            if let Some(f) = filename {
                body.extend(
                    format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").bytes(),
                );
            }
            body.extend(b"\r\n\r\n");
            body.extend(*data);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{b}--\r\n").bytes());
        (headers(&format!("multipart/form-data; boundary={b}")), body)
    }

    /// A multipart send: the file part's bytes (CRLFs and boundary-like
    /// text inside kept), its file name, caption and kind.
    #[test]
    fn multipart_form() {
        let data: &[u8] = b"%PDF-1.4\r\n--XyZ12 not the end\r\n\r\n";
        let (h, body) = multipart(&[
            ("to", None, b"4918200000001"),
            ("caption", None, b"the invoice"),
            ("as", None, b"document"),
            ("file", Some("inv.pdf"), data),
        ]);
        let (msg, bytes) = parse(&h, &body).unwrap();
        assert_eq!(bytes, data);
        assert_eq!(msg.to, "4918200000001");
        assert_eq!(msg.text, "the invoice");
        let f = msg.file.unwrap();
        assert_eq!(f.kind, Some(attach::MediaKind::Document));
        assert_eq!(f.file_name.as_deref(), Some("inv.pdf"));
        assert_eq!(f.mimetype, None, "octet-stream is left to sniffing");
        // A text by multipart.
        let (h, body) = multipart(&[("to", None, b"4918200000001"), ("text", None, b"hi")]);
        let (msg, bytes) = parse(&h, &body).unwrap();
        assert_eq!((msg.text.as_str(), msg.file, bytes.len()), ("hi", None, 0));
    }

    /// Refusals: text with a file, caption without, unknown fields, a bad
    /// kind, a broken body, bad base64 (400); a JSON body over its limit
    /// (413); neither JSON nor multipart (400).
    #[test]
    fn refusals() {
        let (h, body) = multipart(&[
            ("to", None, b"4918200000001"),
            ("text", None, b"x"),
            ("file", Some("a"), b"abc"),
        ]);
        assert!(parse(&h, &body).unwrap_err().1.contains("caption"));
        let (h, body) = multipart(&[("to", None, b"1"), ("caption", None, b"x")]);
        assert!(parse(&h, &body).unwrap_err().1.contains("need a file"));
        let (h, body) = multipart(&[("to", None, b"1"), ("path", None, b"/etc/passwd")]);
        assert!(parse(&h, &body).unwrap_err().1.contains("unknown field"));
        let (h, body) = multipart(&[
            ("to", None, b"1"),
            ("as", None, b"gif"),
            ("file", Some("a"), b"x"),
        ]);
        assert!(parse(&h, &body)
            .unwrap_err()
            .1
            .contains("unknown media kind"));
        let (h, mut body) = multipart(&[("to", None, b"1"), ("file", Some("a"), b"x")]);
        body.truncate(body.len() - 12);
        assert!(parse(&h, &body).unwrap_err().1.contains("malformed"));
        let j = headers("application/json");
        let e = parse(&j, br#"{"to":"4918200000001","file":{"base64":"***"}}"#).unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.contains("base64 is invalid"), "{e:?}");
        let big = vec![b' '; MAX_JSON + 1];
        assert_eq!(
            parse(&j, &big).unwrap_err().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let e = parse(&headers("text/plain"), b"hi").unwrap_err();
        assert!(e.1.contains("multipart"), "{e:?}");
        let (msg, bytes) = parse(
            &j,
            br#"{"to":"4918200000001","file":{"base64":"aGk=","file_name":"a.txt"},"caption":"c","as":"document"}"#,
        )
        .unwrap();
        assert_eq!(bytes, b"hi");
        assert_eq!(msg.text, "c");
        assert_eq!(msg.file.unwrap().file_name.as_deref(), Some("a.txt"));
    }

    #[test]
    fn disposition_parameters() {
        let d = "form-data; name=\"file\"; filename=\"a b.pdf\"";
        assert_eq!(param(d, "name").as_deref(), Some("file"));
        assert_eq!(param(d, "filename").as_deref(), Some("a b.pdf"));
        let d = "form-data; filename=\"x\"; name=to";
        assert_eq!(param(d, "name").as_deref(), Some("to"));
        assert_eq!(
            boundary("multipart/form-data; boundary=\"ab c\"").as_deref(),
            Some("ab c")
        );
    }

    /// Pieces a hostile multipart body is spliced from: boundaries (whole,
    /// cut short, closing), part headers (good, odd, unterminated), the
    /// field names the parser knows, and stray CRLFs.
    const PIECES: &[&str] = &[
        "--XyZ\r\n",
        "--XyZ--\r\n",
        "--XyZ",
        "--Xy",
        "\r\n",
        "\r\n\r\n",
        "Content-Disposition: form-data; name=\"",
        "Content-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n",
        "Content-Disposition: form-data; name=to\r\n\r\n4915112345678\r\n",
        "Content-Disposition: attachment; filename*=UTF-8''%FF\r\n",
        "Content-Type: image/png\r\n",
        "Content-Type: \r\n",
        "name=\"as\"\r\n\r\nsticker",
        "name=\"typing\"\r\n\r\nmaybe",
        "\"\"\";;;==",
        "%PDF-1.4",
        "\u{FEFF}\u{1F600}",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// No body panics the parser: arbitrary bytes, or pieces of
        /// multipart structure in any order, under a multipart (with or
        /// without a boundary, or an odd one) or JSON content type, give a
        /// message or a refusal.
        #[test]
        fn any_body_gets_a_message_or_a_refusal(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
                ],
                0..40,
            ),
            ctype in proptest::prop_oneof![
                proptest::strategy::Just("multipart/form-data; boundary=XyZ".to_string()),
                proptest::strategy::Just("multipart/form-data; boundary=\"XyZ\"".to_string()),
                proptest::strategy::Just("multipart/form-data".to_string()),
                proptest::strategy::Just("application/json".to_string()),
                "multipart/form-data; boundary=[ -~]{0,80}",
            ],
        ) {
            let body: Vec<u8> = pieces.concat();
            let _ = parse(&headers(&ctype), &body);
        }
    }
}
