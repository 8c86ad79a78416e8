//! Fuzz target: see `floodgate_fuzz::frame`.
fn main() {
    afl::fuzz!(|data: &[u8]| floodgate_fuzz::frame(data));
}
