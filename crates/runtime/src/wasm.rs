//! The `wasm` driver: `wasi:http/incoming-handler` components run in this process by
//! wasmtime, as `wasmtime serve` runs them.
//!
//! An instance is an HTTP listener on its own port with the component pre-linked
//! (`ProxyPre`); every request gets a fresh component instance in a fresh store, with
//! the revision's memory limit and an epoch deadline at its timeout. Instances look to
//! the gateway, the scaler and metering like any other: a port that answers. A
//! component is compiled once per digest and kept on disk (keyed by the engine's
//! compatibility hash, so an engine change recompiles); its compiled state stays in
//! memory only while an instance of it runs, so a revision at zero holds none.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::sync::watch;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
    UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::logs::{InstanceLog, LogSink, LogTail};
use crate::wasm_threads::{PartitionPool, WasmThreads};
use crate::{ExitInfo, Instance, InstanceControl, InstanceSpec, PortAllocator, RuntimeError};

/// How often the engine's epoch ticks: the granularity of timeouts and of yielding a
/// busy guest to other requests.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Memory a guest may use when its revision sets no limit.
pub const DEFAULT_MEMORY_BYTES: u64 = 128 * 1024 * 1024;

/// What the wasm driver needs from a revision beyond the common spec.
#[derive(Debug, Clone)]
pub struct WasmSpec {
    /// `sha256:<hex>` of the component.
    pub digest: String,
    pub component: PathBuf,
    /// Hosts outbound `wasi:http` requests may go to; none by default.
    pub allowed_hosts: Vec<String>,
    /// A request's guest is stopped (and answered 504) past this.
    pub request_timeout: Duration,
}

/// Sizes of the pooling allocator; zero instances turns it off.
#[derive(Debug, Clone, Copy)]
pub struct WasmPoolConfig {
    /// Component instances (requests in flight) the pool reserves room for.
    pub instances: u32,
    pub max_memory_bytes: u64,
}

