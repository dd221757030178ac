//! Criterion micro-benchmarks of sessionkit's hot paths: `cargo bench -p bench`.
//!
//! - ids: `SessionId::generate`, `SessionId::parse` (valid and malformed);
//! - the layer on a request that never touches its session, with a cookie
//!   (the cookie parser is private, so this goes through `SessionLayer` with
//!   `tower::ServiceExt::oneshot` over a trivial service), and on a request
//!   that creates a session (scenario (b) of the load benchmark without
//!   HTTP);
//! - the codec: `encode_record`/`decode_record`, `encode_value`/`decode_value`;
//! - `Session::get`/`insert` on a loaded session;
//! - `MemoryStore::load`/`apply`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use sessionkit::{SessionConfig, SessionFactory, SessionId, SessionLayer};
use sessionkit_core::codec::{decode_record, decode_value, encode_record, encode_value};
use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Created, MemoryStore, SessionStore};
use tower::{Layer, ServiceExt};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn ids(c: &mut Criterion) {
    let mut g = c.benchmark_group("id");
    g.bench_function("generate", |b| b.iter(SessionId::generate));
    let text = SessionId::generate().expose();
    g.bench_function("parse valid", |b| {
        b.iter(|| SessionId::parse(black_box(&text)))
    });
    let bad = format!("{}!", &text[..42]);
    g.bench_function("parse malformed", |b| {
        b.iter(|| SessionId::parse(black_box(&bad)))
    });
    let id = SessionId::generate();
    g.bench_function("expose", |b| b.iter(|| black_box(&id).expose()));
    g.finish();
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    let layer = rt.block_on(async { SessionLayer::new(MemoryStore::new()) });
    let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let cookie = format!(
        "theme=dark; session={}; lang=en",
        SessionId::generate().expose()
    );
    let mut g = c.benchmark_group("layer");
    g.bench_function("untouched request with cookie", |b| {
        b.iter(|| {
            let req = Request::builder()
                .uri("/plain")
                .header("cookie", cookie.as_str())
                .body(())
                .expect("a valid request");
            rt.block_on(svc.clone().oneshot(req))
        })
    });
    g.bench_function("untouched request without cookie", |b| {
        b.iter(|| {
            let req = Request::builder()
                .uri("/plain")
                .body(())
                .expect("a valid request");
            rt.block_on(svc.clone().oneshot(req))
        })
    });
    // Every iteration stores a new session: each batch gets a store of its
    // own, made and dropped outside the timing, so memory stays bounded and
    // the maps stay the size of one batch.
    g.bench_function("request that creates a session", |b| {
        b.iter_custom(|iters| {
            let creating = rt.block_on(async {
                let store = MemoryStore::builder().sweep_interval(None).build();
                SessionLayer::new(store).layer(tower::service_fn(|req: Request<()>| async move {
                    let session = req
                        .extensions()
                        .get::<sessionkit::Session>()
                        .expect("the layer puts the session in the extensions")
                        .clone();
                    session.insert("n", &1u64).expect("a u64 encodes");
                    Ok::<_, Infallible>(Response::new(String::new()))
                }))
            });
            let start = Instant::now();
            for _ in 0..iters {
                let req = Request::builder()
                    .method("POST")
                    .uri("/incr")
                    .body(())
                    .expect("a valid request");
                let res = rt.block_on(creating.clone().oneshot(req));
                debug_assert!(res.is_ok_and(|r| r.headers().contains_key("set-cookie")));
            }
            let took = start.elapsed();
            drop(creating);
            took
        })
    });
    g.finish();
}

fn sample_record() -> Record {
    Record {
        entries: [
            ("basket", b"[\"apple\",\"pear\"]".to_vec()),
            ("n", b"42".to_vec()),
            ("user", b"\"ada\"".to_vec()),
        ]
        .into_iter()
        .collect::<Entries>(),
        meta: Meta::new(now_ms(), Duration::from_secs(7200), None),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let record = sample_record();
    let blob = encode_record(&record);
    g.bench_function("encode_record", |b| {
        b.iter(|| encode_record(black_box(&record)))
    });
    g.bench_function("decode_record", |b| {
        b.iter(|| decode_record(black_box(&blob)))
    });
    g.bench_function("encode_value u64", |b| {
        b.iter(|| encode_value(black_box(&42u64)))
    });
    g.bench_function("decode_value u64", |b| {
        b.iter(|| decode_value::<u64>(black_box(b"42")))
    });
    let basket = vec!["apple".to_owned(), "pear".to_owned()];
    let bytes = encode_value(&basket).expect("a basket encodes");
    g.bench_function("encode_value Vec<String>", |b| {
        b.iter(|| encode_value(black_box(&basket)))
    });
    g.bench_function("decode_value Vec<String>", |b| {
        b.iter(|| decode_value::<Vec<String>>(black_box(&bytes)))
    });
    g.finish();
}

fn session(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(async { MemoryStore::builder().sweep_interval(None).build() });
    let factory = SessionFactory::new(store.clone(), SessionConfig::default());
    let id = rt.block_on(async {
        let s = factory.request(None);
        s.insert("n", &41u64).expect("encodes");
        s.insert("user", &"ada").expect("encodes");
        let _ = s.finish(sessionkit::Outcome::Success).await;
        s.id().expect("a written session has an id")
    });
    let loaded = factory.request(id);
    rt.block_on(loaded.get::<u64>("n")).expect("loads");
    let mut g = c.benchmark_group("session");
    // What `block_on` itself costs, to subtract from the async figures.
    g.bench_function("baseline: block_on of a ready future", |b| {
        b.iter(|| rt.block_on(std::future::ready(black_box(1u64))))
    });
    g.bench_function("get u64 on a loaded session", |b| {
        b.iter(|| rt.block_on(loaded.get::<u64>(black_box("n"))))
    });
    g.bench_function("insert u64 on a loaded session", |b| {
        b.iter(|| loaded.insert(black_box("n"), &42u64))
    });
    g.bench_function("new handle + first get (one store load)", |b| {
        b.iter(|| {
            let s = factory.request(id);
            rt.block_on(s.get::<u64>("n"))
        })
    });
    g.finish();
}

fn memory_store(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(async { MemoryStore::builder().sweep_interval(None).build() });
    // A store with other sessions in it, so the shard maps are not trivial.
    let ids: Vec<SessionId> = (0..10_000).map(|_| SessionId::generate()).collect();
    rt.block_on(async {
        for id in &ids {
            let created = store
                .create(id, &sample_record())
                .await
                .expect("memory store");
            assert_eq!(created, Created::Created);
        }
    });
    let id = ids[1234];
    let touch = Touch::when_remaining_below(0.75).expect("a valid share");
    let mut delta = Delta::default();
    delta.set("n", encode_value(&43u64).expect("encodes"));
    let mut g = c.benchmark_group("memory store");
    g.bench_function("load", |b| {
        b.iter(|| rt.block_on(store.load(black_box(&id), Some(touch))))
    });
    g.bench_function("apply one key", |b| {
        b.iter(|| rt.block_on(store.apply(black_box(&id), &delta, None)))
    });
    g.finish();
}

criterion_group!(benches, ids, layer, codec, session, memory_store);
criterion_main!(benches);
