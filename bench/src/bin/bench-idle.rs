//! Scenario (e): memory per idle session and one expiry sweep: `bench-idle --store NAME`.
//!
//! Options: `--store sessionkit|tower-sessions`, `--sessions N` (default
//! 1,000,000), `--expiring N` (default 10,000), `--out FILE` (appends one JSON
//! line).

use std::io::Write as _;

use bench::args::Args;
use bench::idle;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env(&[]);
    let sessions: u64 = args.get("sessions", 1_000_000);
    let expiring: u64 = args.get("expiring", 10_000);
    let outcome = match args.str("store").unwrap_or("sessionkit") {
        "sessionkit" => idle::sessionkit(sessions, expiring).await,
        "tower-sessions" => idle::tower_sessions(sessions).await,
        other => return Err(format!("unknown store {other:?}").into()),
    };
    eprintln!(
        "{:>22}        e: {:.0} bytes/session{}",
        outcome.variant,
        outcome.idle_bytes_per_session.unwrap_or(0.0),
        outcome.sweep_ms.map_or(String::new(), |ms| format!(
            ", sweep of {} expired: {ms:.2} ms",
            outcome.expired.unwrap_or(0)
        )),
    );
    let line = serde_json::to_string(&outcome)?;
    match args.str("out") {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{line}")?;
        }
        None => println!("{line}"),
    }
    Ok(())
}
