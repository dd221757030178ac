//! The load generator and the report: `bench-load run …`, `bench-load report FILE`.
//!
//! `run` options: `--addr` (the server, loopback only), `--users U`,
//! `--concurrency C`, `--duration SECS` or `--requests N` (with `--rounds
//! R`), `--warmup SECS`,
//! `--mix /read:90,/incr:10`, `--no-cookies` (new-session storm), `--same-user
//! K`, `--check` (lost updates), `--server-pid PID`, `--redis-port P`,
//! `--memcached-port P`, `--monitor` (count Redis round trips),
//! `--variant` and `--scenario` (labels), `--out FILE`
//! (appends one JSON line). `quiet` waits (at most `--max` seconds) until
//! the machine is idle; `free-port` prints a free loopback port.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bench::args::Args;
use bench::load::{self, LoadConfig};
use bench::report;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env(&["no-cookies", "check", "monitor"]);
    match args.positional().first().map(String::as_str) {
        Some("run") => run(&args).await,
        Some("report") => {
            let file = args
                .positional()
                .get(1)
                .ok_or("report needs a results file")?;
            let outcomes = report::parse(&std::fs::read_to_string(file)?)?;
            print!("{}", report::render(&outcomes));
            Ok(())
        }
        Some("quiet") => {
            // Waits (bounded) until other work on the machine has calmed
            // down, so that a measurement does not share the cores with a
            // compiler; says how busy the machine still is.
            let max = Duration::from_secs_f64(args.get("max", 10.0));
            let limit: f64 = args.get("below", 0.15);
            let start = std::time::Instant::now();
            let sample = Duration::from_millis(250);
            let mut busy = bench::probe::machine_busy_cores(sample);
            while busy > limit && start.elapsed() < max {
                busy = bench::probe::machine_busy_cores(sample);
            }
            if busy > limit {
                eprintln!("note: the machine is busy with other work ({busy:.2} cores)");
            }
            Ok(())
        }
        Some("free-port") => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            Ok(())
        }
        _ => Err("usage: bench-load run … | report FILE | quiet [--max SECS] | free-port".into()),
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = args.opt("addr").ok_or("--addr is required")?;
    if !addr.ip().is_loopback() {
        return Err("the benchmark sends traffic to loopback addresses only".into());
    }
    let config = LoadConfig {
        addr,
        users: args.get("users", 1000),
        concurrency: args.get("concurrency", 64),
        duration: Duration::from_secs_f64(args.get("duration", 10.0)),
        requests: args.opt("requests"),
        rounds: args.get("rounds", 1),
        warmup: Duration::from_secs_f64(args.get("warmup", 2.0)),
        mix: load::parse_mix(args.str("mix").unwrap_or("/read:90,/incr:10"))?,
        cookies: !args.flag("no-cookies"),
        same_user: args.get("same-user", 1),
        check: args.flag("check"),
        server_pid: args.opt("server-pid"),
        redis_port: args.opt("redis-port"),
        memcached_port: args.opt("memcached-port"),
        monitor: args.flag("monitor"),
    };
    let variant = args.str("variant").unwrap_or("?");
    let scenario = args.str("scenario").unwrap_or("?");
    let outcome = load::run(config, variant, scenario).await;
    let line = serde_json::to_string(&outcome)?;
    eprintln!(
        "{variant:>22} {scenario:>8}: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms  errors {}  lost {}  cpu {} µs/req",
        outcome.rps,
        outcome.p50_ms,
        outcome.p99_ms,
        outcome.max_ms,
        outcome.errors,
        match (outcome.lost, outcome.acked) {
            (Some(l), Some(a)) if outcome.lost_rounds.is_empty() => format!("{l}/{a}"),
            (Some(l), Some(a)) => format!("{l}/{a} (median; rounds {:?})", outcome.lost_rounds),
            _ => "—".into(),
        },
        outcome
            .cpu_us_per_req
            .map_or("—".into(), |c| format!("{c:.1}")),
    );
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
