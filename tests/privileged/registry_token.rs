//! The registry client against a registry with token authentication (distribution's
//! `auth: token`), the flow of Docker Hub, GHCR, Quay and most hosted registries: the
//! registry answers `401` with `WWW-Authenticate: Bearer realm="…",service="…"`, the client
//! asks the realm for a token for `repository:<name>:pull` (with basic credentials, or none
//! for an anonymous token) and sends that token, never the credentials, to the registry.
//!
//! Everything is real but the token server, written here: a thread on 127.0.0.1 that checks
//! the basic credentials of token requests, grants `pull` and `push` on every repository to
//! [`USER`] and `pull` on `public/…` to anyone, and issues JWTs signed RS256 by
//! `openssl dgst -sha256 -sign` with a key and self-signed certificate made by the `openssl`
//! CLI. The certificate is the registry's `rootcertbundle` and the tokens' `x5c` header:
//! distribution 2.8 finds the signing key through `x5c` (verified against the bundle), `jwk`
//! or `kid` (a libtrust key id of a bundle key), and refuses a token with none of them.
//! skopeo pushes the test images through the same token server with `--dest-creds`.
//!
//! Where credentials go is checked on the wire: the token server logs every request it gets
//! (the realm), and the client reaches the registry through a recording proxy, which logs the
//! head of every request the registry gets.
//!
//! The environment variables are process-wide: those tests pull in a child copy of this test
//! binary (see [`pull_in_child`]).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcompose::image::registry::{
    ENV_PASSWORD, ENV_TOKEN, ENV_USER, Reference, Registry, RegistryError, RegistryOptions,
};

use super::registry::{
    Image, PASSWORD, Server, USER, auth_file, base64, fetch_into, push_busybox, registry,
};
use crate::test::{Need, TempDir, require};

/// The registry's `service` (the tokens' audience).
const SERVICE: &str = "rcompose-test-registry";
/// The tokens' issuer, trusted by the registry.
const ISSUER: &str = "rcompose-test-token-server";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn require_tools() {
    require(&[
        Need::Root,
        Need::Busybox,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("openssl"),
    ]);
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Runs `openssl args`, feeding it `input`; returns its standard output.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run openssl");
    // Small inputs (a JWT's header and claims): they fit in the pipe, no writer thread.
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An RSA key and its self-signed certificate: signs tokens.
struct Signer {
    key: PathBuf,
    /// The certificate, PEM (the registry's `rootcertbundle`).
    cert: PathBuf,
    /// The certificate, base64 DER (the tokens' `x5c`).
    x5c: String,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let (k, c) = (key.to_str().unwrap(), cert.to_str().unwrap());
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                k,
                "-out",
                c,
                "-days",
                "2",
                "-subj",
                "/CN=rcompose test token issuer",
            ],
            b"",
        );
        let der = openssl(&["x509", "-in", c, "-outform", "DER"], b"");
        Signer {
            key,
            cert,
            x5c: STANDARD.encode(der),
        }
    }

    /// A JWT for `subject` (empty: anonymous) granting `access` (repository, actions), issued
    /// `issued` seconds from now (negative: in the past) and valid for 5 minutes.
    fn token(&self, subject: &str, access: &[(String, Vec<String>)], issued: i64) -> String {
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.x5c] });
        let iat = now() + issued;
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": iat + 300,
            "nbf": iat,
            "iat": iat,
            "jti": format!(
                "{}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst),
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
            ),
            "access": access.iter().map(|(name, actions)| serde_json::json!({
                "type": "repository", "name": name, "actions": actions,
            })).collect::<Vec<_>>(),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = self.key.to_str().unwrap();
        let signature = openssl(&["dgst", "-sha256", "-sign", key], input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// One request the token server received.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// `GET /token?…`
    line: String,
    /// The `service` parameter.
    service: Option<String>,
    /// The `scope` parameters.
    scopes: Vec<String>,
    /// The `Authorization` header, as sent.
    authorization: Option<String>,
    /// The status answered.
    status: u16,
    /// The token issued.
    token: Option<String>,
}

/// The token server: a thread on 127.0.0.1 serving `GET /token`, one connection at a time,
/// stopped and joined on drop.
struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    /// When the tokens it issues were issued, in seconds from now (see [`Signer::token`]).
    issued: Arc<AtomicI64>,
}