impl Default for WasmPoolConfig {
    fn default() -> Self {
        WasmPoolConfig {
            instances: 1000,
            max_memory_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// One request's guest state.
struct Guest {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hooks: OutboundHooks,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound requests go only to the hosts the revision allows.
struct OutboundHooks {
    allowed: Arc<Vec<String>>,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let host = request.uri().host().unwrap_or_default().to_string();
        let port = request.uri().port_u16();
        let permit = permit(&self.allowed, &host, port);
        match permit {
            Permit::Denied => return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) }),
            Permit::Local => return Box::new(async { Err(wasmtime_wasi_http::Error::DestinationIpProhibited) }),
            Permit::Named | Permit::UnlessLocal => {}
        }
        drop(fut);
        Box::new(async move {
            if permit == Permit::UnlessLocal {
                let target = format!("{host}:{}", port.unwrap_or(80));
                let addresses = tokio::net::lookup_host(target)
                    .await
                    .map_err(|_| wasmtime_wasi_http::Error::DestinationNotFound)?;
                // The connection resolves the name again; a name that changes its
                // answer in between is not caught here.
                if addresses.into_iter().any(|a| is_local(a.ip())) {
                    return Err(wasmtime_wasi_http::Error::DestinationIpProhibited);
                }
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permit {
    /// Not among the allowed hosts.
    Denied,
    /// Allowed by `*` only, and on this machine.
    Local,
    /// Named explicitly: wherever it is, even on this machine.
    Named,
    /// Allowed by `*`: anywhere but this machine's loopback and link-local addresses,
    /// where the platform's own API, gateway and other instances listen.
    UnlessLocal,
}

fn permit(allowed: &[String], host: &str, port: Option<u16>) -> Permit {
    let named = allowed
        .iter()
        .any(|a| *a == host || port.is_some_and(|p| *a == format!("{host}:{p}")));
    if named {
        Permit::Named
    } else if allowed.iter().any(|a| a == "*") {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let local_name = bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost");
        match bare.parse::<std::net::IpAddr>() {
            Ok(ip) if is_local(ip) => Permit::Local,
            _ if local_name => Permit::Local,
            _ => Permit::UnlessLocal,
        }
    } else {
        Permit::Denied
    }
}

fn is_local(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// Guest stdout and stderr, line by line into the instance's log.
#[derive(Clone)]
struct LogStream {
    log: Arc<dyn InstanceLog>,
    tail: Arc<LogTail>,
    name: &'static str,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            stream: self.clone(),
            pending: Vec::new(),
        })
    }
}

struct LineWriter {
    stream: LogStream,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end_matches(['\n', '\r']).to_string();
        self.stream.tail.push(text.clone());
        self.stream.log.write(self.stream.name, text, false);
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.emit(&line);
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

/// A component linked and ready to instantiate, with how many instances use it.
struct Loaded {
    pre: ProxyPre<Guest>,
    users: usize,
}

pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Guest>,
    cache_dir: PathBuf,
    logs: Arc<dyn LogSink>,
    ports: PortAllocator,
    loaded: Mutex<HashMap<String, Loaded>>,
    pooling: bool,
    threads: Arc<WasmThreads>,
}

impl WasmRuntime {
    /// An engine with the pooling allocator (copy-on-write memory images), or the
    /// on-demand allocator when the host cannot reserve the pool's address space.
    pub fn new(cache_dir: PathBuf, logs: Arc<dyn LogSink>, pool: WasmPoolConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cache_dir)?;
        let base = || {
            let mut config = Config::new();
            config.epoch_interruption(true);
            config.memory_init_cow(true);
            config
        };
        let mut pooled = base();
        let mut limits = PoolingAllocationConfig::default();
        limits
            .total_component_instances(pool.instances)
            .total_core_instances(pool.instances)
            .total_memories(pool.instances)
            .total_tables(pool.instances)
            .total_stacks(pool.instances)
            .max_memory_size(pool.max_memory_bytes as usize);
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(limits));
        let (engine, pooling) = match (pool.instances > 0).then(|| Engine::new(&pooled)) {
            Some(Ok(engine)) => (engine, true),
            Some(Err(e)) => {
                tracing::warn!("the wasm instance pool cannot be reserved ({e:#}); allocating on demand");
                (Engine::new(&base())?, false)
            }
            None => (Engine::new(&base())?, false),
        };
        spawn_epoch_ticker(engine.weak());
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        Ok(WasmRuntime {
            engine,
            linker,
            cache_dir,
            logs,
            ports: PortAllocator::default(),
            loaded: Mutex::new(HashMap::new()),
            pooling,
            threads: Arc::default(),
        })
    }

    /// The threads guests run on, which the partitions' placement holds to their CPUs.
    pub fn threads(&self) -> Arc<WasmThreads> {
        self.threads.clone()
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Components with compiled state in memory now.
    pub fn loaded(&self) -> usize {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn cache_path(&self, digest: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let hex = digest.trim_start_matches("sha256:");
        self.cache_dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish()))
    }

    /// The component compiled for this engine: from the disk cache, or compiled now
    /// and cached.
    fn compile(&self, digest: &str, source: &Path) -> anyhow::Result<Component> {
        let cached = self.cache_path(digest);
        if cached.exists() {
            // The file is one this runtime wrote for this engine's compatibility hash.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(path = %cached.display(), "recompiling: cached component unusable: {e:#}"),
            }
        }
        let component = Component::from_file(&self.engine, source)?;
        let bytes = component.serialize()?;
        let tmp = cached.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &cached)?;
        Ok(component)
    }

    fn link(&self, digest: &str, source: &Path) -> anyhow::Result<ProxyPre<Guest>> {
        let component = self.compile(digest, source)?;
        let pre = self.linker.instantiate_pre(&component)?;
        ProxyPre::new(pre).map_err(|e| anyhow::anyhow!("{e:#}; a component must export wasi:http/incoming-handler@0.2"))
    }

    /// Checks that a component compiles, links against the imports Updraft provides
    /// and exports `wasi:http/incoming-handler`; the compiled form is cached.
    pub fn check(&self, digest: &str, source: &Path) -> Result<(), String> {
        self.link(digest, source).map(|_| ()).map_err(|e| format!("{e:#}"))
    }

    fn acquire(&self, wasm: &WasmSpec) -> anyhow::Result<ProxyPre<Guest>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = loaded.get_mut(&wasm.digest) {
            entry.users += 1;
            return Ok(entry.pre.clone());
        }
        let pre = self.link(&wasm.digest, &wasm.component)?;
        loaded.insert(
            wasm.digest.clone(),
            Loaded {
                pre: pre.clone(),
                users: 1,
            },
        );
        Ok(pre)
    }

    fn release(&self, digest: &str) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = loaded.get_mut(digest) {
            entry.users -= 1;
            if entry.users == 0 {
                loaded.remove(digest);
            }
        }
    }

    pub fn start(self: &Arc<Self>, spec: InstanceSpec, wasm: WasmSpec) -> Result<Instance, RuntimeError> {
        let pre = self
            .acquire(&wasm)
            .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("{e:#}"))))?;
        let started = self.serve(spec, &wasm, pre);
        if started.is_err() {
            self.release(&wasm.digest);
        }
        started
    }

    fn serve(
        self: &Arc<Self>,
        spec: InstanceSpec,
        wasm: &WasmSpec,
        pre: ProxyPre<Guest>,
    ) -> Result<Instance, RuntimeError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = self.ports.hold(listener.local_addr()?.port())?;
        let pool = self.threads.pool_for(&spec.namespace)?;
        let runtime = pool
            .as_ref()
            .map_or_else(tokio::runtime::Handle::current, |p| p.handle().clone());
        // The listener and every request's guest then belong to the pool's runtime.
        let _in_pool = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let log = self.logs.open(&spec)?;
        let tail = Arc::new(LogTail::default());
        let mut env: Vec<(String, String)> = spec.env.clone().into_iter().collect();
        env.extend(
            spec.contract_env(port.port)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        let handler = Arc::new(Handler {
            pre,
            env,
            memory_bytes: spec.limits.memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES),
            timeout: wasm.request_timeout,
            allowed: Arc::new(wasm.allowed_hosts.clone()),
            stdout: LogStream {
                log: log.clone(),
                tail: tail.clone(),
                name: "stdout",
            },
            stderr: LogStream {
                log,
                tail: tail.clone(),
                name: "stderr",
            },
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let exit_tx = Arc::new(exit_tx);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = runtime.spawn(accept_loop(listener, handler, stop_rx, exit_tx.clone()));
        let (drained_tx, drained_rx) = watch::channel(false);
        let _ = drained_tx.send(true);
        Ok(Instance {
            id: spec.id,
            port: port.port,
            pid: std::process::id(),
            started_at: SystemTime::now(),
            from_pool: false,
            cgroup: None,
            exit: exit_rx,
            logs_drained: drained_rx,
            tail,
            control: Box::new(WasmControl {
                stop: stop_tx,
                task: task.abort_handle(),
                exit: exit_tx,
                runtime: Arc::downgrade(self),
                digest: wasm.digest.clone(),
                released: AtomicBool::new(false),
                _pool: pool,
            }),
            _port: port,
        })
    }
}

