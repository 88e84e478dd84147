//! Channel operations the host runs through the adapter's generic `call`: uploads,
//! the Messenger Profile, the handover protocol, personas. Each takes and returns JSON.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, Result},
    send::graph::{Body, Graph, Upload},
    settings::{PageSettings, Settings},
};

/// Every operation, with what its input holds. `page_id` may be left out when one
/// Page is configured.
pub const OPS: &[(&str, &str)] = &[
    ("ops", "this list"),
    ("pages", "the configured Page ids"),
    (
        "attachment.upload",
        "{type: image|audio|video|file, url | file: path} -> {attachment_id}",
    ),
    ("profile.get", "{fields?: [..]} -> the Messenger Profile"),
    (
        "profile.set",
        "{get_started?, greeting?, persistent_menu?, ice_breakers?, whitelisted_domains?, ...}",
    ),
    ("profile.delete", "{fields: [..]}"),
    ("handover.pass", "{recipient_id, target_app_id, metadata?}"),
    ("handover.take", "{recipient_id, metadata?}"),
    ("handover.request", "{recipient_id, metadata?}"),
    ("personas.create", "{name, profile_picture_url} -> {id}"),
    ("personas.list", "{} -> {data: [..]}"),
    ("personas.delete", "{persona_id}"),
    ("graph", "{method, path, body?}: any Graph call as the Page"),
];

const PROFILE_FIELDS: &[&str] = &[
    "get_started",
    "greeting",
    "persistent_menu",
    "ice_breakers",
    "whitelisted_domains",
    "account_linking_url",
    "commands",
    "home_url",
];

/// Largest file the Attachment Upload API takes.
const MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;

fn invalid<T>(op: &str, why: impl std::fmt::Display) -> Result<T> {
    Err(Error::InvalidMessage(format!("{op}: {why}")))
}

/// Runs operation `op` with `input` (a JSON object, or null).
pub async fn run(graph: &Graph, settings: &Settings, op: &str, input: Value) -> Result<Value> {
    let mut input = match input {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => return invalid(op, "input must be a JSON object"),
    };
    match op {
        "ops" => {
            let ops: Map<String, Value> = OPS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            return Ok(Value::Object(ops));
        }
        "pages" => {
            let ids: Vec<_> = settings.pages.iter().map(|p| p.id.as_str()).collect();
            return Ok(json!({ "pages": ids }));
        }
        _ => {}
    }
    if !OPS.iter().any(|(name, _)| *name == op) {
        return Err(Error::Unsupported(format!(
            "unknown operation {op:?}; see the \"ops\" operation for the list"
        )));
    }
    let page = page(settings, op, &mut input)?;
    let text = |input: &Map<String, Value>, key: &str| -> Result<String> {
        match input.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => invalid(op, format!("{key} is required")),
        }
    };
    match op {
        "attachment.upload" => upload(graph, page, op, &input).await,
        "profile.get" => {
            let fields = field_list(op, input.get("fields"))?
                .unwrap_or_else(|| PROFILE_FIELDS.iter().map(|f| (*f).to_owned()).collect());
            let path = format!("me/messenger_profile?fields={}", fields.join(","));
            graph
                .call(page, Method::GET, &path, Body::None, false)
                .await
        }
        "profile.set" => {
            check_profile(op, &input)?;
            let body = Value::Object(input);
            graph
                .call(
                    page,
                    Method::POST,
                    "me/messenger_profile",
                    Body::Json(&body),
                    false,
                )
                .await
        }
        "profile.delete" => {
            let Some(fields) = field_list(op, input.get("fields"))? else {
                return invalid(op, "fields is required, e.g. [\"greeting\"]");
            };
            let body = json!({ "fields": fields });
            graph
                .call(
                    page,
                    Method::DELETE,
                    "me/messenger_profile",
                    Body::Json(&body),
                    false,
                )
                .await
        }
        "handover.pass" | "handover.take" | "handover.request" => {
            let recipient = text(&input, "recipient_id")?;
            let mut body = json!({ "recipient": { "id": recipient } });
            if let Some(metadata) = input.get("metadata").and_then(Value::as_str) {
                if metadata.chars().count() > 1000 {
                    return invalid(op, "metadata: at most 1000 characters");
                }
                body["metadata"] = json!(metadata);
            }
            let path = match op {
                "handover.pass" => {
                    body["target_app_id"] = json!(text(&input, "target_app_id")?);
                    "me/pass_thread_control"
                }
                "handover.take" => "me/take_thread_control",
                _ => "me/request_thread_control",
            };
            graph
                .call(page, Method::POST, path, Body::Json(&body), false)
                .await
        }
        "personas.create" => {
            let name = text(&input, "name")?;
            let picture = text(&input, "profile_picture_url")?;
            let body = json!({ "name": name, "profile_picture_url": picture });
            graph
                .call(page, Method::POST, "me/personas", Body::Json(&body), false)
                .await
        }
        "personas.list" => {
            graph
                .call(page, Method::GET, "me/personas", Body::None, false)
                .await
        }
        "personas.delete" => {
            let id = text(&input, "persona_id")?;
            if !id.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(op, "persona_id must be numeric");
            }
            graph
                .call(page, Method::DELETE, &id, Body::None, false)
                .await
        }
        "graph" => {
            let method = text(&input, "method")?;
            let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                return invalid(op, "method is not an HTTP method");
            };
            let path = text(&input, "path")?;
            match input.get("body") {
                Some(body) => {
                    graph
                        .call(page, method, &path, Body::Json(body), false)
                        .await
                }
                None => graph.call(page, method, &path, Body::None, false).await,
            }
        }
        _ => unreachable!("every listed operation is matched above"),
    }
}

