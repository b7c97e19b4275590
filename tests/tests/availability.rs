//! Availability under hostile clients, against the real server process:
//! silent connections beyond the connection cap, trickled bodies, HTTP/2
//! streams with unfinished bodies, HTTP/2 clients that never read their
//! responses. Each test tries to exceed a bound and checks that a fresh,
//! well-behaved client is still served and that the server's memory stays
//! under an asserted ceiling.

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis_e2e::{db_csr, init_dev_with_server_settings, now_unix, rss_kib, TestServer};

/// A dev deployment whose `[server]` section gets `settings` (lines of
/// TOML) before it starts.
fn server_with(tmp: &Path, settings: &str) -> TestServer {
    let dir = tmp.join("var");
    init_dev_with_server_settings(&dir, settings);
    TestServer::start_in(&dir, &[])
}

/// Until the peer closes (EOF or error), at most `limit`.
fn closed_within(stream: &mut impl Read, limit: Duration) -> bool {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn silent_connections_past_the_cap_do_not_lock_out_a_fresh_client() {
    let tmp = tempfile::tempdir().unwrap();
    // A small cap keeps the test quick; the mechanism does not depend on
    // the number.
    let server = server_with(
        tmp.path(),
        "max_connections = 200\nfirst_request_timeout_secs = 4\nhandshake_timeout_secs = 4",
    );
    let client = server.client();
    let csr = db_csr(tmp.path(), "fresh");
    // 300 connections: 250 complete the TLS handshake and then say nothing,
    // 50 never start TLS.
    let mut silent_tls = Vec::new();
    for _ in 0..250 {
        let mut s = client.connect();
        let _ = s.conn.complete_io(&mut s.sock);
        silent_tls.push(s);
    }
    let mut silent_tcp = Vec::new();
    for _ in 0..50 {
        silent_tcp.push(TcpStream::connect(&server.addr).unwrap());
    }
    // The cap is held by silent connections; a fresh client is served at
    // once, for a cheap request and a signing request.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "fresh client waited {:?}",
            started.elapsed()
        );
    }
    // Every silent connection is closed within its deadline (4 s plus
    // scheduling slack), whether evicted or timed out.
    let deadline = Instant::now() + Duration::from_secs(8);
    for s in silent_tls.iter_mut() {
        s.sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(&mut s.sock, left),
            "a silent TLS connection is still open after its deadline"
        );
    }
    for s in silent_tcp.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left),
            "a silent TCP connection is still open after its deadline"
        );
    }
    assert!(server.metric("trellis_connections_closed_total", "evicted_no_request") >= 100.0);
    assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn trickled_bodies_and_headers_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_with(
        tmp.path(),
        "body_timeout_secs = 5\nbody_min_bytes_per_sec = 512",
    );
    let client = server.client();
    // A body of 1000 bytes, one byte every 700 ms: below the minimum rate.
    let body = vec![b'{'; 1000];
    let header = server.auth_header("db", &body, now_unix(), &ca_proto::auth::new_nonce());
    let mut s = client.connect();
    s.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = format!(
        "POST /v1/sign HTTP/1.1\r\nHost: localhost\r\nAuthorization: {header}\r\nContent-Length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut cut = false;
    for i in 0..40 {
        if s.write_all(&body[i..i + 1])
            .and_then(|_| s.flush())
            .is_err()
        {
            cut = true;
            break;
        }
        let mut buf = [0u8; 4096];
        let until = Instant::now() + Duration::from_millis(700);
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => {
                    cut = true;
                    break;
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        if cut || !answer.is_empty() {
            break;
        }
    }
    let waited = started.elapsed();
    assert!(cut || !answer.is_empty(), "a trickled body was never cut");
    assert!(waited < Duration::from_secs(5), "cut only after {waited:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.contains("408") && answer.contains("request_timeout"),
        "{answer}"
    );

    // Headers trickled on a fresh connection: cut by the first-request
    // deadline (default 10 s) or hyper's header timeout (10 s) at the latest.
    let mut h = client.connect();
    h.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    h.write_all(b"POST /v1/sign HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut cut = false;
    for i in 0..60 {
        if h.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut h, Duration::from_millis(400)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "trickled headers were never cut");
    assert!(
        started.elapsed() < Duration::from_secs(13),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
}

// ---- HTTP/2 peers (the h2 crate as a deliberately misbehaving client) ----

fn h2_tls_config(root: &Path) -> Arc<rustls::ClientConfig> {
    let mut config = trellis_e2e::client_tls_config(root);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

async fn h2_connect(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    builder: &h2::client::Builder,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, conn) = builder.handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

#[test]
fn http2_unfinished_bodies_are_bounded_and_fresh_clients_served() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_with(tmp.path(), "");
    let pid = server.pid().unwrap();
    let csr = db_csr(tmp.path(), "fresh");
    let root = server.dir.join("classes/ca/root.pem");
    let before = rss_kib(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr.clone();
    let streams_opened = rt.block_on(async {
        let tls = h2_tls_config(&root);
        let builder = h2::client::Builder::new();
        let mut held = Vec::new();
        let mut senders = Vec::new();
        let mut opened = 0usize;
        // 24 connections, each trying 300 streams that declare 64 KiB bodies
        // and send 60 KiB of them, then stop.
        for _ in 0..24 {
            let send = h2_connect(&addr, tls.clone(), &builder).await;
            for _ in 0..300 {
                let send = send.clone();
                let ready = tokio::time::timeout(Duration::from_millis(200), send.ready()).await;
                let Ok(Ok(mut send)) = ready else { break };
                let request = http::Request::builder()
                    .method("POST")
                    .uri("https://localhost/api/v1/cfssl/authsign")
                    .header("content-length", "65536")
                    .body(())
                    .unwrap();
                let Ok((response, mut body)) = send.send_request(request, false) else {
                    break;
                };
                body.reserve_capacity(60 * 1024);
                let _ = body.send_data(bytes::Bytes::from(vec![b'{'; 60 * 1024]), false);
                opened += 1;
                held.push((response, body));
            }
            senders.push(send);
        }
        (opened, held, senders)
    });
    let (opened, held, senders) = streams_opened;
    // Wait until the server has taken what the windows allowed: its
    // buffered-bytes gauge is non-zero and stable.
    let mut last = -1.0;
    for _ in 0..50 {
        let now = server.metric("trellis_body_buffered_bytes", "");
        if now > 0.0 && now == last {
            break;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        last > 0.0,
        "the server buffered nothing: the test did not load it"
    );
    assert!(
        last <= 16.0 * 1024.0 * 1024.0,
        "buffered body bytes {last} above the 16 MiB budget"
    );
    assert!(opened >= 24 * 16, "only {opened} streams opened");
    let peak = rss_kib(pid);
    let growth_mib = peak.saturating_sub(before) / 1024;
    // The body budget is 16 MiB and each connection's HTTP/2 windows hold
    // at most 256 KiB; with TLS and HTTP/2 state, 96 MiB is a generous
    // ceiling (unbounded, this is about 400 MiB).
    eprintln!("resident set {before} KiB -> {peak} KiB with {opened} unfinished streams");
    assert!(
        growth_mib < 96,
        "resident set grew by {growth_mib} MiB with unfinished HTTP/2 bodies"
    );
    // A fresh client is served while the streams are held.
    let started = Instant::now();
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(held);
    drop(senders);
    drop(rt);
}

fn signed_get(server: &TestServer, path: &str) -> String {
    let creds = ca_proto::auth::Credentials::new("admin", server.secret("admin"));
    ca_proto::auth::sign_request(
        &creds,
        "GET",
        path,
        b"",
        now_unix(),
        &ca_proto::auth::new_nonce(),
    )
}

#[test]
fn http2_readers_that_never_read_cannot_make_the_server_hold_their_responses() {
    let tmp = tempfile::tempdir().unwrap();
    // Budgets smaller than the defaults (64 MiB, 4 MiB per connection) so
    // that a few connections reach them: the mechanism is the same.
    let server = server_with(
        tmp.path(),
        "idle_timeout_secs = 20\nmax_queued_response_bytes = 8388608\nmax_connection_response_bytes = 2097152",
    );
    let pid = server.pid().unwrap();
    // Fill the log so that an entries page is large (~250 KiB of entries).
    std::thread::scope(|s| {
        for t in 0..4 {
            let server = &server;
            let dir = tmp.path();
            s.spawn(move || {
                for i in 0..60 {
                    let csr = db_csr(dir, &format!("fill-{t}-{i}"));
                    let (status, body) =
                        server.native_sign("db", &json!({"class": "db", "csr": csr}));
                    assert_eq!(status, 200, "{body}");
                }
            });
        }
    });
    let page = server.client().request(
        "GET",
        "/v1/log/dev-1/entries?start=0",
        &[(
            "authorization",
            &signed_get(&server, "/v1/log/dev-1/entries?start=0"),
        )],
        b"",
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let page_len = page.body.len();
    assert!(
        page_len > 200_000,
        "an entries page is only {page_len} bytes"
    );
    let before = rss_kib(pid);
    let root = server.dir.join("classes/ca/root.pem");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr.clone();
    let (ok, busy, held, senders) = rt.block_on(async {
        let tls = h2_tls_config(&root);
        let mut builder = h2::client::Builder::new();
        // Zero receive window: the server may send headers, never data.
        builder.initial_window_size(0);
        let (mut ok, mut busy) = (0usize, 0usize);
        let mut held = Vec::new();
        let mut senders = Vec::new();
        // 10 connections × 10 streams × a page each: ~35 MB if the server
        // kept every unread response, against an 8 MiB budget.
        for _ in 0..10 {
            let send = h2_connect(&addr, tls.clone(), &builder).await;
            for _ in 0..10 {
                let path = "/v1/log/dev-1/entries?start=0";
                let request = http::Request::builder()
                    .uri(format!("https://localhost{path}"))
                    .header("authorization", signed_get(&server, path))
                    .body(())
                    .unwrap();
                let ready =
                    tokio::time::timeout(Duration::from_secs(2), send.clone().ready()).await;
                let Ok(Ok(mut s)) = ready else { break };
                let Ok((response, _)) = s.send_request(request, true) else {
                    break;
                };
                match tokio::time::timeout(Duration::from_secs(5), response).await {
                    Ok(Ok(r)) if r.status() == 200 => {
                        ok += 1;
                        held.push(r);
                    }
                    Ok(Ok(r)) => {
                        busy += 1;
                        held.push(r);
                    }
                    _ => break,
                }
            }
            senders.push(send);
        }
        (ok, busy, held, senders)
    });
    let peak = rss_kib(pid);
    let queued = server.metric("trellis_response_queued_bytes", "");
    eprintln!(
        "{ok} pages answered and unread, {busy} refused; resident set {before} KiB -> {peak} KiB; {queued} bytes queued"
    );
    assert!(
        ok > 0,
        "no page was answered: the test did not load the server"
    );
    assert!(
        busy > 0,
        "no response was refused: the budget was never reached"
    );
    let refused_global =
        server.metric("trellis_budget_refusals_total", "budget=\"response_bytes\"");
    let refused_conn = server.metric(
        "trellis_budget_refusals_total",
        "budget=\"connection_response_bytes\"",
    );
    assert!(
        refused_global > 0.0,
        "the global response budget was never reached"
    );
    assert!(refused_conn > 0.0, "no connection reached its share");
    assert!(
        queued <= 8.0 * 1024.0 * 1024.0,
        "{queued} response bytes queued"
    );
    assert!(
        queued >= 4.0 * 1024.0 * 1024.0,
        "only {queued} response bytes queued: responses were not held"
    );
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "resident set grew by {growth_mib} MiB for unread responses"
    );
    // A fresh client is served meanwhile.
    let csr = db_csr(tmp.path(), "fresh");
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}");
    // Past the idle deadline the server lets go of the unread responses.
    // (idle_timeout_secs = 20: poll up to 30 s.)
    let mut released = false;
    for _ in 0..150 {
        if server.metric("trellis_response_queued_bytes", "") < 1024.0 * 1024.0 {
            released = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        released,
        "unread responses still held after the idle deadline"
    );
    drop((held, senders));
    drop(rt);
}
