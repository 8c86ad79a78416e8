//! Fuzz targets for everything floodgate decodes from disk or the network; see README.md.

mod props;

pub use props::*;

/// A request frame's body as the Kafka front decodes it (header, body at its version, a
/// Produce's record sets): an error or a request, never a panic.
pub fn request(data: &[u8]) {
    let _ = floodgate_kafka::check_request(bytes::Bytes::copy_from_slice(data));
}
