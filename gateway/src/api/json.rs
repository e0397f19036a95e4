//! Body and query extractors whose rejections are our JSON errors (`bad_json`, `too_large`,
//! `invalid_request`), not axum's plain-text ones.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// A body sent as `application/json` is parsed straight away; axum's `Json` tracks the path
    /// to every field as it parses, for its error messages, which made parsing a batch of
    /// notifications a third slower. Only a body that fails is parsed again by axum's `Json`,
    /// for the error that names the field; any other content type is left to it whole.
    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_plain_json(request.headers()) {
            let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
            return Ok(Self(value));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(JsonRejection::from)?;
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(Self(value)),
            Err(_) => {
                let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
                Ok(Self(value))
            }
        }
    }
}

/// Whether the body is declared as plain `application/json` (with parameters or not).
fn is_plain_json(headers: &HeaderMap) -> bool {
    let content_type = headers.get(header::CONTENT_TYPE);
    let essence = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next());
    essence.is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A query-string extractor whose rejections are our JSON `invalid_request` errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use protocol::ErrorCode;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Item {
        #[allow(dead_code)]
        user: String,
    }

    /// What the extractor makes of a request: the value, or the status and error body.
    async fn extract(
        content_type: Option<&str>,
        body: &str,
    ) -> Result<Batch, (u16, ErrorCode, String)> {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        match ApiJson::<Batch>::from_request(request, &()).await {
            Ok(ApiJson(batch)) => Ok(batch),
            Err(error) => {
                let response = error.into_response();
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let body: protocol::error_code::ErrorBody = serde_json::from_slice(&body).unwrap();
                Err((status, body.error.code, body.error.message))
            }
        }
    }

    #[tokio::test]
    async fn json_bodies_parse_and_errors_name_the_field() {
        let good = r#"{"items": [{"user": "alice"}]}"#;
        for content_type in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/cloudevents+json",
        ] {
            assert_eq!(
                extract(Some(content_type), good).await.unwrap().items.len(),
                1
            );
        }
        let (status, code, message) =
            extract(Some("application/json"), r#"{"items": [{"user": 7}]}"#)
                .await
                .unwrap_err();
        assert_eq!((status, code), (422, ErrorCode::BadJson));
        assert!(message.contains("items[0].user"), "{message}");
        let (status, _, _) = extract(Some("application/json"), r#"{"items": []} trailing"#)
            .await
            .unwrap_err();
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn a_body_not_declared_as_json_is_refused() {
        let (status, code, _) = extract(None, r#"{"items": []}"#).await.unwrap_err();
        assert_eq!((status, code), (415, ErrorCode::BadJson));
    }
}
