//! The OpenAPI document (`/api/openapi.json`, `wavault openapi`) against
//! the real answers: every endpoint it lists is called (success and error
//! answers), and each answer's status, content type and body must be what
//! the document says; the webhook's payload and answer too.
//!
//! Why it exists: clients generate code from the document; a field the
//! server adds, renames or makes nullable without the document saying so
//! breaks them. The checker below knows the part of JSON Schema 2020-12
//! the document uses (it refuses any other keyword, so the document cannot
//! quietly outgrow it).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use wavault::messaging::hook::Target;
use wavault::runner::{Runner, RunnerEvent};

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{new_vault, next_event, synth_paired};

const DEADLINE: Duration = Duration::from_secs(30);

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let ptr = r
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("non-local $ref {r}"));
    doc.pointer(ptr)
        .unwrap_or_else(|| panic!("$ref {r} names nothing in the document"))
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other} in the document"),
    }
}

/// The property names `schema` evaluates on an object (its `properties`,
/// and those of its `allOf` parts): what `unevaluatedProperties` allows.
fn evaluated(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        evaluated(doc, resolve(doc, r), out);
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        out.extend(p.keys().cloned());
    }
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        evaluated(doc, s, out);
    }
}

/// Checks `v` against `schema`; the problems found, each with its place.
pub(crate) fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    const KNOWN: &[&str] = &[
        "$ref",
        "type",
        "const",
        "enum",
        "properties",
        "required",
        "additionalProperties",
        "unevaluatedProperties",
        "items",
        "allOf",
        "anyOf",
        "oneOf",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "maxItems",
        "pattern",
        "description",
        "examples",
    ];
    let obj = schema
        .as_object()
        .unwrap_or_else(|| panic!("schema at {at} is not an object"));
    for k in obj.keys() {
        assert!(
            KNOWN.contains(&k.as_str()),
            "the checker does not know `{k}` (at {at})"
        );
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        check(doc, resolve(doc, r), v, at, errs);
    }
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => panic!("bad type at {at}"),
        };
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(c) = obj.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} is none of {e:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if obj
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errs.push(format!("{at}: {n} is below the minimum"));
        }
        if obj
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errs.push(format!("{at}: {n} is above the maximum"));
        }
    }
    if let Some(s) = v.as_str() {
        if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
            let re = regex::Regex::new(p).unwrap_or_else(|e| panic!("pattern at {at}: {e}"));
            if !re.is_match(s) {
                errs.push(format!("{at}: {s:?} does not match {p}"));
            }
        }
        let n = s.chars().count() as u64;
        if obj
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            errs.push(format!("{at}: shorter than minLength"));
        }
        if obj
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            errs.push(format!("{at}: longer than maxLength"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        for r in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                errs.push(format!("{at}: required `{r}` is missing"));
            }
        }
        for (k, val) in o {
            if let Some(s) = props.and_then(|p| p.get(k)) {
                check(doc, s, val, &format!("{at}.{k}"), errs);
            }
        }
        let closed = obj.get("additionalProperties") == Some(&Value::Bool(false));
        let unevaluated = obj.get("unevaluatedProperties") == Some(&Value::Bool(false));
        if closed || unevaluated {
            let mut allowed = BTreeSet::new();
            if unevaluated {
                evaluated(doc, schema, &mut allowed);
            } else {
                allowed.extend(props.into_iter().flat_map(|p| p.keys().cloned()));
            }
            for k in o.keys().filter(|k| !allowed.contains(*k)) {
                errs.push(format!("{at}: `{k}` is not in the document"));
            }
        }
    }
    if let Some(a) = v.as_array() {
        if obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| a.len() as u64 > m)
        {
            errs.push(format!("{at}: more than maxItems"));
        }
        if let Some(items) = obj.get("items") {
            for (i, x) in a.iter().enumerate() {
                check(doc, items, x, &format!("{at}[{i}]"), errs);
            }
        }
    }
    for s in obj
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, s, v, at, errs);
    }
    let passing = |list: &Vec<Value>| {
        list.iter()
            .filter(|s| {
                let mut e = Vec::new();
                check(doc, s, v, at, &mut e);
                e.is_empty()
            })
            .count()
    };
    if let Some(any) = obj.get("anyOf").and_then(Value::as_array) {
        if passing(any) == 0 {
            errs.push(format!("{at}: {v} matches none of anyOf"));
        }
    }
    if let Some(one) = obj.get("oneOf").and_then(Value::as_array) {
        let n = passing(one);
        if n != 1 {
            errs.push(format!(
                "{at}: {v} matches {n} of oneOf (must be exactly 1)"
            ));
        }
    }
}

