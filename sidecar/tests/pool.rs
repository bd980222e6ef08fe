//! The keep-alive pool toward the local app (`portcullis_sidecar::upstream::pool`), against a real app
//! on 127.0.0.1 that counts its connections and can close them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis_sidecar::base::body::{ProxyBody, empty};
use portcullis_sidecar::upstream::pool::{LocalPool, PoolError};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The time allowed for an answer's head.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A test app: answers `/big` with 1 MiB, `/close` with `Connection: close`, anything else
/// with its path; counts accepted connections; `drop_idle` closes every open connection.
struct App {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    drop_idle: Arc<Notify>,
}

impl App {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let drop_idle = Arc::new(Notify::new());
        let (count, dropper) = (connections.clone(), drop_idle.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let dropper = dropper.clone();
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let mut resp = match path.as_str() {
                            "/big" => Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20]))),
                            _ => Response::new(Full::new(Bytes::from(path.clone()))),
                        };
                        if path == "/close" {
                            resp.headers_mut().insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    });
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = dropper.notified() => {}
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            drop_idle,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::get(path).header("host", "app").body(empty()).unwrap()
}

async fn call(pool: &LocalPool, port: u16, path: &str) -> Bytes {
    let resp = pool.send(port, get(path), TIMEOUT).await.expect("answered");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let app = App::start().await;
    let pool = LocalPool::new(Duration::from_secs(1));
    for i in 0..20 {
        let path = format!("/n/{i}");
        assert_eq!(call(&pool, app.addr.port(), &path).await, path.as_bytes());
    }
    assert_eq!(app.connections(), 1, "keep-alive: one connection for 20 calls");
    assert_eq!(pool.idle(app.addr.port()), 1);
}

#[tokio::test]
async fn concurrent_calls_open_more_and_keep_them() {
    let app = App::start().await;
    let pool = LocalPool::new(Duration::from_secs(1));
    let port = app.addr.port();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { call(&pool, port, &format!("/c/{i}")).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let opened = app.connections();
    assert!((1..=8).contains(&opened), "{opened}");
    assert_eq!(pool.idle(port), opened, "every connection back in the pool");
    for _ in 0..8 {
        call(&pool, port, "/again").await;
    }
    assert_eq!(app.connections(), opened, "the pooled connections are reused");
}

#[tokio::test]
async fn a_body_dropped_half_read_does_not_return_its_connection() {
    let app = App::start().await;
    let pool = LocalPool::new(Duration::from_secs(1));
    let port = app.addr.port();
    let resp = pool.send(port, get("/big"), TIMEOUT).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(pool.idle(port), 0, "a connection with unread bytes is never reused");
    assert_eq!(call(&pool, port, "/after").await, "/after".as_bytes());
    assert_eq!(app.connections(), 2);
}

#[tokio::test]
async fn connection_close_answers_are_not_pooled() {
    let app = App::start().await;
    let pool = LocalPool::new(Duration::from_secs(1));
    let port = app.addr.port();
    call(&pool, port, "/close").await;
    call(&pool, port, "/next").await;
    assert_eq!(app.connections(), 2, "the closed connection was not reused");
}

#[tokio::test]
async fn connections_the_app_closed_while_idle_are_replaced() {
    let app = App::start().await;
    let pool = LocalPool::new(Duration::from_secs(1));
    let port = app.addr.port();
    call(&pool, port, "/one").await;
    assert_eq!(pool.idle(port), 1);
    app.drop_idle.notify_waiters();
    // However soon the pool notices, the next call must not fail.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(call(&pool, port, "/two").await, "/two".as_bytes());
    assert_eq!(app.connections(), 2);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool = LocalPool::new(Duration::from_secs(1));
    match pool.send(port, get("/"), TIMEOUT).await {
        Err(PoolError::Connect { port: p, .. }) => assert_eq!(p, port),
        other => panic!("expected a connect error, got {:?}", other.map(|r| r.status())),
    }
}

#[tokio::test]
async fn ports_have_separate_pools() {
    let (a, b) = (App::start().await, App::start().await);
    let pool = LocalPool::new(Duration::from_secs(1));
    call(&pool, a.addr.port(), "/a").await;
    call(&pool, b.addr.port(), "/b").await;
    call(&pool, a.addr.port(), "/a").await;
    assert_eq!((a.connections(), b.connections()), (1, 1));
}
