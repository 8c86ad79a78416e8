//! Fuzz target: see `floodgate_fuzz::index`.
fn main() {
    afl::fuzz!(|data: &[u8]| floodgate_fuzz::index(data));
}
