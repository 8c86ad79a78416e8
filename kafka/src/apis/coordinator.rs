//! FindCoordinator: consumer groups and transactions are not served yet, so every key gets
//! COORDINATOR_NOT_AVAILABLE, which clients retry. Advertising the API matters on its own:
//! librdkafka takes it as the mark of a broker that decodes LZ4 (KIP-57) and would not compress
//! with lz4 for one that lacks it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

const WHY: &str = "floodgate serve has no group or transaction coordinator yet";

pub(crate) fn find_coordinator(
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    let code = ResponseError::CoordinatorNotAvailable.code();
    if version >= 4 {
        response.coordinators = (req.coordinator_keys.into_iter())
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = code;
                c.error_message = Some(StrBytes::from_static_str(WHY));
                c
            })
            .collect();
    } else {
        response.error_code = code;
        response.error_message = Some(StrBytes::from_static_str(WHY));
        response.node_id = BrokerId(-1);
        response.port = -1;
    }
    response
}