impl TokenServer {
    fn start(signer: Arc<Signer>) -> TokenServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let issued = Arc::new(AtomicI64::new(0));
        let thread = {
            let (stop, log, issued) = (Arc::clone(&stop), Arc::clone(&log), Arc::clone(&issued));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            serve_token(stream, &signer, &log, issued.load(Ordering::SeqCst));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TokenServer {
            port,
            stop,
            thread: Some(thread),
            log,
            issued,
        }
    }

    /// Issues the next tokens as if `seconds` from now (negative: in the past).
    fn issue_at(&self, seconds: i64) {
        self.issued.store(seconds, Ordering::SeqCst);
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The requests received so far.
    fn log(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests received so far (skopeo's, when it pushed).
    fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// A token for `scope`, asked with `user:password` like `curl -u` would (and left out of
    /// the log, which is what the client under test sent).
    fn fetch(&self, scope: &str, user: &str, password: &str) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /token?service={SERVICE}&scope={scope} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Basic {}\r\nConnection: close\r\n\r\n",
            base64(&format!("{user}:{password}"))
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "{response}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        let request = self.log.lock().unwrap().pop().unwrap();
        assert_eq!(request.token.as_deref(), body["token"].as_str());
        body["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads a request head (up to the empty line), at most 64 KiB.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read_exact(&mut byte).is_err() {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// The value of header `name` in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `user` (`None`: anonymous) gets of `scope` (`repository:<name>:<actions>`): pull and
/// push everywhere for [`USER`], pull on `public/…` for anyone.
fn grant(user: Option<&str>, scope: &str) -> Option<(String, Vec<String>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let allowed: &[&str] = match user {
        _ if kind != "repository" => &[],
        Some(_) => &["pull", "push"],
        None if name.starts_with("public/") => &["pull"],
        None => &[],
    };
    let actions: Vec<String> = actions
        .split(',')
        .filter(|a| allowed.contains(a))
        .map(str::to_owned)
        .collect();
    (!actions.is_empty()).then(|| (name.to_owned(), actions))
}

/// Answers one token request, logged before the answer is sent (whoever reads the log after
/// the answer finds the request there).
fn serve_token(
    mut stream: TcpStream,
    signer: &Signer,
    log: &Mutex<Vec<TokenRequest>>,
    issued: i64,
) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = read_head(&mut stream)?;
    let line = head.lines().next().unwrap_or("").to_owned();
    let target = line.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = TokenRequest {
        line: line.clone(),
        service: None,
        scopes: Vec::new(),
        authorization: header(&head, "authorization").map(str::to_owned),
        status: 200,
        token: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_str() {
            "service" => request.service = Some(percent_decode(value)),
            "scope" => request
                .scopes
                .extend(percent_decode(value).split(' ').map(str::to_owned)),
            _ => {}
        }
    }
    // Basic credentials: right, wrong, or none (anonymous).
    let user = match request.authorization.as_deref() {
        None => Ok(None),
        Some(value) => value
            .strip_prefix("Basic ")
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| *b == format!("{USER}:{PASSWORD}").as_bytes())
            .map(|_| Some(USER))
            .ok_or(()),
    };
    let (status, body) = if !line.starts_with("GET ") || path != "/token" {
        (404, r#"{"details":"not found"}"#.to_owned())
    } else if request.service.as_deref() != Some(SERVICE) {
        (400, r#"{"details":"unknown service"}"#.to_owned())
    } else {
        match user {
            Err(()) => (
                401,
                r#"{"details":"incorrect username or password"}"#.to_owned(),
            ),
            Ok(user) => {
                let access: Vec<(String, Vec<String>)> = request
                    .scopes
                    .iter()
                    .filter_map(|s| grant(user, s))
                    .collect();
                let token = signer.token(user.unwrap_or(""), &access, issued);
                request.token = Some(token.clone());
                let body = serde_json::json!({
                    "token": token, "access_token": token, "expires_in": 300,
                });
                (200, body.to_string())
            }
        }
    };
    request.status = status;
    log.lock().unwrap().push(request);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(())
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that records the head of every request
/// going through (pulls send GET requests only, without bodies). On drop, its thread stops
/// accepting, shuts every connection down and joins their threads.
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, heads) = (Arc::clone(&stop), Arc::clone(&heads));
            std::thread::spawn(move || {
                // Both ends of every connection, and the threads copying between them.
                let mut streams = Vec::new();
                let mut threads = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    // On any error the client sees its connection close.
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    streams.extend([c, s]);
                    let (Ok(client_in), Ok(server_out)) = (client.try_clone(), server.try_clone())
                    else {
                        continue;
                    };
                    let heads = Arc::clone(&heads);
                    threads.push(std::thread::spawn(move || {
                        forward_requests(client_in, server_out, &heads);
                    }));
                    let (mut server_in, mut client_out) = (server, client);
                    threads.push(std::thread::spawn(move || {
                        let _ = io::copy(&mut server_in, &mut client_out);
                        let _ = client_out.shutdown(Shutdown::Write);
                    }));
                }
                for stream in &streams {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                for thread in threads {
                    let _ = thread.join();
                }
            })
        };
        Proxy {
            port,
            stop,
            thread: Some(thread),
            heads,
        }
    }

    /// The request heads recorded so far.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies the client's bytes to the server, recording each request head on the way (before
/// it is passed on: whoever reads the heads after the answer finds the request there).
fn forward_requests(mut client: TcpStream, mut server: TcpStream, heads: &Mutex<Vec<String>>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            heads
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}

/// A registry with token auth, its token server, and the recording proxy the client goes
/// through; fields drop in order (the temporary directory last).
struct TokenRegistry {
    proxy: Proxy,
    server: Server,
    tokens: TokenServer,
    signer: Arc<Signer>,
    dir: TempDir,
}

impl TokenRegistry {
    fn start(name: &str) -> TokenRegistry {
        let dir = TempDir::new(name);
        let signer = Arc::new(Signer::new(dir.path()));
        let tokens = TokenServer::start(Arc::clone(&signer));
        let auth = format!(
            "  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
             rootcertbundle: {}\n",
            tokens.realm(),
            signer.cert.display()
        );
        let server = Server::start_with(&dir, Some(&auth), Ipv4Addr::LOCALHOST);
        let proxy = Proxy::start(server.host());
        TokenRegistry {
            proxy,
            server,
            tokens,
            signer,
            dir,
        }
    }

    /// Pushes a busybox image as `repo:t` with skopeo, straight to the registry (not through
    /// the proxy), with [`USER`]'s credentials (skopeo does its own token exchange).
    fn push(&self, repo: &str) -> Image {
        push_busybox(
            &self.dir,
            &self.server,
            repo,
            &[
                "--preserve-digests",
                "--dest-creds",
                &format!("{USER}:{PASSWORD}"),
            ],
        )
    }

    /// `name` through the proxy.
    fn reference(&self, name: &str) -> Reference {
        format!("127.0.0.1:{}/{name}", self.proxy.port)
            .parse()
            .unwrap()
    }

    /// Pulls `name` with `registry` (resolve, then every layer into `out`) and checks that
    /// the manifest, the config and the layers are `image`'s, byte for byte.
    fn pull(&self, registry: &Registry, name: &str, image: &Image, out: &str) {
        let resolved = registry.resolve(&self.reference(name)).unwrap();
        assert_eq!(resolved.digest.to_string(), image.manifest.digest, "{out}");
        assert!(resolved.manifest_bytes == image.manifest.bytes, "{out}");
        assert!(resolved.config == image.config.bytes, "{out}");
        let blobs = fetch_into(registry, &resolved, &self.dir.path().join(out)).unwrap();
        assert_eq!(blobs.len(), image.layers.len(), "{out}");
        for layer in &image.layers {
            assert!(
                blobs[&layer.digest] == layer.bytes,
                "{out}: {}",
                layer.digest
            );
        }
    }

    /// Checks where credentials went: the realm got them in token requests only (each asking
    /// for `pull` on `repositories`, for the registry's service), and the registry got no
    /// password and no basic auth, only tokens, each issued by the token server or among
    /// `known` (given by the test).
    fn assert_no_leak(&self, repositories: &[&str], known: &[&str]) {
        let log = self.tokens.log();
        assert!(!log.is_empty(), "no token request");
        let mut issued: HashSet<String> = known.iter().map(|t| (*t).to_owned()).collect();
        for request in &log {
            assert!(request.line.starts_with("GET /token?"), "{request:?}");
            assert_eq!(request.service.as_deref(), Some(SERVICE), "{request:?}");
            assert!(
                request.scopes.len() == 1
                    && repositories
                        .iter()
                        .any(|r| request.scopes[0] == format!("repository:{r}:pull")),
                "{request:?}"
            );
            if let Some(authorization) = &request.authorization {
                assert!(authorization.starts_with("Basic "), "{request:?}");
            }
            issued.extend(request.token.clone());
        }
        let heads = self.proxy.heads();
        assert!(!heads.is_empty(), "the registry got no request");
        let basic = base64(&format!("{USER}:{PASSWORD}"));
        for head in &heads {
            assert!(
                !head.contains(PASSWORD) && !head.contains(&basic),
                "credentials sent to the registry:\n{head}"
            );
            let authorization = header(head, "authorization");
            let path = head.split(' ').nth(1).unwrap_or("");
            match authorization {
                None => assert_eq!(path, "/v2/", "unauthenticated request:\n{head}"),
                Some(value) => {
                    let token = value.strip_prefix("Bearer ").unwrap_or("");
                    assert!(issued.contains(token), "unknown authorization:\n{head}");
                }
            }
        }
    }
}

#[test]
fn bearer_token_auth_anonymous_and_from_a_config_file() {
    require_tools();
    let reg = TokenRegistry::start("reg-token");
    let private = reg.push("test/private");
    let public = reg.push("public/busybox");
    let host = reg.reference("x").registry().to_owned();
    // What skopeo did is not under test here.
    reg.tokens.clear_log();
    let missing = reg.dir.path().join("missing.json");
    let anonymous = Registry::new(RegistryOptions {
        auth_file: Some(missing.clone()),
        ..RegistryOptions::default()
    })
    .unwrap();

    // Anonymous: an anonymous token (no credentials sent) pulls the public image...
    reg.pull(&anonymous, "public/busybox:t", &public, "out-anonymous");
    let log = reg.tokens.log();
    assert!(log.iter().all(|r| r.authorization.is_none()), "{log:?}");

    // ...and, with no access to the private one, the registry refuses it: the error says
    // that no credentials were found, and where they were sought.
    let err = anonymous
        .resolve(&reg.reference("test/private:t"))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "not authorized to pull `{host}/test/private:t`; credentials used: none (neither \
             RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD nor RCOMPOSE_REGISTRY_TOKEN is \
             set, and no usable entry for the registry in `{}`",
            missing.display()
        )),
        "{message}"
    );

