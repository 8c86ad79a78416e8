//! DescribeAcls, CreateAcls and DeleteAcls, answered as Kafka answers them on a broker with no
//! authorizer: SECURITY_DISABLED, for every filter and every creation. floodgate has no
//! authentication (it listens in plaintext, and every client is the same anonymous principal),
//! so an ACL could not tell one client from another: storing ACLs that nothing enforces would
//! leave an operator believing a topic is protected when it is not.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

/// Why every ACL request is refused.
const NO_AUTHORIZER: &str = "no authorizer is configured: floodgate has no authentication \
     (plaintext, one anonymous principal), so ACLs could not be enforced";

fn refusal() -> (i16, Option<StrBytes>) {
    (
        ResponseError::SecurityDisabled.code(),
        Some(StrBytes::from_static_str(NO_AUTHORIZER)),
    )
}

pub(crate) fn describe_acls(_req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut response = DescribeAclsResponse::default();
    (response.error_code, response.error_message) = refusal();
    response
}

pub(crate) fn create_acls(req: CreateAclsRequest) -> CreateAclsResponse {
    let mut response = CreateAclsResponse::default();
    response.results = (req.creations.iter())
        .map(|_| {
            let mut result = AclCreationResult::default();
            (result.error_code, result.error_message) = refusal();
            result
        })
        .collect();
    response
}

pub(crate) fn delete_acls(req: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut response = DeleteAclsResponse::default();
    response.filter_results = (req.filters.iter())
        .map(|_| {
            let mut result = DeleteAclsFilterResult::default();
            (result.error_code, result.error_message) = refusal();
            result
        })
        .collect();
    response
}
