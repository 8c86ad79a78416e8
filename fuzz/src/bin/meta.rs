//! Fuzz target: see `floodgate_fuzz::meta`.
fn main() {
    afl::fuzz!(|data: &[u8]| floodgate_fuzz::meta(data));
}