    // Credentials from a config.json, as `auth` and as `username` + `password`: exchanged
    // for a token, byte-identical content.
    for (name, entry) in [
        (
            "auth.json",
            serde_json::json!({ "auth": base64(&format!("{USER}:{PASSWORD}")) }),
        ),
        (
            "fields.json",
            serde_json::json!({ "username": USER, "password": PASSWORD }),
        ),
    ] {
        let before = reg.tokens.log().len();
        let file = auth_file(&reg.dir, name, &host, entry);
        let registry = Registry::new(RegistryOptions {
            auth_file: Some(file),
            ..RegistryOptions::default()
        })
        .unwrap();
        reg.pull(
            &registry,
            "test/private:t",
            &private,
            &format!("out-{name}"),
        );
        let log = reg.tokens.log();
        let ours = &log[before..];
        assert_eq!(ours.len(), 1, "one token per pull: {ours:?}");
        assert_eq!(
            ours[0].authorization,
            Some(format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")))),
            "{name}"
        );
        assert_eq!(ours[0].status, 200, "{name}");
    }

    // A `registrytoken` (a token the user got from the realm): sent as is, no exchange.
    let token = reg
        .tokens
        .fetch("repository:test/private:pull", USER, PASSWORD);
    let file = auth_file(
        &reg.dir,
        "token.json",
        &host,
        serde_json::json!({ "registrytoken": token }),
    );
    let before = reg.tokens.log().len();
    let registry = Registry::new(RegistryOptions {
        auth_file: Some(file),
        ..RegistryOptions::default()
    })
    .unwrap();
    reg.pull(&registry, "test/private:t", &private, "out-token");
    assert_eq!(
        reg.tokens.log().len(),
        before,
        "a given token is not exchanged"
    );
    // The same token for another repository: refused by the registry, and the error says
    // what a given token must be.
    let err = registry
        .resolve(&reg.reference("public/busybox:t"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "not authorized to pull `{host}/public/busybox:t`; credentials used: \
             `auths.\"{host}\"` of `{}`{BEARER_HINT}",
            reg.dir.path().join("token.json").display()
        )
    );

    // A wrong password: the token server refuses it, and the error names the entry.
    let wrong = auth_file(
        &reg.dir,
        "wrong.json",
        &host,
        serde_json::json!({ "auth": base64(&format!("{USER}:nope")) }),
    );
    let err = Registry::new(RegistryOptions {
        auth_file: Some(wrong.clone()),
        ..RegistryOptions::default()
    })
    .unwrap()
    .resolve(&reg.reference("test/private:t"))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "not authorized to pull `{host}/test/private:t`; credentials used: \
             `auths.\"{host}\"` of `{}`",
            wrong.display()
        )
    );
    assert_eq!(reg.tokens.log().last().unwrap().status, 401);

    reg.assert_no_leak(&["test/private", "public/busybox"], &[&token]);
}