/// The Page named by `page_id`, or the only one configured.
fn page<'a>(
    settings: &'a Settings,
    op: &str,
    input: &mut Map<String, Value>,
) -> Result<&'a PageSettings> {
    match input.remove("page_id") {
        Some(id) => {
            let id = match id {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => return invalid(op, "page_id must be a string"),
            };
            settings
                .page(&id)
                .map_or_else(|| invalid(op, format!("page {id} is not configured")), Ok)
        }
        None if settings.pages.len() == 1 => Ok(&settings.pages[0]),
        None => invalid(op, "page_id is required when several Pages are configured"),
    }
}

fn field_list(op: &str, value: Option<&Value>) -> Result<Option<Vec<String>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(items) = value.as_array() else {
        return invalid(op, "fields must be a list of names");
    };
    let mut fields = Vec::new();
    for item in items {
        match item.as_str() {
            Some(f) if PROFILE_FIELDS.contains(&f) => fields.push(f.to_owned()),
            _ => {
                return invalid(
                    op,
                    format!("unknown profile field {item}; known: {PROFILE_FIELDS:?}"),
                )
            }
        }
    }
    if fields.is_empty() {
        return invalid(op, "fields must not be empty");
    }
    Ok(Some(fields))
}

fn check_profile(op: &str, profile: &Map<String, Value>) -> Result<()> {
    if profile.is_empty() {
        return invalid(op, "nothing to set");
    }
    for key in profile.keys() {
        if !PROFILE_FIELDS.contains(&key.as_str()) {
            return invalid(
                op,
                format!("unknown profile field {key:?}; known: {PROFILE_FIELDS:?}"),
            );
        }
    }
    if let Some(greetings) = profile.get("greeting") {
        let Some(greetings) = greetings.as_array() else {
            return invalid(op, "greeting must be a list of {locale, text}");
        };
        for (i, greeting) in greetings.iter().enumerate() {
            let text = greeting["text"].as_str().unwrap_or("");
            if text.is_empty() || text.chars().count() > 160 {
                return invalid(op, format!("greeting[{i}].text: 1 to 160 characters"));
            }
        }
        if !greetings.iter().any(|g| g["locale"] == "default") {
            return invalid(op, "greeting: a \"default\" locale entry is required");
        }
    }
    Ok(())
}

async fn upload(
    graph: &Graph,
    page: &PageSettings,
    op: &str,
    input: &Map<String, Value>,
) -> Result<Value> {
    let kind = input.get("type").and_then(Value::as_str).unwrap_or("");
    if !matches!(kind, "image" | "audio" | "video" | "file") {
        return invalid(op, "type must be image, audio, video or file");
    }
    let media = matches!(kind, "audio" | "video");
    let url = input.get("url").and_then(Value::as_str);
    let file = input.get("file").and_then(Value::as_str);
    match (url, file) {
        (Some(url), None) => {
            let body = json!({ "message": { "attachment": { "type": kind, "payload": { "url": url, "is_reusable": true } } } });
            graph
                .call(
                    page,
                    Method::POST,
                    "me/message_attachments",
                    Body::Json(&body),
                    media,
                )
                .await
        }
        (None, Some(path)) => {
            let path = Path::new(path);
            let size = std::fs::metadata(path)
                .map_err(|e| Error::InvalidMessage(format!("{op}: {}: {e}", path.display())))?
                .len();
            if size > MAX_UPLOAD_BYTES {
                return invalid(op, format!("{}: larger than 25 MB", path.display()));
            }
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| Error::InvalidMessage(format!("{op}: {}: {e}", path.display())))?;
            let upload = Upload {
                message: json!({ "attachment": { "type": kind, "payload": { "is_reusable": true } } }),
                file_name: path
                    .file_name()
                    .map_or_else(|| "upload".to_owned(), |n| n.to_string_lossy().into_owned()),
                mime: mime_of(path).to_owned(),
                bytes,
            };
            graph
                .call(
                    page,
                    Method::POST,
                    "me/message_attachments",
                    Body::Upload(&upload),
                    media,
                )
                .await
        }
        _ => invalid(op, "give exactly one of url and file"),
    }
}

fn mime_of(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}
