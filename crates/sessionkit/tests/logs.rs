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

// One thread, so the server's events reach this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn events_name_sessions_by_short_hash_and_never_by_id() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