/// The end of "not authorized" errors when the credentials were a bearer token.
const BEARER_HINT: &str = "; a bearer token is sent as is, never exchanged or renewed, so it \
     must be an unexpired access token of the registry's token service for this repository (a \
     password or personal access token needs a user name: RCOMPOSE_REGISTRY_USER and \
     RCOMPOSE_REGISTRY_PASSWORD, or `auth` in the auth file)";

/// What a user might take for a token: a personal access token (a password, for the realm).
const NOT_A_TOKEN: &str = "rcompose_pat_0123456789abcdef";

/// Set in the child runs of [`bearer_token_auth_from_the_environment`]: the reference to
/// pull, and the directory where the outcome is written.
const CHILD_REFERENCE: &str = "RCOMPOSE_TEST_TOKEN_REFERENCE";
const CHILD_OUT: &str = "RCOMPOSE_TEST_TOKEN_OUT";

/// In the child: pulls the reference and writes `outcome` (`ok <manifest digest>` or the
/// error), `config` and the layers under `blobs/` into the directory.
fn child_pull(reference: &str, out: &Path) {
    let reference: Reference = reference.parse().unwrap();
    let registry = registry();
    let outcome = registry.resolve(&reference).and_then(|resolved| {
        fs::write(out.join("config"), &resolved.config).unwrap();
        fetch_into(&registry, &resolved, &out.join("blobs"))?;
        Ok(resolved.digest)
    });
    let text = match outcome {
        Ok(digest) => format!("ok {digest}"),
        Err(e) => e.to_string(),
    };
    fs::write(out.join("outcome"), text).unwrap();
}

