//! Measurements outside the client: `/proc` figures and store counters.
//!
//! A process's CPU time and memory from `/proc`, the machine's busy time, and
//! a Redis or memcached server's command counts and memory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// User plus system CPU time, in microseconds.
    pub cpu_us: u64,
    /// Resident set size, in bytes (`VmRSS`).
    pub rss: u64,
    /// Peak resident set size, in bytes (`VmHWM`).
    pub hwm: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`,
/// 100 on every Linux this runs on when `getconf` is missing).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `pid` 0 is this
/// process.
pub fn proc_stat(pid: u32, ticks: u64) -> std::io::Result<ProcStat> {
    let dir = if pid == 0 {
        "/proc/self".to_owned()
    } else {
        format!("/proc/{pid}")
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    // The command name is in parentheses and may hold spaces; the fields
    // after it are numbered from 3 (state). utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu_ticks = tick(14).unwrap_or(0) + tick(15).unwrap_or(0);
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcStat {
        cpu_us: cpu_ticks * 1_000_000 / ticks.max(1),
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
    })
}

/// CPU time the whole machine spent busy (all cores, everything but idle
/// and iowait) since boot, in microseconds, from `/proc/stat`.
pub fn machine_busy_us(ticks: u64) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or("");
    // cpu user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user.
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 8 | 9))
        .map(|(_, v)| v)
        .sum();
    Ok(busy * 1_000_000 / ticks.max(1))
}

/// Samples the machine for `over`: the cores busy on average.
pub fn machine_busy_cores(over: Duration) -> f64 {
    let ticks = clock_ticks();
    let before = machine_busy_us(ticks).unwrap_or(0);
    std::thread::sleep(over);
    let after = machine_busy_us(ticks).unwrap_or(0);
    (after.saturating_sub(before)) as f64 / over.as_micros().max(1) as f64
}

/// Counters of a store server at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStat {
    /// Calls per command since the server started.
    pub commands: BTreeMap<String, u64>,
    /// Memory the server holds for data, in bytes (Redis `used_memory`,
    /// memcached `bytes`).
    pub memory: u64,
    /// The server's process id.
    pub pid: u32,
}

/// Commands the benchmark itself sends, or that clients send only when they
/// connect; left out of the per-request counts.
const HOUSEKEEPING: &[&str] = &[
    "info", "flushall", "ping", "hello", "client", "config", "select", "command", "script",
    "stats", "monitor",
];

/// Whether `name` (Redis 7 names subcommands `script|load`) is one of
/// [`HOUSEKEEPING`].
fn is_housekeeping(name: &str) -> bool {
    let base = name.split('|').next().unwrap_or(name);
    HOUSEKEEPING.contains(&base)
}

impl StoreStat {
    /// Commands per name issued between `before` and `self`, without the
    /// benchmark's own.
    pub fn commands_since(&self, before: &StoreStat) -> BTreeMap<String, u64> {
        self.commands
            .iter()
            .filter(|(name, _)| !is_housekeeping(name))
            .map(|(name, n)| {
                (
                    name.clone(),
                    n - before.commands.get(name).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends one Redis command and returns its reply as text (bulk and simple
/// strings and integers; enough for `INFO` and `FLUSHALL`).
pub fn redis_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = connect(port)?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(reply) = complete_reply(&buf) {
            return Ok(reply);
        }
    }
    Err(std::io::Error::other("redis closed the connection"))
}

fn complete_reply(buf: &[u8]) -> Option<String> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&buf[..line_end]).ok()?;
    match head.as_bytes().first()? {
        b'$' => {
            let len: usize = head[1..].parse().ok()?;
            let start = line_end + 2;
            (buf.len() >= start + len + 2)
                .then(|| String::from_utf8_lossy(&buf[start..start + len]).into_owned())
        }
        b'+' | b':' | b'-' => Some(head[1..].to_owned()),
        _ => Some(head.to_owned()),
    }
}

/// Redis command counts, `used_memory` and the server's pid.
pub fn redis_stat(port: u16) -> std::io::Result<StoreStat> {
    let text = redis_command(port, &["INFO", "all"])?;
    let mut stat = StoreStat::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            // cmdstat_get:calls=12,usec=…
            if let Some((name, fields)) = rest.split_once(':') {
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                stat.commands.insert(name.to_ascii_lowercase(), calls);
            }
        } else if let Some(v) = line.strip_prefix("used_memory:") {
            stat.memory = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("process_id:") {
            stat.pid = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(stat)
}

/// Memcached command counts (`cmd_*` of `stats`), `bytes` and the pid.
pub fn memcached_stat(port: u16) -> std::io::Result<StoreStat> {
    let mut stream = connect(port)?;
    stream.write_all(b"stats\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !buf.ends_with(b"END\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut stat = StoreStat::default();
    for line in String::from_utf8_lossy(&buf).lines() {
        let mut words = line.split_whitespace().skip(1);
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        if let Some(cmd) = key.strip_prefix("cmd_") {
            stat.commands.insert(cmd.to_owned(), value);
        } else if key == "bytes" {
            stat.memory = value;
        } else if key == "pid" {
            stat.pid = value as u32;
        }
    }
    Ok(stat)
}

/// Counts the commands Redis receives from clients, through `MONITOR`, from
/// [`Monitor::start`] to [`Monitor::stop`].
///
/// `INFO commandstats` also counts the commands that Lua scripts run inside
/// `EVAL`/`EVALSHA`, so it cannot tell round trips from work done on the
/// server; `MONITOR` marks those as `[… lua]`, and they are left out here.
/// `MONITOR` slows Redis down: use it only where the request rate is not
/// the measured figure.
#[derive(Debug)]
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, u64>>,
}

impl Monitor {
    /// Opens a `MONITOR` connection to the Redis server on `port`.
    pub fn start(port: u16) -> std::io::Result<Monitor> {
        let mut stream = connect(port)?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.write_all(b"MONITOR\r\n")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut counts = BTreeMap::new();
            let mut pending = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            while !flag.load(Ordering::Acquire) {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(_) => break,
                }
                let mut start = 0;
                while let Some(end) = pending[start..].windows(2).position(|w| w == b"\r\n") {
                    count_monitor_line(&pending[start..start + end], &mut counts);
                    start += end + 2;
                }
                pending.drain(..start);
            }
            counts
        });
        Ok(Monitor { stop, thread })
    }

    /// Stops counting; the client commands seen, by name, without the
    /// benchmark's own.
    pub fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or_default()
    }
}

/// Counts one `MONITOR` line: `+1700000000.123456 [0 127.0.0.1:5000] "GET" "k"`.
fn count_monitor_line(line: &[u8], counts: &mut BTreeMap<String, u64>) {
    let text = String::from_utf8_lossy(line);
    let Some((_, rest)) = text.split_once('[') else {
        return;
    };
    let Some((source, command)) = rest.split_once(']') else {
        return;
    };
    if source.ends_with(" lua") {
        return;
    }
    let name = command
        .trim_start()
        .strip_prefix('"')
        .and_then(|c| c.split('"').next())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !name.is_empty() && !is_housekeeping(&name) {
        *counts.entry(name).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let s = proc_stat(0, clock_ticks()).unwrap();
        assert!(s.rss > 0 && s.hwm >= s.rss);
    }

    #[test]
    fn replies_are_parsed_when_complete() {
        assert_eq!(complete_reply(b"$3\r\nab"), None);
        assert_eq!(complete_reply(b"$3\r\nabc\r\n").as_deref(), Some("abc"));
        assert_eq!(complete_reply(b"+OK\r\n").as_deref(), Some("OK"));
    }

    #[test]
    fn monitor_lines_skip_scripts() {
        let mut counts = BTreeMap::new();
        count_monitor_line(
            b"+1.2 [0 127.0.0.1:5000] \"EVALSHA\" \"ab\" \"1\"",
            &mut counts,
        );
        count_monitor_line(b"+1.2 [0 lua] \"HGETALL\" \"k\"", &mut counts);
        count_monitor_line(b"+1.2 [0 127.0.0.1:5000] \"info\"", &mut counts);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("evalsha".to_owned(), 1)]
        );
    }

    #[test]
    fn housekeeping_is_left_out() {
        let before = StoreStat::default();
        let mut after = StoreStat::default();
        after.commands.insert("get".into(), 3);
        after.commands.insert("info".into(), 9);
        assert_eq!(after.commands_since(&before).len(), 1);
    }
}
