//! `duovarsity.flags.v1.FlagService`: thin handlers over [`FlagOwner`]. The auth layer has
//! already enforced each method's `access` option (admins for everything but
//! EvaluateFlags).

use duovarsity_common::Error;
use duovarsity_common::auth::caller;
use duovarsity_common::flags::{self, BUILT_IN, FlagContext, FlagValue};
use duovarsity_common::time::timestamp_from_millis;
use duovarsity_common::validate::{page_size, page_token};
use duovarsity_proto::flags::flag_service_server::FlagService;
use duovarsity_proto::flags::{
    DeleteFlagRequest, DeleteFlagResponse, EvaluateFlagsRequest, EvaluateFlagsResponse,
    EvaluatedFlag, Flag, FlagChange, GetFlagHistoryRequest, GetFlagHistoryResponse, GetFlagRequest,
    ListChangesRequest, ListChangesResponse, ListFlagsRequest, ListFlagsResponse, PutFlagRequest,
};
use tonic::{Request, Response, Status};

use super::FlagOwner;
use super::json::{from_json, struct_from_json, struct_to_json};
use crate::store::flags::FlagRecord;

/// How long a client may reuse its evaluated flags (per user: `private`).
const EVALUATED_CACHE_CONTROL: &str = "private, max-age=5";

#[derive(Clone)]
pub struct FlagGrpc(pub FlagOwner);

fn definition(text: &str) -> Option<prost_types::Struct> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .map(|json| struct_from_json(&json))
}

fn flag(record: FlagRecord) -> Flag {
    Flag {
        definition: definition(&record.definition),
        key: record.key,
        updated_at: Some(timestamp_from_millis(record.updated_at)),
        updated_by: record.updated_by,
    }
}

impl FlagGrpc {
    /// One page of the audit trail of `subject` (all when `None`), and the next token.
    async fn changes(
        &self,
        subject: Option<&str>,
        requested_size: i32,
        token: &str,
        method: &str,
    ) -> Result<(Vec<FlagChange>, String), Error> {
        let size = page_size(requested_size, 50);
        let before = page_token::cursor(token, method, |id| {
            uuid::Uuid::parse_str(id).is_ok().then(|| id.to_string())
        })?;
        // One extra row tells whether another page exists.
        let records = self.0.history(subject, before.as_deref(), size + 1).await?;
        let (records, next_page_token) = page_token::page(records, size, |r| r.id.clone());
        let changes = records
            .into_iter()
            .map(|record| FlagChange {
                previous: record.previous.as_deref().and_then(definition),
                definition: record.definition.as_deref().and_then(definition),
                key: record.key,
                actor: record.actor,
                source: record.source,
                checksum: record.checksum,
                changed_at: Some(timestamp_from_millis(record.changed_at)),
            })
            .collect();
        Ok((changes, next_page_token))
    }
}

fn checked_key(key: &str) -> Result<(), Error> {
    flags::definition::check_key(key).map_err(|reason| Error::invalid("key", reason))
}

#[tonic::async_trait]
impl FlagService for FlagGrpc {
    async fn list_flags(
        &self,
        _: Request<ListFlagsRequest>,
    ) -> Result<Response<ListFlagsResponse>, Status> {
        let flags = self.0.list().await?.into_iter().map(flag).collect();
        Ok(Response::new(ListFlagsResponse { flags }))
    }

    async fn get_flag(&self, request: Request<GetFlagRequest>) -> Result<Response<Flag>, Status> {
        let key = request.into_inner().key;
        checked_key(&key)?;
        Ok(Response::new(flag(self.0.get(&key).await?)))
    }

    async fn put_flag(&self, request: Request<PutFlagRequest>) -> Result<Response<Flag>, Status> {
        let actor = caller(&request)?.sub.clone();
        let request = request.into_inner();
        checked_key(&request.key)?;
        let Some(definition) = &request.definition else {
            return Err(Error::invalid("definition", "send the flag's flagd definition").into());
        };
        let record = self
            .0
            .put(&request.key, &struct_to_json(definition), &actor)
            .await?;
        Ok(Response::new(flag(record)))
    }

    async fn delete_flag(
        &self,
        request: Request<DeleteFlagRequest>,
    ) -> Result<Response<DeleteFlagResponse>, Status> {
        let actor = caller(&request)?.sub.clone();
        let key = request.into_inner().key;
        checked_key(&key)?;
        self.0.delete(&key, &actor).await?;
        Ok(Response::new(DeleteFlagResponse {}))
    }

    async fn get_flag_history(
        &self,
        request: Request<GetFlagHistoryRequest>,
    ) -> Result<Response<GetFlagHistoryResponse>, Status> {
        let request = request.into_inner();
        checked_key(&request.key)?;
        let (changes, next_page_token) = self
            .changes(
                Some(&request.key),
                request.page_size,
                &request.page_token,
                "GetFlagHistory",
            )
            .await?;
        Ok(Response::new(GetFlagHistoryResponse {
            changes,
            next_page_token,
        }))
    }

    async fn list_changes(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        let request = request.into_inner();
        let subject = Some(request.subject.as_str()).filter(|s| !s.is_empty());
        let (changes, next_page_token) = self
            .changes(
                subject,
                request.page_size,
                &request.page_token,
                "ListChanges",
            )
            .await?;
        Ok(Response::new(ListChangesResponse {
            changes,
            next_page_token,
        }))
    }

    async fn evaluate_flags(
        &self,
        request: Request<EvaluateFlagsRequest>,
    ) -> Result<Response<EvaluateFlagsResponse>, Status> {
        let claims = caller(&request)?.clone();
        let course_id = request.into_inner().course_id;
        let mut context = FlagContext::caller(&claims);
        if !course_id.is_empty() {
            context = context.with_course(&course_id);
        }
        let set = self.0.flags().snapshot();
        let mut evaluated: Vec<EvaluatedFlag> = set
            .flags
            .values()
            .map(|defined| {
                let evaluation = flags::evaluate(defined, &context);
                EvaluatedFlag {
                    key: defined.key.to_string(),
                    variant: evaluation
                        .variant
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    value: evaluation
                        .value
                        .as_ref()
                        .map(|v| from_json(&FlagValue::to_json(v))),
                    reason: evaluation.reason.as_str().to_string(),
                }
            })
            .collect();
        for (key, on, _) in BUILT_IN {
            if !set.flags.contains_key(*key) && key != &"checkout-provider" {
                evaluated.push(EvaluatedFlag {
                    key: (*key).to_string(),
                    variant: String::new(),
                    value: Some(from_json(&serde_json::Value::Bool(*on))),
                    reason: "DEFAULT".to_string(),
                });
            }
        }
        evaluated.sort_by(|a, b| a.key.cmp(&b.key));
        let mut response = Response::new(EvaluateFlagsResponse { flags: evaluated });
        response.metadata_mut().insert(
            "cache-control",
            tonic::metadata::MetadataValue::from_static(EVALUATED_CACHE_CONTROL),
        );
        Ok(response)
    }
}
