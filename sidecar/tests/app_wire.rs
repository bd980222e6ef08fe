//! What the sidecar writes to the app and how it reads the app's answers, on the wire: calls
//! without a request body are made by the pool itself (`upstream::h1`), so these tests talk to
//! it from a raw TCP app that answers with exact bytes (framings, interim answers, broken
//! answers, closed connections) and records the bytes it was sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use portcullis_sidecar::base::body::{ProxyBody, empty};
use portcullis_sidecar::upstream::pool::{LocalPool, PoolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the raw app does with one request.
#[derive(Clone)]
enum Reply {
    /// Writes these bytes and waits for the next request on the connection.
    Bytes(&'static [u8]),
    /// Writes these bytes a byte at a time, then waits for the next request.
    Dribble(&'static [u8]),
    /// Writes these bytes and closes the connection.
    ThenClose(&'static [u8]),
    /// Closes the connection without answering.
    Close,
    /// Never answers (the connection stays open).
    Silent,
}

/// A raw HTTP/1.1 app: `reply(connection, request)` picks the answer (both numbered from 0);
/// every request head it read is kept, with its connection's number.
struct RawApp {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<(usize, String)>>>,
}

impl RawApp {
    async fn start(reply: fn(usize, usize) -> Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, conn, reply, seen.clone()));
            }
        });
        Self { addr, heads }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn heads(&self) -> Vec<(usize, String)> {
        self.heads.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.heads().iter().map(|(c, _)| c + 1).max().unwrap_or(0)
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    reply: fn(usize, usize) -> Reply,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
) {
    let mut buf = Vec::new();
    for request in 0..100 {
        // One head (these tests send no request bodies).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        seen.lock().unwrap().push((conn, String::from_utf8(head).unwrap()));
        match reply(conn, request) {
            Reply::Bytes(b) => stream.write_all(b).await.unwrap(),
            Reply::Dribble(b) => {
                for byte in b {
                    stream.write_all(&[*byte]).await.unwrap();
                    stream.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Reply::ThenClose(b) => {
                stream.write_all(b).await.unwrap();
                return;
            }
            Reply::Close => return,
            Reply::Silent => std::future::pending().await,
        }
    }
}

fn request(method: &str, path: &str) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.example")
        .header("x-a", "1")
        .body(empty())
        .unwrap()
}

/// Status and whole body of a call, or the pool's error.
async fn call(pool: &LocalPool, port: u16, method: &str, path: &str) -> Result<(u16, Bytes), String> {
    let resp = pool
        .send(port, request(method, path), TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

/// The time allowed for an answer's head.
const TIMEOUT: Duration = Duration::from_secs(5);

fn pool() -> LocalPool {
    LocalPool::new(Duration::from_secs(2))
}

const OK_HI: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";

#[tokio::test]
async fn the_request_head_is_written_as_decided() {
    let app = RawApp::start(|_, _| Reply::Bytes(OK_HI)).await;
    let pool = pool();
    call(&pool, app.port(), "GET", "/p/a%2Fb?q=1&r").await.unwrap();
    call(&pool, app.port(), "POST", "/empty").await.unwrap();
    let heads = app.heads();
    assert_eq!(
        heads[0].1,
        "GET /p/a%2Fb?q=1&r HTTP/1.1\r\nhost: app.example\r\nx-a: 1\r\n\r\n"
    );
    // A body-less POST says its length is zero (the app must not wait for a body).
    assert_eq!(
        heads[1].1,
        "POST /empty HTTP/1.1\r\nhost: app.example\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(app.connections(), 1, "both calls on one connection");
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_the_connection_kept() {
    let app = RawApp::start(|_, _| {
        Reply::Bytes(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n")
    })
    .await;
    let pool = pool();
    for _ in 0..3 {
        let (status, body) = call(&pool, app.port(), "GET", "/").await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
    }
    assert_eq!(app.connections(), 1);
    assert_eq!(pool.idle(app.port()), 1);
}

#[tokio::test]
async fn answers_dribbled_a_byte_at_a_time_are_whole() {
    let app = RawApp::start(|_, _| {
        Reply::Dribble(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-b: 2\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    })
    .await;
    let pool = pool();
    let resp = pool.send(app.port(), request("GET", "/"), TIMEOUT).await.unwrap();
    assert_eq!(resp.status(), 201, "the interim answer is skipped");
    assert_eq!(resp.headers()["x-b"], "2");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"abc");
    call(&pool, app.port(), "GET", "/again").await.unwrap();
    assert_eq!(app.connections(), 1);
}

#[tokio::test]
async fn an_answer_delimited_by_the_close_is_read_to_the_end_and_not_reused() {
    let app = RawApp::start(|_, _| Reply::ThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")).await;
    let pool = pool();
    for _ in 0..2 {
        let (_, body) = call(&pool, app.port(), "GET", "/").await.unwrap();
        assert_eq!(&body[..], b"until the end");
    }
    assert_eq!(app.connections(), 2);
    assert_eq!(pool.idle(app.port()), 0);
}

#[tokio::test]
async fn bytes_beyond_the_answer_keep_the_connection_out_of_the_pool() {
    let app = RawApp::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforgedXX",
        )
    })
    .await;
    let pool = pool();
    let (_, first) = call(&pool, app.port(), "GET", "/one").await.unwrap();
    let (_, second) = call(&pool, app.port(), "GET", "/two").await.unwrap();
    assert_eq!(
        (&first[..], &second[..]),
        (&b"hi"[..], &b"hi"[..]),
        "never the smuggled answer"
    );
    assert_eq!(app.connections(), 2);
}

#[tokio::test]
async fn head_and_304_answers_have_no_body_whatever_their_length_says() {
    let app = RawApp::start(|_, request| match request {
        0 => Reply::Bytes(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"),
        _ => Reply::Bytes(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"),
    })
    .await;
    let pool = pool();
    let resp = pool.send(app.port(), request("HEAD", "/"), TIMEOUT).await.unwrap();
    assert_eq!(
        resp.headers()["content-length"],
        "9",
        "the length of what GET would give"
    );
    assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    let (status, body) = call(&pool, app.port(), "GET", "/cached").await.unwrap();
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(app.connections(), 1);
}

#[tokio::test]
async fn broken_answers_are_errors_and_the_connection_is_dropped() {
    let broken: &[fn(usize, usize) -> Reply] = &[
        |_, _| Reply::Bytes(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nhi"),
        |_, _| Reply::Bytes(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        |_, _| Reply::Bytes(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
        |_, _| Reply::Bytes(b"SSH-2.0-OpenSSH\r\n\r\n"),
        |_, _| Reply::ThenClose(b"HTTP/1.1 200 OK\r\ncontent-le"),
    ];
    for reply in broken {
        let app = RawApp::start(*reply).await;
        let pool = pool();
        match pool.send(app.port(), request("GET", "/"), TIMEOUT).await {
            Err(PoolError::Answer { port, .. }) => assert_eq!(port, app.port()),
            other => panic!("expected an unreadable answer, got {:?}", other.map(|r| r.status())),
        }
        assert_eq!(pool.idle(app.port()), 0);
    }
    // Broken in the body: the body fails, and the connection is not reused.
    for reply in [
        (|_, _| Reply::ThenClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")) as fn(usize, usize) -> Reply,
        |_, _| Reply::Bytes(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ] {
        let app = RawApp::start(reply).await;
        let pool = pool();
        let resp = pool.send(app.port(), request("GET", "/"), TIMEOUT).await.unwrap();
        assert!(resp.into_body().collect().await.is_err());
        assert_eq!(pool.idle(app.port()), 0);
    }
}

#[tokio::test]
async fn a_reused_connection_closed_unanswered_is_retried_only_for_idempotent_calls() {
    // The first connection answers once, then closes the next request unanswered (an app
    // closing an idle connection as the call goes out); later connections answer.
    let app = RawApp::start(|conn, request| match (conn, request) {
        (0, 0) | (1, 0) | (2, 0) => Reply::Bytes(OK_HI),
        _ if conn <= 1 => Reply::Close,
        _ => Reply::Bytes(OK_HI),
    })
    .await;
    let pool = pool();
    call(&pool, app.port(), "GET", "/first").await.unwrap();
    let (status, _) = call(&pool, app.port(), "GET", "/retried").await.unwrap();
    assert_eq!(status, 200, "GET went again on a new connection");
    let heads = app.heads();
    assert_eq!(heads.iter().filter(|(_, h)| h.starts_with("GET /retried")).count(), 2);
    // Connection 1 is now pooled, and closes its next request unanswered: a POST is not
    // sent again (the app may have acted on it).
    let error = call(&pool, app.port(), "POST", "/once").await.unwrap_err();
    assert!(error.contains("unreadable"), "{error}");
    assert_eq!(
        app.heads().iter().filter(|(_, h)| h.starts_with("POST /once")).count(),
        1
    );
}

#[tokio::test]
async fn calls_with_a_body_still_stream_it() {
    // The hyper connection's path: the body arrives whole.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") && !got.ends_with(b"payload") {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
            got.len(),
            String::from_utf8_lossy(&got)
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
    });
    let body: ProxyBody = Full::new(Bytes::from_static(b"payload"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let req = Request::post("/upload").header("host", "app").body(body).unwrap();
    let resp = pool().send(port, req, TIMEOUT).await.unwrap();
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    let echoed = String::from_utf8_lossy(&echoed);
    assert!(echoed.starts_with("POST /upload HTTP/1.1\r\n"), "{echoed}");
    assert!(echoed.ends_with("payload"), "{echoed}");
}

#[tokio::test]
async fn each_call_on_a_reused_connection_has_the_whole_time_and_no_more() {
    // The first connection answers at once, then never again; the next ones answer.
    let app = RawApp::start(|conn, request| match (conn, request) {
        (0, 0) => Reply::Dribble(OK_HI),
        (0, _) => Reply::Silent,
        _ => Reply::Bytes(OK_HI),
    })
    .await;
    let pool = pool();
    let send = |path: &'static str, timeout| pool.send(app.port(), request("GET", path), timeout);
    let resp = send("/first", Duration::from_millis(600)).await.unwrap();
    resp.into_body().collect().await.unwrap();
    // The connection's deadline was for the first call: the second one has its own.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let start = tokio::time::Instant::now();
    let error = send("/unanswered", Duration::from_millis(600)).await.unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(error, PoolError::TimedOut { .. }), "{error}");
    assert!(waited >= Duration::from_millis(550), "cut after {waited:?}");
    assert!(waited < Duration::from_secs(3), "cut after {waited:?}");
    // The connection that timed out is not reused: its late answer cannot reach another call.
    let resp = send("/third", Duration::from_millis(600)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let heads = app.heads();
    let third = heads.iter().find(|(_, h)| h.starts_with("GET /third")).unwrap();
    assert_eq!(third.0, 1, "{heads:?}");
}
