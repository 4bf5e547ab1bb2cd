//! Files in an instance: read, write, edit, list, stat. Paths are resolved by the agent
//! inside the sandbox (see `kiln_services::instances::files`), so none reaches the host.
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use kiln_services::instances::files::{FileBytes, FileEdit, FileWrite, ReadRange};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::files_models::*;
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{parse_json, CurrentUser, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(read, write))
        .routes(routes!(edit))
        .routes(routes!(list))
        .routes(routes!(stat))
}

/// Read a file: its bytes (`application/octet-stream`), or with `?format=json` an object
/// with the content as text or base64. A part of it with `offset`/`length`, or with a
/// `Range: bytes=a-b` header (206 with `Content-Range`). One read returns at most
/// `files.max_read_bytes`; a larger file must be read in ranges (422 says so).
#[utoipa::path(get, path = "/instances/{id}/files", tag = "files",
    params(("id" = String, Path), ReadFileParams,
           ("Range" = Option<String>, Header, description = "bytes=a-b, bytes=a- or bytes=-n")),
    responses((status = 200, content((Vec<u8> = "application/octet-stream"), (FileContentView = "application/json"))),
              (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 416, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn read(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<ReadFileParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let header_range = match headers.get(RANGE) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(parse_range) {
            Some(range) => Some(range),
            None => {
                return Ok(unsatisfiable(
                    "only one range of the form bytes=a-b, bytes=a- or bytes=-n is served",
                    None,
                ))
            }
        },
    };
    let range = match (header_range, params.offset, params.length) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ApiError::invalid(
                &["query", "offset"],
                "give a range either as offset/length or as a Range header, not both",
                "value_error",
            ))
        }
        (Some(range), _, _) => range,
        (None, offset, length) => ReadRange::From {
            offset: offset.unwrap_or(0),
            length,
        },
    };
    if range == ReadRange::Last(0) {
        return Ok(unsatisfiable("bytes=-0 asks for no bytes", None));
    }
    let file = state
        .kiln
        .instances
        .read_file(
            &state.kiln.config.files,
            &me.user.user_id,
            &id,
            &params.path,
            range,
        )
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    if header_range.is_some() && file.offset >= file.size {
        return Ok(unsatisfiable(
            &format!(
                "the range starts at byte {}, past the end of the file ({} bytes)",
                file.offset, file.size
            ),
            Some(file.size),
        ));
    }
    Ok(match params.format.unwrap_or_default() {
        ReadFormat::Json => Json(json_view(file)).into_response(),
        ReadFormat::Raw => raw_response(file, header_range.is_some()),
    })
}

/// The bytes as UTF-8 text when they are, else base64.
fn json_view(file: FileBytes) -> FileContentView {
    let length = file.content.len() as u64;
    let (encoding, content) = match String::from_utf8(file.content) {
        Ok(text) => (ContentEncoding::Utf8, text),
        Err(e) => (
            ContentEncoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
        ),
    };
    FileContentView {
        path: file.path,
        size: file.size,
        offset: file.offset,
        length,
        mode: octal(file.mode),
        encoding,
        content,
        truncated: file.truncated,
    }
}

/// The bytes as `application/octet-stream`; a 206 with `Content-Range` for a `Range`.
fn raw_response(file: FileBytes, ranged: bool) -> Response {
    let length = file.content.len() as u64;
    let mut response = Response::new(Body::from(file.content));
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("x-kiln-file-size", HeaderValue::from(file.size));
    if let Ok(mode) = HeaderValue::from_str(&octal(file.mode)) {
        h.insert("x-kiln-file-mode", mode);
    }
    if ranged {
        let last = file.offset + length.max(1) - 1;
        let value = format!("bytes {}-{last}/{}", file.offset, file.size);
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range; several are not served).
fn parse_range(value: &str) -> Option<ReadRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => Some(ReadRange::Last(number(last)?)),
        (false, true) => Some(ReadRange::From {
            offset: number(first)?,
            length: None,
        }),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            // `then`, not `then_some`: the length must not be computed for a reversed range.
            (last >= first).then(|| ReadRange::From {
                offset: first,
                length: Some(last - first + 1),
            })
        }
        (true, true) => None,
    }
}

