//! gRPC's standard health service (`grpc.health.v1.Health`), which etcd registers beside its own
//! with the server as a whole (service `""`) serving: Check answers SERVING for it and `unknown
//! service` (NotFound) for any other name, as gRPC's own health server does; Watch sends the
//! status (SERVICE_UNKNOWN for another name) and holds the stream open until the member stops.
//!
//! Runs on: every serving core.

use keelson_proto::health::health_check_response::ServingStatus;
use keelson_proto::health::health_server::Health;
use keelson_proto::health::{HealthCheckRequest, HealthCheckResponse};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::conn::send;
use super::{context, streaming};

/// The Health service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct HealthApi;

/// The status of `service`: the server's (`""`) is serving; there is no other.
fn status_of(service: &str) -> Option<ServingStatus> {
    service.is_empty().then_some(ServingStatus::Serving)
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = status_of(&request.into_inner().service)
            .ok_or_else(|| Status::not_found("unknown service"))?;
        Ok(Response::new(answer(status)))
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<BoxStream<HealthCheckResponse>>, Status> {
        let status =
            status_of(&request.into_inner().service).unwrap_or(ServingStatus::ServiceUnknown);
        let gone = context::with(|s| Ok(s.gone.clone()))?;
        let path = "/grpc.health.v1.Health/Watch";
        Ok(Response::new(streaming::serve(
            path,
            1,
            |mut out| async move {
                if send(&mut out, Ok(answer(status))).await {
                    gone.wait().await;
                }
                Ok(())
            },
        )))
    }
}
