//! The gRPC handlers: each takes the caller (if any) from the verified claims and calls one
//! domain function of [`Discovery`].

use duovarsity_common::auth::optional_caller;
use duovarsity_proto::discovery::discovery_service_server::DiscoveryService;
use duovarsity_proto::discovery::{SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use crate::Discovery;

/// `duovarsity.discovery.v1.DiscoveryService`.
#[derive(Clone)]
pub struct DiscoveryGrpc(pub Discovery);

#[tonic::async_trait]
impl DiscoveryService for DiscoveryGrpc {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let caller = optional_caller(&request).cloned();
        let found = self.0.search(caller.as_ref(), request.into_inner()).await?;
        Ok(Response::new(found))
    }
}
