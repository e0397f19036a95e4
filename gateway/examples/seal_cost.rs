//! What `KeyRing::seal` costs for a short, a typical and a long value: prints one line per size,
//! `seal <bytes> B: <ns> ns` (the median of 9 timed runs of `iterations` seals each).
//!
//! `cargo run --release -p gateway --example seal_cost [iterations]`

use gateway::infra::cipher::KeyRing;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("iterations: a number"))
        .unwrap_or(20_000);
    let ring =
        KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".to_string()]).expect("a valid key");
    for size in [100, 200, 400, 4_000] {
        let plaintext = vec![0x5a; size];
        let mut runs: Vec<f64> = (0..9)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..iterations {
                    black_box(ring.seal(black_box(&plaintext), b"alice/m1"));
                }
                start.elapsed().as_nanos() as f64 / f64::from(iterations)
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        println!("seal {size} B: {:.0} ns", runs[4]);
    }
}
