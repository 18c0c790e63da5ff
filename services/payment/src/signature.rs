//! The providers' signature schemes, each an HMAC-SHA256 checked in constant time
//! (`ring::hmac::verify`), never by comparing strings.
//!
//! - Razorpay, checkout: the client reports `razorpay_payment_id` and
//!   `razorpay_signature`; the signature is the hex HMAC of `order_id|payment_id` with the
//!   key secret. The order id is the one WE stored for the order, never one the client
//!   sends, so a signature for another (cheaper) order does not verify.
//! - Razorpay, webhooks: `X-Razorpay-Signature` is the hex HMAC of the raw body with the
//!   webhook secret.
//! - Stripe, webhooks: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, the HMAC
//!   of `<t>.<raw body>` with the endpoint secret; one matching `v1` suffices (secrets
//!   roll), and `t` must be within a tolerance of now, so a captured request cannot be
//!   replayed later.
//!
//! The signing functions are what the platform's sandbox and the tests' mock providers use
//! to sign as the providers do.

use ring::hmac;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing or malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature does not match")]
    Mismatch,
    #[error("the signature is {age_secs} s from now, beyond the {tolerance_secs} s tolerance")]
    Stale { age_secs: i64, tolerance_secs: i64 },
}

fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// The hex HMAC-SHA256 of `message` with `secret`.
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    hex::encode(hmac::sign(&key(secret), message).as_ref())
}

/// Checks a hex signature of `message` in constant time.
fn verify_hex(secret: &[u8], message: &[u8], signature_hex: &str) -> Result<(), SignatureError> {
    let signature =
        hex::decode(signature_hex.trim()).map_err(|_| SignatureError::Malformed("not hex"))?;
    hmac::verify(&key(secret), message, &signature).map_err(|_| SignatureError::Mismatch)
}

/// Razorpay's checkout signature: `order_id` is the provider order id stored with our
/// order.
pub fn verify_razorpay_payment(
    key_secret: &[u8],
    order_id: &str,
    payment_id: &str,
    signature_hex: &str,
) -> Result<(), SignatureError> {
    let message = format!("{order_id}|{payment_id}");
    verify_hex(key_secret, message.as_bytes(), signature_hex)
}

/// Razorpay's webhook signature (`X-Razorpay-Signature`) over the raw body.
pub fn verify_razorpay_webhook(
    webhook_secret: &[u8],
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    verify_hex(webhook_secret, body, header)
}

/// Stripe's `Stripe-Signature` header over the raw body, at `now` (unix seconds), with
/// `tolerance_secs` either way.
pub fn verify_stripe_webhook(
    endpoint_secret: &[u8],
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                );
            }
            Some(("v1", value)) => candidates.push(value),
            // Other schemes (v0 test signatures) are not accepted.
            Some(_) => {}
            None => return Err(SignatureError::Malformed("a part without '='")),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t="))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no v1="));
    }
    let age_secs = now - timestamp;
    if age_secs.abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    if candidates
        .iter()
        .any(|candidate| verify_hex(endpoint_secret, &signed, candidate).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A `Stripe-Signature` header for `body` at `timestamp`, as Stripe sends it.
pub fn stripe_header(endpoint_secret: &[u8], body: &[u8], timestamp: i64) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={timestamp},v1={}", sign(endpoint_secret, &signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn razorpay_signatures_bind_the_stored_order() {
        // Razorpay's documented construction: HMAC-SHA256("order_id|payment_id", secret).
        let secret = b"test_key_secret";
        let signature = sign(secret, b"order_9A33XWu170gUtm|pay_29QQoUBi66xm2f");
        assert_eq!(signature.len(), 64);
        assert_eq!(
            verify_razorpay_payment(
                secret,
                "order_9A33XWu170gUtm",
                "pay_29QQoUBi66xm2f",
                &signature
            ),
            Ok(())
        );
        assert_eq!(
            verify_razorpay_payment(secret, "order_OTHER", "pay_29QQoUBi66xm2f", &signature),
            Err(SignatureError::Mismatch),
            "a signature for another order"
        );
        assert_eq!(
            verify_razorpay_payment(
                b"wrong",
                "order_9A33XWu170gUtm",
                "pay_29QQoUBi66xm2f",
                &signature
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_razorpay_payment(secret, "o", "p", "zz"),
            Err(SignatureError::Malformed("not hex"))
        );
    }

    #[test]
    fn razorpay_webhooks_are_signed_over_the_raw_body() {
        let body = br#"{"event":"payment.captured","payload":{}}"#;
        let header = sign(b"whsec", body);
        assert_eq!(verify_razorpay_webhook(b"whsec", body, &header), Ok(()));
        // The same JSON re-serialized (a space) is another body.
        let reformatted = br#"{"event": "payment.captured","payload":{}}"#;
        assert_eq!(
            verify_razorpay_webhook(b"whsec", reformatted, &header),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_signatures_check_the_timestamp_and_any_v1() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let now = 1_700_000_000;
        let header = stripe_header(b"whsec_1", body, now);
        assert_eq!(
            verify_stripe_webhook(b"whsec_1", body, &header, now + 10, 300),
            Ok(())
        );
        // A rolled secret: the old and the new signature travel together.
        let rolled = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(
            verify_stripe_webhook(b"whsec_1", body, &rolled, now, 300),
            Ok(())
        );
        assert_eq!(
            verify_stripe_webhook(b"whsec_1", body, &header, now + 301, 300),
            Err(SignatureError::Stale {
                age_secs: 301,
                tolerance_secs: 300
            }),
            "a replay after the tolerance"
        );
        // The timestamp is signed: moving it forward breaks the signature.
        let moved = header.replace(&format!("t={now}"), &format!("t={}", now + 100));
        assert_eq!(
            verify_stripe_webhook(b"whsec_1", body, &moved, now + 100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe_webhook(b"whsec_1", body, "v1=abcd", now, 300),
            Err(SignatureError::Malformed("no t="))
        );
        assert_eq!(
            verify_stripe_webhook(b"whsec_1", body, &format!("t={now}"), now, 300),
            Err(SignatureError::Malformed("no v1="))
        );
    }
}