/// 416 in the API's error shape, with `Content-Range: bytes */size` when the size is known.
fn unsatisfiable(message: &str, size: Option<u64>) -> Response {
    let body = serde_json::json!({"detail": {"code": "range_not_satisfiable", "message": message}});
    let mut response = (StatusCode::RANGE_NOT_SATISFIABLE, Json(body)).into_response();
    if let Some(value) = size.and_then(|s| HeaderValue::from_str(&format!("bytes */{s}")).ok()) {
        response.headers_mut().insert(CONTENT_RANGE, value);
    }
    response
}

/// Write a file, atomically (a reader sees the old content or the new, never a part):
/// a JSON body (`WriteFileBody`), or any other body as the raw bytes with `?path=`
/// (and `mode`, `create_parents`). At most `files.max_write_bytes` (413 past it).
#[utoipa::path(post, path = "/instances/{id}/files", tag = "files",
    params(("id" = String, Path), WriteFileParams),
    request_body(content((WriteFileBody = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 200, body = FileWrittenView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn write(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<WriteFileParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<FileWrittenView>> {
    let body = body.map_err(body_rejection)?;
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let (write, input) = if is_json {
        (write_from_json(parse_json(&body)?)?, Input::Body)
    } else {
        (write_from_raw(params, body)?, Input::Query)
    };
    let max = state.kiln.config.files.max_write_bytes;
    if write.content.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the file is {} bytes, more than one write accepts ({max})",
            write.content.len()
        )));
    }
    let (path, size) = state
        .kiln
        .instances
        .write_file(&me.user.user_id, &id, write)
        .await
        .map_err(ApiError::from_service(input))?;
    Ok(Json(FileWrittenView { path, size }))
}

/// As `ValidJson` answers: the bodies here are read raw first (a write may be JSON or bytes).
fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("request body is larger than this server accepts".into())
    } else {
        ApiError::invalid(
            &["body"],
            format!("cannot read request body: {rejection}"),
            "body_read",
        )
    }
}

fn write_from_json(req: WriteFileBody) -> ApiResult<FileWrite> {
    let content = match (req.content, req.content_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| {
                ApiError::invalid(
                    &["body", "content_base64"],
                    format!("not valid base64: {e}"),
                    "value_error",
                )
            })?,
        _ => {
            return Err(ApiError::invalid(
                &["body", "content"],
                "give exactly one of content and content_base64",
                "value_error",
            ))
        }
    };
    let mode = match req.mode {
        None => None,
        Some(ModeValue::Bits(bits)) => Some(bits),
        Some(ModeValue::Octal(text)) => Some(mode_from(&text, "body")?),
    };
    Ok(FileWrite {
        path: req.path,
        content,
        mode,
        create_parents: req.create_parents,
    })
}

fn write_from_raw(params: WriteFileParams, body: Bytes) -> ApiResult<FileWrite> {
    let Some(path) = params.path else {
        return Err(ApiError::invalid(
            &["query", "path"],
            "Field required (a raw body is written to ?path=; or send JSON)",
            "missing",
        ));
    };
    let mode = params
        .mode
        .as_deref()
        .map(|m| mode_from(m, "query"))
        .transpose()?;
    Ok(FileWrite {
        path,
        content: body.to_vec(),
        mode,
        create_parents: params.create_parents.unwrap_or(false),
    })
}

fn mode_from(text: &str, input: &str) -> ApiResult<u32> {
    parse_octal(text).ok_or_else(|| {
        ApiError::invalid(
            &[input, "mode"],
            format!("{text:?} is not an octal mode such as \"0644\""),
            "value_error",
        )
    })
}