/// The document's answer for (`path` template, `method`, `status`): the
/// response object (`$ref`s followed), or a failure naming what is missing.
fn documented<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let responses = &op["responses"];
    let class = format!("{}XX", status / 100);
    let r = [status.to_string(), class, "default".into()]
        .iter()
        .find_map(|k| responses.get(k))
        .unwrap_or_else(|| {
            panic!("{method} {path} answered {status}, which the document does not list")
        });
    match r.get("$ref").and_then(Value::as_str) {
        Some(x) => resolve(doc, x),
        None => r,
    }
}

/// (method, path template, concrete path, token, body): one request.
type Case = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    Option<(&'static str, String)>,
);

/// One real answer.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// Checks an answer of `method path` (the document's path template) against the document.
fn conforms(doc: &Value, template: &str, method: &str, a: &Answer) {
    let resp = documented(doc, template, method, a.status);
    let what = format!("{method} {template} -> {}", a.status);
    let Some(content) = resp.get("content").and_then(Value::as_object) else {
        assert!(
            a.body.is_empty(),
            "{what}: the document lists no body, got {:?}",
            a.body
        );
        return;
    };
    let ct = a
        .content_type
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no content type"));
    let media = ct.split(';').next().unwrap().trim();
    let schema = &content
        .get(media)
        .or_else(|| content.get("*/*"))
        .unwrap_or_else(|| {
            panic!(
                "{what}: content type {media} is not in the document ({:?})",
                content.keys()
            )
        })["schema"];
    let value = if media == "application/json" {
        serde_json::from_str(&a.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", a.body))
    } else {
        Value::String(a.body.clone())
    };
    let mut errs = Vec::new();
    check(doc, schema, &value, "body", &mut errs);
    assert!(
        errs.is_empty(),
        "{what} does not match the document:\n{}\n{}",
        errs.join("\n"),
        a.body
    );
}

/// A request with optional token, JSON body and extra headers.
async fn call(
    method: &'static str,
    url: String,
    token: Option<String>,
    body: Option<(&'static str, String)>,
) -> Answer {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (_, b) => {
                let mut r = agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                let (ct, b) = b.unwrap_or(("application/json", String::new()));
                r.header("content-type", ct).send(b)
            }
        }
        .expect("request");
        Answer {
            status: resp.status().as_u16(),
            content_type: resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_document_says() {
    let doc: Value = serde_json::from_str(&wavault::web::openapi()).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["support", "fresh"]);
    let phone = synth_paired(&vault, "support", 4_915_100_040_001).await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    // Every kind of event, so every webhook of the document is called.
    c.hooks.events =
        wavault::messaging::events::EventKinds::parse("message,receipt,status,decrypt_failure")
            .unwrap();
    c.status_debounce = Duration::from_millis(200);
    let runner = Runner::start(vault.clone(), c).unwrap();
    let mut rx = runner.subscribe();
    wait_connected(&runner, "support").await;
    wait_prekeys(&peer, &phone).await;
    next_event(&mut rx, LOGIN_DEADLINE, "fresh's QR code", |e| match e {
        RunnerEvent::Qr { bot, .. } if bot.as_str() == "fresh" => Some(()),
        _ => None,
    })
    .await;
    let (base, token) = crate::runner_tests::web_with_token(&runner, &vault, Duration::ZERO).await;
    let token = Some(token);
    let alice = peer.contact("4917400000001");

    // (method, template, concrete path, token, body): what each endpoint is asked.
    let json_body = |v: Value| Some(("application/json", v.to_string()));
    let cases: Vec<Case> = vec![
        ("get", "/api/bots", "/api/bots".into(), token.clone(), None),
        ("get", "/api/bots", "/api/bots".into(), None, None),
        (
            "get",
            "/api/bots/{id}",
            "/api/bots/support".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/bots/{id}",
            "/api/bots/fresh".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/bots/{id}",
            "/api/bots/nosuch".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/dashboard",
            "/api/dashboard".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/bots/{id}/qr.svg",
            "/api/bots/fresh/qr.svg".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/bots/{id}/qr.svg",
            "/api/bots/support/qr.svg".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/openapi.json",
            "/api/openapi.json".into(),
            None,
            None,
        ),
        ("get", "/metrics", "/metrics".into(), token.clone(), None),
        ("get", "/metrics", "/metrics".into(), None, None),
        ("get", "/healthz", "/healthz".into(), None, None),
        ("get", "/readyz", "/readyz".into(), None, None),
        (
            "get",
            "/readyz",
            "/readyz".into(),
            Some("wrong".into()),
            None,
        ),
        ("get", "/", "/".into(), token.clone(), None),
        ("get", "/", "/".into(), None, None),
        (
            "get",
            "/bots/{id}",
            "/bots/support".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/bots/{id}",
            "/bots/nosuch".into(),
            token.clone(),
            None,
        ),
        (
            "post",
            "/login",
            "/login".into(),
            None,
            Some(("application/x-www-form-urlencoded", "token=wrong".into())),
        ),
        (
            "post",
            "/login",
            "/login".into(),
            None,
            Some((
                "application/x-www-form-urlencoded",
                format!("token={}", token.clone().unwrap()),
            )),
        ),
        (
            "get",
            "/assets/{name}",
            "/assets/dashboard.js".into(),
            None,
            None,
        ),
        (
            "get",
            "/assets/{name}",
            "/assets/dashboard.css".into(),
            None,
            None,
        ),
        ("get", "/assets/{name}", "/assets/nosuch".into(), None, None),
        (
            "post",
            "/api/bots/{id}/messages",
            "/api/bots/support/messages".into(),
            token.clone(),
            json_body(json!({"to": alice.phone(), "text": "via api"})),
        ),
        (
            "post",
            "/api/bots/{id}/messages",
            "/api/bots/support/messages".into(),
            token.clone(),
            json_body(json!({"to": "12", "text": "x"})),
        ),
        (
            "post",
            "/api/bots/{id}/messages",
            "/api/bots/support/messages".into(),
            token.clone(),
            Some(("application/json", "not json".into())),
        ),
        (
            "post",
            "/api/bots/{id}/messages",
            "/api/bots/fresh/messages".into(),
            token.clone(),
            json_body(json!({"to": alice.phone(), "text": "x"})),
        ),
        (
            "post",
            "/api/bots/{id}/messages",
            "/api/bots/nosuch/messages".into(),
            token.clone(),
            json_body(json!({"to": alice.phone(), "text": "x"})),
        ),
        (
            "post",
            "/api/bots/{id}/messages",
            "/api/bots/support/messages".into(),
            None,
            json_body(json!({"to": alice.phone(), "text": "x"})),
        ),
        (
            "get",
            "/api/bots/{id}/media/{message_id}",
            "/api/bots/support/media/3EB0AAAA".into(),
            token.clone(),
            None,
        ),
        (
            "get",
            "/api/bots/{id}/media/{message_id}",
            "/api/bots/support/media/3EB0AAAA".into(),
            None,
            None,
        ),
    ];
    let mut seen = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for (method, template, path, tok, body) in cases {
        let m = if method == "get" { "GET" } else { "POST" };
        let a = call(m, format!("{base}{path}"), tok, body).await;
        conforms(&doc, template, method, &a);
        seen.insert((template.to_owned(), method.to_owned()));
        statuses.insert((template.to_owned(), a.status));
        if template == "/api/openapi.json" {
            assert_eq!(
                a.body,
                wavault::web::openapi(),
                "the served document is `wavault openapi`'s"
            );
        }
    }
    // Each case got what it was there for (not only a 401 everywhere).
    for (t, s) in [
        ("/api/bots", 200),
        ("/api/bots", 401),
        ("/api/bots/{id}", 404),
        ("/api/bots/{id}/qr.svg", 200),
        ("/api/bots/{id}/qr.svg", 404),
        ("/api/bots/{id}/messages", 200),
        ("/api/bots/{id}/messages", 400),
        ("/api/bots/{id}/messages", 404),
        ("/api/bots/{id}/messages", 503),
        ("/api/bots/{id}/media/{message_id}", 404),
        ("/readyz", 200),
        ("/readyz", 401),
        ("/login", 303),
        ("/login", 401),
        ("/bots/{id}", 200),
        ("/bots/{id}", 404),
    ] {
        assert!(
            statuses.contains(&(t.to_owned(), s)),
            "{t} never answered {s}: {statuses:?}"
        );
    }
    // Every operation of the document was called.
    for (p, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            assert!(
                seen.contains(&(p.clone(), m.clone())),
                "{m} {p} is documented but not tested"
            );
        }
    }

    // The webhooks: every call the hook got (message, receipts of the
    // bot's messages, the settled status) is the documented payload of its
    // kind, with the documented headers; decrypt_failure as its producer
    // makes it (the e2e events tests make a real one).
    alice.send_text(&phone, "hello").await.unwrap();
    let kinds = |s: &crate::hook_server::Seen| {
        s.accepted
            .iter()
            .filter_map(|v| v["event"].as_str().map(str::to_owned))
            .collect::<BTreeSet<String>>()
    };
    let got = hook
        .wait("a message, a receipt and a status event", DEADLINE, |s| {
            ["message", "receipt", "status"]
                .iter()
                .all(|k| kinds(s).contains(*k))
        })
        .await;
    let webhooks = doc["webhooks"].as_object().unwrap();
    let param = |p: &Value| match p.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(&doc, r).clone(),
        None => p.clone(),
    };
    let check_call = |body: &Value, headers: Option<&axum::http::HeaderMap>| {
        let kind = body["event"].as_str().unwrap_or("message");
        let post = &webhooks
            .get(kind)
            .unwrap_or_else(|| panic!("webhook {kind} is not in the document"))["post"];
        let schema = &post["requestBody"]["content"]["application/json"]["schema"];
        let mut errs = Vec::new();
        check(&doc, schema, body, kind, &mut errs);
        assert!(errs.is_empty(), "{}\n{body}", errs.join("\n"));
        let Some(headers) = headers else { return };
        let params: Vec<Value> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(param)
            .collect();
        for p in &params {
            let h = p["name"].as_str().unwrap();
            let v = headers
                .get(h)
                .unwrap_or_else(|| panic!("{kind}: no {h} header"));
            let mut errs = Vec::new();
            check(
                &doc,
                &p["schema"],
                &json!(v.to_str().unwrap()),
                h,
                &mut errs,
            );
            assert!(errs.is_empty(), "{errs:?}");
        }
        for k in headers
            .keys()
            .filter(|k| k.as_str().starts_with("webhook-"))
        {
            assert!(
                params.iter().any(|p| p["name"] == k.as_str()),
                "{k} is sent but not documented"
            );
        }
    };
    for (headers, raw) in &got.raw {
        let body: Value = serde_json::from_slice(raw).unwrap();
        check_call(&body, Some(headers));
    }
    let failure = wavault::messaging::events::decrypt_failure_json(
        "support",
        "3EB0F7A8B9",
        "4915112345678@s.whatsapp.net",
        "4915112345678@s.whatsapp.net",
        1_795_000_030,
        false,
    );
    check_call(&failure, None);
    // A media message: its event's `media` object, and its file from the
    // documented URL.
    let gif = b"GIF89a: a picture of a receipt".to_vec();
    let media_id = alice
        .send_media(
            &phone,
            crate::peer::OutMedia::new(crate::peer::MediaKind::Image, gif.clone(), "image/gif"),
        )
        .await
        .unwrap();
    let with_media = hook
        .wait("the media message's event", DEADLINE, |s| {
            s.accepted.iter().any(|e| e["id"] == media_id.as_str())
        })
        .await;
    let event = with_media
        .accepted
        .iter()
        .find(|e| e["id"] == media_id.as_str())
        .unwrap();
    assert_eq!(event["media"]["kind"], "image");
    check_call(event, None);
    let url = event["media"]["url"].as_str().unwrap();
    let a = call("GET", format!("{base}{url}"), token.clone(), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body.as_bytes(), gif.as_slice());
    conforms(&doc, "/api/bots/{id}/media/{message_id}", "get", &a);
    let mut called = kinds(&got);
    called.insert("decrypt_failure".into());
    for k in webhooks.keys() {
        assert!(
            called.contains(k),
            "webhook {k} is documented but was not checked"
        );
    }
    let answer_schema = json!({"$ref": "#/components/schemas/HookAnswer"});
    for answer in [
        json!({"reply": "echo: hello"}),
        json!({"actions": [{"type": "react", "emoji": "👍"}, {"type": "read"}]}),
        json!([{"type": "reply", "text": "x"}]),
        json!({"actions": [{"send_file": {"base64": "aGk=", "caption": "c", "as": "image"}}, {"type": "send_file", "path": "menu.pdf"}]}),
    ] {
        let mut errs = Vec::new();
        check(&doc, &answer_schema, &answer, "answer", &mut errs);
        assert!(errs.is_empty(), "{answer}: {errs:?}");
    }
    // The checker catches what it is there for.
    let mut errs = Vec::new();
    let mut row: Value = serde_json::from_str(
        &call(
            "GET",
            format!("{base}/api/bots/support"),
            token.clone(),
            None,
        )
        .await
        .body,
    )
    .unwrap();
    row["surprise"] = json!(1);
    row["status"] = json!("dancing");
    check(
        &doc,
        &json!({"$ref": "#/components/schemas/StatusRow"}),
        &row,
        "row",
        &mut errs,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    runner.shutdown().await.unwrap();
}
