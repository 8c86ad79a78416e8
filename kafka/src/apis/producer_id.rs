//! InitProducerId: an idempotent producer's id and epoch. A new producer gets an id the log has
//! never handed out (reserved durably, so ids survive restarts); one that asks again with its
//! id and epoch (v3 and later, after an error it cannot recover from otherwise) gets the next
//! epoch, which fences its older self. The partitions check each idempotent batch's sequence
//! in the writer (`floodgate` `Producer::try_append_batch`): a retry of a stored batch gets its
//! offset, a gap OUT_OF_ORDER_SEQUENCE_NUMBER. Transactional ids are refused: floodgate has no
//! transactions.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::conn::ThreadState;

pub(crate) async fn init_producer_id(
    state: &ThreadState,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        eprintln!(
            "floodgate serve: refused InitProducerId for transactional id {:?}: transactions \
             are not supported",
            req.transactional_id.as_ref().map(|t| t.as_str())
        );
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    // The same producer again: its next epoch, while epochs last.
    if req.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&req.producer_epoch) {
        response.producer_id = req.producer_id;
        response.producer_epoch = req.producer_epoch + 1;
        return response;
    }
    let log = std::sync::Arc::clone(&state.shared.log);
    match tokio::task::spawn_blocking(move || log.new_producer_id()).await {
        Ok(Ok(id)) => {
            response.producer_id = ProducerId(id as i64);
            response.producer_epoch = 0;
        }
        Ok(Err(e)) => {
            eprintln!("floodgate serve: no producer id: {e}");
            response.error_code = ResponseError::KafkaStorageError.code();
        }
        Err(_) => response.error_code = ResponseError::UnknownServerError.code(),
    }
    response
}