/// Ticks the engine's epoch until the engine is gone.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak) {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch thread");
}

struct Handler {
    pre: ProxyPre<Guest>,
    env: Vec<(String, String)>,
    memory_bytes: u64,
    timeout: Duration,
    allowed: Arc<Vec<String>>,
    stdout: LogStream,
    stderr: LogStream,
}

fn text(status: u16, message: String) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(message))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

impl Handler {
    async fn handle(
        self: Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Infallible> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&self.env)
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let guest = Guest {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_bytes as usize)
                .instances(16)
                .build(),
            hooks: OutboundHooks {
                allowed: self.allowed.clone(),
            },
        };
        let mut store = Store::new(self.pre.engine(), guest);
        store.limiter(|g| &mut g.limits);
        let deadline = Instant::now() + self.timeout;
        let timed_out = Arc::new(AtomicBool::new(false));
        let flag = timed_out.clone();
        // Each tick a busy guest yields to other requests; past its deadline it stops.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                flag.store(true, Ordering::Relaxed);
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, request);
        let out = store.data_mut().http().new_response_outparam(sender);
        let (Ok(req), Ok(out)) = (req, out) else {
            return Ok(text(500, "cannot pass the request to the function\n".to_string()));
        };
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        let stderr = self.stderr.clone();
        match receiver.await {
            Ok(Ok(response)) => {
                tokio::spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        log_failure(&stderr, &e);
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => Ok(text(500, format!("the function answered with an error: {code:?}\n"))),
            Err(_) => {
                let failure = match task.await {
                    Ok(Ok(())) => "the function returned without setting a response".to_string(),
                    Ok(Err(e)) => {
                        log_failure(&stderr, &e);
                        format!("{e:#}")
                    }
                    Err(e) => e.to_string(),
                };
                if timed_out.load(Ordering::Relaxed) {
                    Ok(text(
                        504,
                        format!("the function ran past its timeout of {:?}\n", self.timeout),
                    ))
                } else {
                    Ok(text(500, format!("the function failed: {failure}\n")))
                }
            }
        }
    }
}

fn log_failure(stream: &LogStream, error: &wasmtime::Error) {
    let line = format!("function failed: {error:#}");
    stream.tail.push(line.clone());
    stream.log.write("stderr", line, false);
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    handler: Arc<Handler>,
    mut stop: watch::Receiver<bool>,
    exit: Arc<watch::Sender<Option<ExitInfo>>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let stopped = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let mut stopping = stopped.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| handler.clone().handle(request));
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    // The gateway keeps idle connections to instances open: on stop they
                    // close at once, and a request in flight finishes first.
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = stopping.wait_for(|s| *s) => connection.as_mut().graceful_shutdown(),
                    }
                    let _ = connection.await;
                });
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    // Requests in flight finish; the stopper kills what outlives its grace.
    while connections.join_next().await.is_some() {}
    let _ = exit.send(Some(ExitInfo {
        code: Some(0),
        signal: None,
    }));
}

