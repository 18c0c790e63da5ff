//! Calls one service makes on behalf of its caller: the caller's deadline
//! ([`Deadline`], from its `grpc-timeout`) and credentials carried on ([`Onward`]), and
//! which failed calls never reached a server ([`never_sent`]) and may go elsewhere.

use std::time::{Duration, Instant};

/// When the caller stops waiting: its `grpc-timeout`, from when the call arrived (a
/// request extension, set by the server kit).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// `grpc-timeout`'s value (`<up to 8 digits><H|M|S|m|u|n>`) as a duration.
pub(super) fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// What a call on behalf of a caller passes on to the next service: the caller's
/// credentials and what is left of its deadline.
#[derive(Debug, Clone, Default)]
pub struct Onward {
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
    deadline: Option<Instant>,
}

impl Onward {
    /// The caller of `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self {
            authorization: request.metadata().get("authorization").cloned(),
            deadline: request.extensions().get::<Deadline>().map(|d| d.0),
        }
    }

    /// On behalf of the holder of an access token (a socket of a live session), without a
    /// deadline of its own.
    pub fn bearer(token: &str) -> Self {
        Self {
            authorization: format!("Bearer {token}").parse().ok(),
            deadline: None,
        }
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A request for the next service with the caller's token and a deadline of `ceiling`
    /// or what is left of the caller's, whichever is sooner. With nothing left, the call
    /// is not made: DEADLINE_EXCEEDED.
    pub fn request<U>(
        &self,
        message: U,
        ceiling: Duration,
    ) -> Result<tonic::Request<U>, tonic::Status> {
        let left = match self.deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(ceiling),
            None => ceiling,
        };
        if left.is_zero() {
            return Err(tonic::Status::deadline_exceeded(
                "the caller's deadline has passed",
            ));
        }
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request.set_timeout(left);
        Ok(request)
    }
}

/// Whether a call failed before any byte of it was sent: the endpoint refused the
/// connection (a replica restarting or gone). Such a call may be retried elsewhere even
/// when it writes, since no server can have applied it.
pub fn never_sent(status: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether a call was refused by a server at capacity (reason `OVERLOADED`, see
/// [`crate::Error::Overloaded`]): the server is healthy but busy, so it is not a reason
/// to stop sending it calls, and a read may go to another replica.
pub fn overloaded(status: &tonic::Status) -> bool {
    use tonic_types::StatusExt as _;
    status.code() == tonic::Code::Unavailable
        && status
            .get_error_details()
            .error_info()
            .is_some_and(|info| info.reason == "OVERLOADED")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b"m"[..], b"123456789S", b"12x", b"-1S", b""] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_onward_call_gets_the_sooner_deadline() {
        let mut incoming = tonic::Request::new(());
        incoming
            .extensions_mut()
            .insert(Deadline(Instant::now() + Duration::from_millis(300)));
        incoming
            .metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());
        let onward = Onward::of(&incoming);
        let request = onward.request((), Duration::from_secs(3)).unwrap();
        let sent = request
            .metadata()
            .get("grpc-timeout")
            .unwrap()
            .to_str()
            .unwrap();
        let sent = parse_grpc_timeout(sent.as_bytes()).unwrap();
        assert!(
            sent <= Duration::from_millis(300) && sent > Duration::from_millis(200),
            "{sent:?}"
        );
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer t");
        let sent = Onward::default()
            .request((), Duration::from_secs(3))
            .unwrap();
        assert!(sent.metadata().get("grpc-timeout").is_some());
        let passed = Onward {
            deadline: Some(Instant::now()),
            authorization: None,
        };
        assert_eq!(
            passed
                .request((), Duration::from_secs(3))
                .unwrap_err()
                .code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
