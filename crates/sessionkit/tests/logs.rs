//! What sessionkit logs: events for operators, never a raw session id.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Server, cookie_id, raw};
use sessionkit::{CookieConfig, SessionConfig, SessionId};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures this thread's events from `level` up, until the guard drops.
fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

// One thread, so the server's events reach this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn events_name_sessions_by_short_hash_and_never_by_id() {
    let (logs, _guard) = capture(tracing::Level::TRACE);

    let server = Server::with(
        SessionConfig::builder()
            .lifetime(std::time::Duration::from_secs(1))
            .build()
            .unwrap(),
        CookieConfig::default(),
    )
    .await;
    let client = raw();
    let mut ids = Vec::new();

    // create, regenerate, destroy, a strict-mode rejection, an expiry.
    let res = client.post(server.url("/incr")).send().await.unwrap();
    let first = cookie_id(&res).unwrap();
    ids.push(first.clone());
    let res = client
        .post(server.url("/regenerate"))
        .header("cookie", format!("session={first}"))
        .send()
        .await
        .unwrap();
    let second = cookie_id(&res).unwrap();
    ids.push(second.clone());
    client
        .post(server.url("/destroy"))
        .header("cookie", format!("session={second}"))
        .send()
        .await
        .unwrap();
    let forged = SessionId::generate().expose();
    ids.push(forged.clone());
    client
        .get(server.url("/get/n"))
        .header("cookie", format!("session={forged}"))
        .send()
        .await
        .unwrap();
    let res = client.post(server.url("/incr")).send().await.unwrap();
    let third = cookie_id(&res).unwrap();
    ids.push(third.clone());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client
        .get(server.url("/get/n"))
        .header("cookie", format!("session={third}"))
        .send()
        .await
        .unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for event in [
        "session created",
        "session id regenerated",
        "session destroyed",
        "not adopted (strict mode)",
        "session expired",
    ] {
        assert!(text.contains(event), "missing event {event:?} in:\n{text}");
    }
    for id in &ids {
        assert!(
            !text.contains(id.as_str()),
            "a raw id leaked into the logs:\n{text}"
        );
        let short = SessionId::parse(id).unwrap().short_hash();
        assert!(text.contains(&short), "{short} not in:\n{text}");
    }
}

/// A value stored as one type and read as another (a type changed by a
/// deploy) used to fail every request of that client with a 500 until the
/// session ended. It reads as absent now: the handler goes on, its write
/// replaces the value, and the log names the key and the expected type,
/// never the value.
#[tokio::test(flavor = "current_thread")]
async fn a_value_of_another_type_reads_as_absent_and_the_warning_names_its_key_only() {
    const VALUE: &str = "not-a-number-s3cr3t";
    let (logs, _guard) = capture(tracing::Level::WARN);
    let server = Server::start().await;
    let client = raw();
    let res = client
        .post(server.url(&format!("/set/n/{VALUE}")))
        .send()
        .await
        .unwrap();
    let cookie = format!("session={}", cookie_id(&res).unwrap());
    // `/incr` reads `n` as a number.
    for expected in ["1", "2"] {
        let res = client
            .post(server.url("/incr"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), expected);
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("reads as absent").count(), 1, "{text}");
    assert!(text.contains("`n`") && text.contains("u64"), "{text}");
    assert!(
        !text.contains(VALUE),
        "the value leaked into the log:\n{text}"
    );
}
