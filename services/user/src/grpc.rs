//! The gRPC handlers: each decodes the request, takes the caller from the verified claims
//! (the auth layer has already enforced the method's `access` option) and calls one domain
//! function of [`Users`].

use duovarsity_common::auth::caller;
use duovarsity_proto::user::user_service_server::UserService;
use duovarsity_proto::user::{
    GetJwksRequest, GetMeRequest, GetUserRequest, Jwks, ListUsersRequest, ListUsersResponse,
    LoginRequest, LogoutRequest, LogoutResponse, RefreshRequest, RegisterRequest, RegisterResponse,
    SetRoleRequest, SetTierRequest, TokenPair, UpdateProfileRequest, User,
};
use tonic::{Request, Response, Status};

use crate::Users;

/// `duovarsity.user.v1.UserService` over the user domain.
#[derive(Clone)]
pub struct UserGrpc(pub Users);

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let user = self
            .0
            .register(&request.email, &request.password, &request.display_name)
            .await?;
        Ok(Response::new(RegisterResponse { user: Some(user) }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.0.login(&request.email, request.password).await?,
        ))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenPair>, Status> {
        let presented = request.into_inner().refresh_token;
        Ok(Response::new(self.0.refresh(&presented).await?))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        self.0.logout(&request.into_inner().refresh_token).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        let id = &caller(&request)?.sub;
        Ok(Response::new(self.0.me(id).await?))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<User>, Status> {
        let user_id = caller(&request)?.sub.clone();
        Ok(Response::new(
            self.0
                .update_profile(&user_id, request.into_inner())
                .await?,
        ))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(
            self.0.get_user(&request.into_inner().id).await?,
        ))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.0
                .list_users(request.page_size, &request.page_token)
                .await?,
        ))
    }

    async fn set_role(&self, request: Request<SetRoleRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.0.set_role(&request.id, request.role).await?,
        ))
    }

    async fn set_tier(&self, request: Request<SetTierRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.0.set_tier(&request.id, request.tier).await?,
        ))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(Jwks {
            keys: self.0.ring.jwks(),
        }))
    }
}
