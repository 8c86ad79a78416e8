//! Fuzz target: see `floodgate_fuzz::request`.
fn main() {
    afl::fuzz!(|data: &[u8]| floodgate_fuzz::request(data));
}