struct WasmControl {
    stop: watch::Sender<bool>,
    task: tokio::task::AbortHandle,
    exit: Arc<watch::Sender<Option<ExitInfo>>>,
    runtime: Weak<WasmRuntime>,
    digest: String,
    released: AtomicBool,
    /// Keeps the pool's threads while the instance may run on them.
    _pool: Option<Arc<PartitionPool>>,
}

impl InstanceControl for WasmControl {
    fn terminate(&self) {
        let _ = self.stop.send(true);
    }

    fn kill(&self) {
        self.task.abort();
        self.exit.send_if_modified(|exit| {
            if exit.is_none() {
                *exit = Some(ExitInfo {
                    code: None,
                    signal: Some(libc::SIGKILL),
                });
                true
            } else {
                false
            }
        });
    }

    fn cleanup(&self) {
        if !self.released.swap(true, Ordering::Relaxed) {
            if let Some(runtime) = self.runtime.upgrade() {
                runtime.release(&self.digest);
            }
        }
    }

    fn pids(&self) -> Vec<i32> {
        // The listener is this process's own socket.
        vec![std::process::id() as i32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn outbound(hooks: &mut OutboundHooks, uri: &str) -> impl std::future::Future<Output = Result<u16, String>> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never: Infallible| match never {})
            .boxed_unsync();
        let request = http::Request::builder().uri(uri).body(body).unwrap();
        let sent = Pin::from(hooks.send_request(request, None, Box::new(async { Ok(()) })));
        async move {
            sent.await
                .map(|(response, _)| response.status().as_u16())
                .map_err(|e| format!("{e:?}"))
        }
    }

    /// For runtimes that start no instance here: opening a log is refused.
    struct NoInstances;

    impl LogSink for NoInstances {
        fn open(&self, spec: &crate::InstanceSpec) -> std::io::Result<Arc<dyn InstanceLog>> {
            Err(std::io::Error::other(format!("{} was not expected to start", spec.id)))
        }
    }

    #[test]
    fn a_pool_too_big_to_reserve_falls_back_to_on_demand_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let fits = WasmRuntime::new(dir.path().join("a"), Arc::new(NoInstances), WasmPoolConfig::default()).unwrap();
        assert!(fits.pooling());
        // Ten million 4 GiB slots are far more address space than x86-64 has.
        let huge = WasmPoolConfig {
            instances: 10_000_000,
            max_memory_bytes: 4 << 30,
        };
        let fallback = WasmRuntime::new(dir.path().join("b"), Arc::new(NoInstances), huge).unwrap();
        assert!(!fallback.pooling());
        let off = WasmPoolConfig {
            instances: 0,
            ..WasmPoolConfig::default()
        };
        assert!(!WasmRuntime::new(dir.path().join("c"), Arc::new(NoInstances), off)
            .unwrap()
            .pooling());
    }

    #[tokio::test]
    async fn outbound_requests_reach_only_allowed_hosts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            }
        });
        let url = format!("http://127.0.0.1:{port}/");
        let mut none = OutboundHooks {
            allowed: Arc::new(Vec::new()),
        };
        assert_eq!(outbound(&mut none, &url).await, Err("HttpRequestDenied".to_string()));
        let mut other = OutboundHooks {
            allowed: Arc::new(vec!["api.example.com".into()]),
        };
        assert_eq!(outbound(&mut other, &url).await, Err("HttpRequestDenied".to_string()));
        let mut any = OutboundHooks {
            allowed: Arc::new(vec!["*".into()]),
        };
        assert_eq!(
            outbound(&mut any, &url).await,
            Err("DestinationIpProhibited".to_string()),
            "`*` does not reach this machine"
        );
        let mut allowed = OutboundHooks {
            allowed: Arc::new(vec![format!("127.0.0.1:{port}")]),
        };
        assert_eq!(outbound(&mut allowed, &url).await, Ok(204), "named, it does");
    }

    #[test]
    fn a_wildcard_leaves_out_loopback_and_link_local_unless_they_are_named() {
        let any = ["*".to_string()];
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "localhost",
            "api.localhost",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "169.254.169.254",
            "[fe80::1]",
            "0.0.0.0",
        ] {
            assert_eq!(permit(&any, host, Some(8081)), Permit::Local, "{host}");
        }
        assert_eq!(permit(&any, "10.0.0.5", None), Permit::UnlessLocal);
        assert_eq!(permit(&any, "example.com", Some(443)), Permit::UnlessLocal);
        let named = ["127.0.0.1:8081".to_string(), "localhost".to_string()];
        assert_eq!(permit(&named, "127.0.0.1", Some(8081)), Permit::Named);
        assert_eq!(permit(&named, "localhost", None), Permit::Named);
        assert_eq!(permit(&named, "127.0.0.1", Some(8080)), Permit::Denied);
        assert_eq!(permit(&[], "example.com", None), Permit::Denied);
    }
}
