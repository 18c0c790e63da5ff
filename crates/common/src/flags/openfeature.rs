//! An OpenFeature provider over [`Flags`], so that code written against the OpenFeature
//! API (`open_feature::OpenFeature::singleton_mut().await.set_provider(...)`) evaluates the
//! platform's flags unchanged. The evaluation context's `targetingKey` is the user id;
//! the custom fields `tier`, `role` and `courseId` are read as strings.

use std::collections::HashMap;

use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode,
    EvaluationReason, EvaluationResult, StructValue, Value,
};

use super::{FlagContext, FlagValue, Flags, Reason};

/// The platform's flags as an OpenFeature provider.
pub struct FlagsProvider {
    flags: Flags,
    metadata: ProviderMetadata,
}

impl FlagsProvider {
    pub fn new(flags: Flags) -> Self {
        Self {
            flags,
            metadata: ProviderMetadata::new("duovarsity"),
        }
    }

    fn resolve(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<(FlagValue, Option<String>, EvaluationReason)> {
        let field = |name: &str| match context.custom_fields.get(name) {
            Some(EvaluationContextFieldValue::String(value)) => Some(value.as_str()),
            _ => None,
        };
        let flag_context = FlagContext {
            user_id: context.targeting_key.as_deref().or_else(|| field("userId")),
            tier: field("tier"),
            role: field("role"),
            course_id: field("courseId"),
        };
        let evaluation = self.flags.evaluate(key, &flag_context).ok_or_else(|| {
            error(
                EvaluationErrorCode::FlagNotFound,
                format!("no flag {key:?}"),
            )
        })?;
        let reason = match evaluation.reason {
            Reason::Static => EvaluationReason::Static,
            Reason::TargetingMatch => EvaluationReason::TargetingMatch,
            Reason::Split => EvaluationReason::Split,
            Reason::Disabled => EvaluationReason::Disabled,
        };
        let value = evaluation.value.ok_or_else(|| {
            error(
                EvaluationErrorCode::General("disabled".into()),
                format!("flag {key:?} is DISABLED"),
            )
        })?;
        Ok((value, evaluation.variant.map(|v| v.to_string()), reason))
    }
}

fn error(code: EvaluationErrorCode, message: String) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message),
    }
}

fn mismatch(key: &str, wanted: &str) -> EvaluationError {
    error(
        EvaluationErrorCode::TypeMismatch,
        format!("flag {key:?} is not a {wanted} flag"),
    )
}

fn details<T>(value: T, variant: Option<String>, reason: EvaluationReason) -> ResolutionDetails<T> {
    ResolutionDetails {
        value,
        variant,
        reason: Some(reason),
        flag_metadata: None,
    }
}

/// A JSON value as OpenFeature's value type.
fn to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Struct(StructValue::default()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Value::Float(n.as_f64().unwrap_or_default()), Value::Int),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_value).collect()),
        serde_json::Value::Object(object) => Value::Struct(StructValue {
            fields: object
                .iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<HashMap<_, _>>(),
        }),
    }
}

#[open_feature::async_trait]
impl FeatureProvider for FlagsProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        ProviderStatus::Ready
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        match self.resolve(key, context)? {
            (FlagValue::Bool(value), variant, reason) => Ok(details(value, variant, reason)),
            _ => Err(mismatch(key, "boolean")),
        }
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        match self.resolve(key, context)? {
            (FlagValue::Number(value), variant, reason) if value.fract() == 0.0 => {
                Ok(details(value as i64, variant, reason))
            }
            _ => Err(mismatch(key, "whole-number")),
        }
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        match self.resolve(key, context)? {
            (FlagValue::Number(value), variant, reason) => Ok(details(value, variant, reason)),
            _ => Err(mismatch(key, "number")),
        }
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        match self.resolve(key, context)? {
            (FlagValue::String(value), variant, reason) => {
                Ok(details(value.to_string(), variant, reason))
            }
            _ => Err(mismatch(key, "string")),
        }
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        match self.resolve(key, context)? {
            (FlagValue::Json(value), variant, reason) => match to_value(&value) {
                Value::Struct(value) => Ok(details(value, variant, reason)),
                _ => Err(mismatch(key, "object")),
            },
            _ => Err(mismatch(key, "object")),
        }
    }
}
