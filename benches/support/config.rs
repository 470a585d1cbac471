//! The criterion settings every bench uses: 20 samples of 2 s after a 0.5 s warm-up, so the
//! whole suite runs in a few minutes on a 2-core machine.

use criterion::Criterion;
use std::time::Duration;

pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}