/// Edit a file in place, atomically: replace the one occurrence of `old_str` by
/// `new_str` (Codeset's `str_replace`: zero or several occurrences change nothing and
/// answer `success: false`), or replace lines `start_line..=end_line` by `new_text`
/// (`end_line = start_line - 1` inserts; a range outside the file is a 422).
#[utoipa::path(post, path = "/instances/{id}/files/edit", tag = "files",
    params(("id" = String, Path)), request_body = EditFileBody,
    responses((status = 200, body = EditFileView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn edit(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<EditFileView>> {
    let body = body.map_err(body_rejection)?;
    let req: EditFileBody = parse_json(&body)?;
    let edit = edit_from(
        req.old_str,
        req.new_str,
        req.start_line,
        req.end_line,
        req.new_text,
    )?;
    let carried = match &edit {
        FileEdit::Replace { old, new } => old.len() + new.len(),
        FileEdit::Lines { new_text, .. } => new_text.len(),
    };
    let max = state.kiln.config.files.max_write_bytes;
    if carried > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the edit carries {carried} bytes, more than one write accepts ({max})"
        )));
    }
    let outcome = state
        .kiln
        .instances
        .edit_file(&me.user.user_id, &id, &req.path, edit)
        .await?;
    Ok(Json(outcome.into()))
}

fn edit_from(
    old_str: Option<String>,
    new_str: Option<String>,
    start_line: Option<u64>,
    end_line: Option<u64>,
    new_text: Option<String>,
) -> ApiResult<FileEdit> {
    let missing = |field: &str| ApiError::invalid(&["body", field], "Field required", "missing");
    let by_text = old_str.is_some() || new_str.is_some();
    let by_lines = start_line.is_some() || end_line.is_some() || new_text.is_some();
    match (by_text, by_lines) {
        (true, false) => Ok(FileEdit::Replace {
            old: old_str.ok_or_else(|| missing("old_str"))?,
            new: new_str.ok_or_else(|| missing("new_str"))?,
        }),
        (false, true) => Ok(FileEdit::Lines {
            start_line: start_line.ok_or_else(|| missing("start_line"))?,
            end_line: end_line.ok_or_else(|| missing("end_line"))?,
            new_text: new_text.ok_or_else(|| missing("new_text"))?,
        }),
        _ => Err(ApiError::invalid(
            &["body"],
            "give either old_str and new_str, or start_line, end_line and new_text",
            "value_error",
        )),
    }
}

/// List a directory, `depth` levels down (1: its own entries; at most
/// `files.max_list_depth`), sorted by path; at most `files.max_list_entries` entries,
/// `truncated` past that. Symlinks are listed, never followed.
#[utoipa::path(get, path = "/instances/{id}/files/list", tag = "files",
    params(("id" = String, Path), ListFilesParams),
    responses((status = 200, body = FileListView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<ListFilesParams>,
) -> ApiResult<Json<FileListView>> {
    let listing = state
        .kiln
        .instances
        .list_files(
            &state.kiln.config.files,
            &me.user.user_id,
            &id,
            params.path.as_deref().unwrap_or("."),
            params.depth.unwrap_or(1),
        )
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    Ok(Json(listing.into()))
}

/// Metadata of one path (a symlink itself, not its target).
#[utoipa::path(get, path = "/instances/{id}/files/stat", tag = "files",
    params(("id" = String, Path), StatFileParams),
    responses((status = 200, body = FileEntryView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn stat(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<StatFileParams>,
) -> ApiResult<Json<FileEntryView>> {
    let entry = state
        .kiln
        .instances
        .stat_file(&me.user.user_id, &id, &params.path)
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    Ok(Json(entry.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_writes_them() {
        let from = |offset, length| Some(ReadRange::From { offset, length });
        assert_eq!(parse_range("bytes=0-9"), from(0, Some(10)));
        assert_eq!(parse_range("bytes=5-"), from(5, None));
        assert_eq!(parse_range("bytes=-3"), Some(ReadRange::Last(3)));
        assert_eq!(parse_range(" bytes=7-7 "), from(7, Some(1)));
        for bad in [
            "bytes=9-1",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}
