//! Server-streaming methods as server-sent events: a route whose method carries the
//! `duovarsity.options.v1.stream` option switches to its streaming sibling when the
//! request's bool field says so, and each streamed message becomes one `data:` line of
//! JSON, ending with `data: [DONE]` (the shape OpenAI's clients read).
//!
//! The first message is awaited before answering, so an error before any output (a
//! refusal, a budget, an outage) is an ordinary problem response with its HTTP status. An
//! error after output has begun ends the stream with a `data: {"error": …}` event (what
//! OpenAI's clients raise), never a silent end.

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderName, HeaderValue, header};
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::metadata::MetadataMap;

use crate::problem::Problem;
use crate::routes::{Route, StreamSwitch};

/// The streaming sibling, if the request (encoded) asks for it.
pub fn requested<'r>(route: &'r Route, message: &[u8]) -> Option<&'r StreamSwitch> {
    let switch = route.stream.as_ref()?;
    let request = DynamicMessage::decode(route.method.input(), message).ok()?;
    request
        .get_field_by_name(&switch.when_field)
        .and_then(|value| value.as_bool())
        .filter(|wanted| *wanted)
        .map(|_| switch)
}

/// Response metadata passed on as HTTP headers: the platform's own `x-duovarsity-*`.
pub fn passed_headers(metadata: &MetadataMap) -> Vec<(HeaderName, HeaderValue)> {
    metadata
        .clone()
        .into_headers()
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name?;
            name.as_str()
                .starts_with("x-duovarsity-")
                .then_some((name, value))
        })
        .collect()
}

/// One message as a `data:` event.
fn event(output: &MessageDescriptor, bytes: &[u8]) -> Result<Bytes, String> {
    let message = DynamicMessage::decode(output.clone(), bytes).map_err(|e| e.to_string())?;
    let mut out = b"data: ".to_vec();
    message
        .serialize_with_options(
            &mut serde_json::Serializer::new(&mut out),
            &SerializeOptions::new().skip_default_fields(false),
        )
        .map_err(|e| e.to_string())?;
    out.extend_from_slice(b"\n\n");
    Ok(Bytes::from(out))
}

fn error_event(status: &tonic::Status) -> Bytes {
    let problem = Problem::from_status(status);
    let body = serde_json::json!({"error": {
        "message": status.message(),
        "type": "stream_error",
        "code": problem.reason.unwrap_or_else(|| format!("{:?}", status.code())),
    }});
    Bytes::from(format!("data: {body}\n\n"))
}

/// The event stream of a server-streaming call whose response metadata is `metadata`.
pub async fn response(
    output: MessageDescriptor,
    metadata: &MetadataMap,
    mut stream: tonic::Streaming<Bytes>,
) -> Result<Response, Problem> {
    let first = match stream.next().await {
        Some(Ok(first)) => first,
        Some(Err(status)) => return Err(Problem::from_status(&status)),
        None => Bytes::new(),
    };
    let first_event = if first.is_empty() {
        None
    } else {
        Some(event(&output, &first).map_err(|error| {
            tracing::error!(%error, "an unreadable streamed message");
            Problem::from_status(&tonic::Status::internal("unreadable stream"))
        })?)
    };
    let rest = futures::stream::unfold(Some(stream), move |state| {
        let output = output.clone();
        async move {
            let mut stream = state?;
            match stream.next().await {
                Some(Ok(bytes)) => match event(&output, &bytes) {
                    Ok(data) => Some((data, Some(stream))),
                    Err(error) => {
                        tracing::error!(%error, "an unreadable streamed message");
                        Some((
                            error_event(&tonic::Status::internal("unreadable stream")),
                            None,
                        ))
                    }
                },
                Some(Err(status)) => Some((error_event(&status), None)),
                None => Some((Bytes::from_static(b"data: [DONE]\n\n"), None)),
            }
        }
    });
    let events = futures::stream::iter(first_event)
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in passed_headers(metadata) {
        headers.insert(name, value);
    }
    Ok(response)
}