/// Pulls `name` in a child copy of this test binary with only `env` among the credentials
/// variables; returns the outcome (see [`child_pull`]) and the directory with the content.
fn pull_in_child(reg: &TokenRegistry, name: &str, env: &[(&str, &str)]) -> (String, PathBuf) {
    let out = reg
        .dir
        .path()
        .join(format!("child-{}", COUNTER.fetch_add(1, Ordering::SeqCst)));
    fs::create_dir_all(&out).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "privileged::registry_token::bearer_token_auth_from_the_environment",
            "--test-threads=1",
        ])
        .env(CHILD_REFERENCE, reg.reference(name).to_string())
        .env(CHILD_OUT, &out)
        .env_remove(ENV_USER)
        .env_remove(ENV_PASSWORD)
        .env_remove(ENV_TOKEN)
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child pull of {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome = fs::read_to_string(out.join("outcome")).unwrap();
    (outcome, out)
}

/// Asserts that a child pulled `image` byte for byte.
fn assert_pulled(outcome: &str, out: &Path, image: &Image) {
    assert_eq!(outcome, format!("ok {}", image.manifest.digest));
    assert!(fs::read(out.join("config")).unwrap() == image.config.bytes);
    for layer in &image.layers {
        let hex = layer.digest.strip_prefix("sha256:").unwrap();
        assert!(fs::read(out.join("blobs").join(hex)).unwrap() == layer.bytes);
    }
}

