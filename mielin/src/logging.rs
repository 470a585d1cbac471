//! Logs: one line per event on standard error, with a UTC timestamp and a level; `RUST_LOG`
//! filters them (`info` by default; e.g. `RUST_LOG=debug` adds each hand-off phase).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init() {
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match s.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (Targets::new().with_default(LevelFilter::INFO), Some((s, e))),
        },
        // Zenoh's own info lines (its session ids, its listeners) are not the operator's
        // events: warnings and errors only, unless RUST_LOG asks for more.
        _ => (
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("zenoh", LevelFilter::WARN),
            None,
        ),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
    if let Some((s, e)) = bad {
        tracing::warn!(
            "RUST_LOG={s:?} not understood ({e}): logging at info; write e.g. RUST_LOG=debug or RUST_LOG=warn"
        );
    }
}
