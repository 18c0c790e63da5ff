//! The payment settings' rules: a real Razorpay comes with all its keys, Stripe's two
//! secrets go together, the checkout provider must be configured, and the payment
//! windows are in range. Without a Razorpay URL the built-in sandbox may be used (only
//! `duovarsity up` serves it, and by default only on a loopback address).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, within};

/// Who takes payments at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProvider {
    Razorpay,
    Stripe,
}

/// Whether the built-in Razorpay sandbox runs (`DUOVARSITY_PAYMENT_SANDBOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentSandbox {
    /// Only when the gateway listens on a loopback address (a laptop).
    Auto,
    /// Also on a public address: a demo that knowingly gives courses away.
    On,
    Off,
}

impl Config {
    /// Whether this configuration runs the payment sandbox (where the gateway runs in the
    /// same process and no real Razorpay is configured).
    pub fn payment_sandbox_enabled(&self) -> bool {
        self.razorpay_api_url.is_none()
            && match self.payment_sandbox {
                PaymentSandbox::On => true,
                PaymentSandbox::Off => false,
                PaymentSandbox::Auto => self.http_addr.ip().is_loopback(),
            }
    }

    pub(super) fn validate_payments(&self) -> Result<(), ConfigError> {
        if self.razorpay_api_url.is_some()
            && (self.razorpay_key_id.is_none()
                || self.razorpay_key_secret.is_none()
                || self.razorpay_webhook_secret.is_none())
        {
            return Err(ConfigError::setting(
                "razorpay_api_url",
                "a real Razorpay needs DUOVARSITY_RAZORPAY_KEY_ID, DUOVARSITY_RAZORPAY_KEY_SECRET and DUOVARSITY_RAZORPAY_WEBHOOK_SECRET too (unset it for the built-in sandbox)",
            ));
        }
        for (key, url) in [
            ("razorpay_api_url", self.razorpay_api_url.as_deref()),
            ("stripe_api_url", Some(self.stripe_api_url.as_str())),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::setting(
                    key,
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.payment_sandbox == PaymentSandbox::On && self.razorpay_api_url.is_some() {
            return Err(ConfigError::setting(
                "payment_sandbox",
                "is on, but DUOVARSITY_RAZORPAY_API_URL names a real Razorpay: choose one",
            ));
        }
        if self.stripe_secret_key.is_some() != self.stripe_webhook_secret.is_some() {
            return Err(ConfigError::setting(
                "stripe_webhook_secret",
                "DUOVARSITY_STRIPE_SECRET_KEY and DUOVARSITY_STRIPE_WEBHOOK_SECRET go together",
            ));
        }
        if self.payment_provider == PaymentProvider::Stripe && self.stripe_secret_key.is_none() {
            return Err(ConfigError::setting(
                "payment_provider",
                "stripe needs DUOVARSITY_STRIPE_SECRET_KEY and DUOVARSITY_STRIPE_WEBHOOK_SECRET",
            ));
        }
        within(
            "stripe_webhook_tolerance_secs",
            self.stripe_webhook_tolerance_secs,
            1..=3600,
        )?;
        if self.payment_refund_window_days > 3650 {
            return Err(ConfigError::setting(
                "payment_refund_window_days",
                "must be at most 3650",
            ));
        }
        if self.payment_instructor_share_bps > 10_000 {
            return Err(ConfigError::setting(
                "payment_instructor_share_bps",
                "must be between 0 and 10000",
            ));
        }
        within(
            "payment_reconcile_after_secs",
            self.payment_reconcile_after_secs,
            1..=7 * 24 * 3600,
        )?;
        if self.payment_order_ttl_secs <= self.payment_reconcile_after_secs
            || self.payment_order_ttl_secs > 30 * 24 * 3600
        {
            return Err(ConfigError::setting(
                "payment_order_ttl_secs",
                "must be longer than DUOVARSITY_PAYMENT_RECONCILE_AFTER_SECS and at most 30 days",
            ));
        }
        Ok(())
    }
}
