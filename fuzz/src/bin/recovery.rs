//! Fuzz target: see `floodgate_fuzz::recovery`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        floodgate_fuzz::recovery(data);
    });
}
