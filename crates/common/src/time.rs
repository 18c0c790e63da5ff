//! Clock helpers: the platform stores times as milliseconds since the Unix epoch (the one
//! time column SQLite and PostgreSQL share) and sends them as protobuf timestamps.

/// Milliseconds since the Unix epoch: the platform's portable SQL time column.
pub fn now_millis() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A stored millisecond time as a wire timestamp.
pub fn timestamp_from_millis(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}