#[test]
fn bearer_token_auth_from_the_environment() {
    if let Some(reference) = std::env::var_os(CHILD_REFERENCE) {
        let out = PathBuf::from(std::env::var_os(CHILD_OUT).unwrap());
        child_pull(reference.to_str().unwrap(), &out);
        return;
    }
    require_tools();
    let reg = TokenRegistry::start("reg-token-env");
    let image = reg.push("test/env");
    reg.push("test/other");
    reg.tokens.clear_log();
    let reference = reg.reference("test/env:t");
    let unauthorized =
        |source: &str| format!("not authorized to pull `{reference}`; credentials used: {source}");

    // User and password: exchanged for a token, byte-identical content.
    let before = reg.tokens.log().len();
    let (outcome, out) = pull_in_child(
        &reg,
        "test/env:t",
        &[(ENV_USER, USER), (ENV_PASSWORD, PASSWORD)],
    );
    assert_pulled(&outcome, &out, &image);
    let log = reg.tokens.log();
    assert_eq!(log.len(), before + 1, "one token per pull: {log:?}");
    assert_eq!(log[before].status, 200);

    // A wrong password: refused by the token server.
    let (outcome, _) = pull_in_child(
        &reg,
        "test/env:t",
        &[(ENV_USER, USER), (ENV_PASSWORD, "wrong")],
    );
    assert_eq!(
        outcome,
        unauthorized("RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD")
    );
    assert_eq!(reg.tokens.log().last().unwrap().status, 401);

    // RCOMPOSE_REGISTRY_TOKEN: a token from the realm (as `curl -u` gets one) is sent as is,
    // without any token request.
    let token = reg.tokens.fetch("repository:test/env:pull", USER, PASSWORD);
    let before = reg.tokens.log().len();
    let (outcome, out) = pull_in_child(&reg, "test/env:t", &[(ENV_TOKEN, &token)]);
    assert_pulled(&outcome, &out, &image);
    assert_eq!(
        reg.tokens.log().len(),
        before,
        "a given token is not exchanged"
    );

    // It is never exchanged or refreshed, so a token for another repository, an expired
    // one, or something that is not a token of the realm at all (a personal access token,
    // which goes in RCOMPOSE_REGISTRY_PASSWORD) are refused by the registry.
    let other = reg
        .tokens
        .fetch("repository:test/other:pull", USER, PASSWORD);
    let expired = reg
        .signer
        .token(USER, &[("test/env".into(), vec!["pull".into()])], -600);
    for (what, token) in [
        ("another repository", other.as_str()),
        ("expired", expired.as_str()),
        ("not a token of the realm", NOT_A_TOKEN),
    ] {
        let (outcome, _) = pull_in_child(&reg, "test/env:t", &[(ENV_TOKEN, token)]);
        assert_eq!(
            outcome,
            unauthorized(&format!("RCOMPOSE_REGISTRY_TOKEN{BEARER_HINT}")),
            "{what}"
        );
    }
    assert_eq!(
        reg.tokens.log().len(),
        before,
        "a given token is not exchanged"
    );

    reg.assert_no_leak(&["test/env"], &[&token, &other, &expired, NOT_A_TOKEN]);
}

/// A token from the exchange that expires during a pull (after the manifest, before the
/// layers) is refused by the registry and renewed once, through the same exchange: the pull
/// completes, byte-identical.
#[test]
fn an_exchanged_token_that_expires_during_a_pull_is_renewed() {
    require_tools();
    let reg = TokenRegistry::start("reg-token-renew");
    let image = reg.push("public/busybox");
    reg.tokens.clear_log();
    let registry = Registry::new(RegistryOptions {
        auth_file: Some(reg.dir.path().join("missing.json")),
        ..RegistryOptions::default()
    })
    .unwrap();
    // Valid for 300 s from their `iat`, and distribution accepts them 60 s past their `exp`:
    // these tokens are accepted for 4 more seconds.
    reg.tokens.issue_at(-(300 + 60) + 4);
    let resolved = registry
        .resolve(&reg.reference("public/busybox:t"))
        .unwrap();
    assert!(resolved.config == image.config.bytes);
    std::thread::sleep(Duration::from_secs(5));
    reg.tokens.issue_at(0);
    let blobs = fetch_into(&registry, &resolved, &reg.dir.path().join("out")).unwrap();
    assert_eq!(image.layers.len(), 1, "busybox: one layer");
    let layer = &image.layers[0];
    assert!(blobs[&layer.digest] == layer.bytes, "{}", layer.digest);
    let log = reg.tokens.log();
    assert_eq!(
        log.len(),
        2,
        "one token for the manifest, one renewal: {log:?}"
    );
    let blob_requests: Vec<String> = reg
        .proxy
        .heads()
        .into_iter()
        .filter(|head| head.contains("/blobs/"))
        .collect();
    assert_eq!(
        blob_requests.len(),
        3,
        "the config, then the layer with the expired token and with the renewed one: \
         {blob_requests:?}"
    );
    reg.assert_no_leak(&["public/busybox"], &[]);
}
