//! The gRPC handlers of `duovarsity.ai.v1.AiRoutingService`: each takes the caller from
//! the verified claims and calls the router. Answers carry `x-duovarsity-model` and
//! `x-duovarsity-cache` (hit or miss) as response metadata, which the gateway passes on as
//! headers.

use duovarsity_common::Error;
use duovarsity_common::auth::caller;
use duovarsity_common::flags::{FlagContext, Flags};
use duovarsity_common::grpc::Onward;
use duovarsity_proto::ai::ai_routing_service_server::AiRoutingService;
use duovarsity_proto::ai::*;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::Router;
use crate::answer::{Caller, humantime_utc};
use crate::budget::today;
use crate::convert::{chunk, completion, completion_id};

#[derive(Clone)]
pub struct AiGrpc {
    pub router: Router,
    /// `ai-tutor`: whether the caller may ask the tutor at all.
    pub flags: Flags,
}

/// The caller of a completion, once the `ai-tutor` flag lets them in (403
/// `FEATURE_DISABLED` otherwise: a rollout that has not reached them, or the kill switch).
fn tutor_caller<T>(flags: &Flags, request: &Request<T>) -> Result<Caller, Error> {
    let claims = caller(request)?;
    if !flags.enabled(AI_TUTOR, &FlagContext::caller(claims)) {
        return Err(Error::permission_denied(
            "FEATURE_DISABLED",
            "the AI tutor is not available to you yet",
        ));
    }
    caller_of(request)
}

fn caller_of<T>(request: &Request<T>) -> Result<Caller, Error> {
    let claims = caller(request)?;
    // A throttled learner (an admin's decision, enforced by the gateway's rate limits)
    // gets the models and budget of the free tier.
    let tier = match claims.tier.as_str() {
        "throttled" => "free".to_string(),
        tier => tier.to_string(),
    };
    Ok(Caller {
        user: claims.sub.clone(),
        tier,
        onward: Onward::of(request),
    })
}

fn with_headers<T>(message: T, model: &str, cached: bool) -> Response<T> {
    let mut response = Response::new(message);
    if let Ok(model) = MetadataValue::try_from(model) {
        response.metadata_mut().insert("x-duovarsity-model", model);
    }
    let cache = if cached { "hit" } else { "miss" };
    response
        .metadata_mut()
        .insert("x-duovarsity-cache", MetadataValue::from_static(cache));
    response
}

/// The flag that turns the tutor on and off.
const AI_TUTOR: &str = "ai-tutor";

const NANO_PER_USD: f64 = 1e9;

#[tonic::async_trait]
impl AiRoutingService for AiGrpc {
    async fn complete(
        &self,
        request: Request<ChatCompletionRequest>,
    ) -> Result<Response<ChatCompletion>, Status> {
        let who = tutor_caller(&self.flags, &request)?;
        let answer = self.router.complete(&who, request.get_ref()).await?;
        Ok(with_headers(
            completion(&answer),
            &answer.model,
            answer.cached,
        ))
    }

    type StreamCompleteStream = BoxStream<'static, Result<ChatCompletionChunk, Status>>;

    async fn stream_complete(
        &self,
        request: Request<ChatCompletionRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let who = tutor_caller(&self.flags, &request)?;
        let opened = self.router.stream(&who, request.get_ref()).await?;
        let id = completion_id();
        let model = opened.model.clone();
        let chunks = opened
            .pieces
            .enumerate()
            .map(move |(n, piece)| match piece {
                Ok(piece) => Ok(chunk(&id, &model, piece, n == 0)),
                Err(error) => Err(Status::from(error)),
            })
            .boxed();
        Ok(with_headers(chunks, &opened.model, opened.cached))
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ModelList>, Status> {
        let who = caller_of(&request)?;
        let live = self.router.catalog.current();
        let model = |id: &str, owned_by: &str| Model {
            id: id.to_string(),
            object: "model".into(),
            created: 0,
            owned_by: owned_by.to_string(),
        };
        let mut data: Vec<Model> = live
            .catalog
            .models
            .iter()
            .filter(|m| m.allows(&who.tier))
            .map(|m| model(&m.name, &m.provider))
            .collect();
        for alias in ["auto", "default"].into_iter().chain(crate::catalog::TASKS) {
            data.push(model(alias, "duovarsity-router"));
        }
        Ok(Response::new(ModelList {
            object: "list".into(),
            data,
        }))
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<Usage>, Status> {
        let who = caller_of(&request)?;
        let router = &self.router;
        let live = router.catalog.current();
        let spent = router.budgets.spent(&who.user).await?;
        let (day, resets) = today();
        let since = day * 86_400_000;
        router.usage.flush().await;
        let (requests, hits, recent) =
            crate::store::usage::of_user(&router.db, &who.user, since, 10).await?;
        Ok(Response::new(Usage {
            tier: who.tier.clone(),
            spent_usd: spent as f64 / NANO_PER_USD,
            budget_usd: live
                .catalog
                .daily_budget
                .get(&who.tier)
                .copied()
                .unwrap_or(0) as f64
                / NANO_PER_USD,
            resets_at: humantime_utc(resets),
            requests_today: requests,
            cache_hits_today: hits,
            recent: recent
                .iter()
                .map(|row| UsageRecord {
                    id: row.id.clone(),
                    model: row.model.clone(),
                    task: row.task.clone(),
                    prompt_tokens: i32::try_from(row.prompt_tokens).unwrap_or(i32::MAX),
                    completion_tokens: i32::try_from(row.completion_tokens).unwrap_or(i32::MAX),
                    cost_usd: row.cost_nano as f64 / NANO_PER_USD,
                    cached: row.cached,
                    latency_ms: i32::try_from(row.latency_ms).unwrap_or(i32::MAX),
                    at: humantime_utc(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(row.created_at.max(0) as u64),
                    ),
                })
                .collect(),
        }))
    }
}
