//! The real stack for the end-to-end tests: redis-server, daprd and `wasmtime serve`
//! hosting the built component, each on free loopback ports, stopped when the `Stack`
//! is dropped (also when a test fails). Their command lines are the local loop's, from
//! `scripts/local.sh command`; the binaries come from PATH, where `scripts/test.sh` puts
//! the cached ones (`eval "$(scripts/tools.sh env)"`). wasmtime runs the component composed
//! with scripts/wasmtime-adapter, which gives it its Spin variables from `SPIN_VARIABLE_*`
//! env, as Spin would.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// scripts/dapr/resiliency.yaml retries an event the app did not take first after 0.5 s, then
/// ever further apart: a redelivery shows up within this window, so a test can count them.
pub const RETRY_WINDOW: Duration = Duration::from_secs(5);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The component as `spin build` leaves it (scripts/test.sh builds it first).
pub fn wasm_path() -> PathBuf {
    let path = repo().join("target/wasm32-wasip2/release/dapr_spin_hello.wasm");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --target wasm32-wasip2 --release` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The component as `wasmtime serve` runs it: composed with the Spin variables adapter
/// (scripts/wasmtime-adapter/compose.sh, once per test binary). `wasm_path()` is unchanged.
pub fn wasmtime_component() -> &'static Path {
    static COMPOSED: OnceLock<PathBuf> = OnceLock::new();
    COMPOSED.get_or_init(|| {
        let output = Command::new(repo().join("scripts/wasmtime-adapter/compose.sh"))
            .arg(wasm_path())
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run scripts/wasmtime-adapter/compose.sh");
        assert!(
            output.status.success(),
            "scripts/wasmtime-adapter/compose.sh failed ({})",
            output.status
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// A free loopback port for a process of the stack to listen on. Picked at random below
/// 32768, outside the kernel's range for outgoing connections and bind(0)
/// (`ip_local_port_range`): a port the kernel handed out could be taken by any connection
/// made before the process binds it, such as one of the chaos test's clients' (seen in CI:
/// daprd's "bind: address already in use"). Never the same port twice in one test binary.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = 20_000 + (RandomState::new().build_hasher().finish() % 12_768) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// A started process whose output goes to a log file in the stack's folder.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &'static str, dir: &Path, command: &[String], env: &[(String, String)]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(&command[0])
            .args(&command[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run scripts/tools.sh and eval \"$(scripts/tools.sh env)\")",
                    command[0]
                )
            });
        Process { name, child, log }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

pub struct Stack {
    pub dir: PathBuf,
    pub redis_port: u16,
    /// The Redis of the pub/sub components: `redis_port`, unless started with its own.
    pub pubsub_redis_port: u16,
    pub dapr_http_port: u16,
    pub app_port: u16,
    daprd_command: Vec<String>,
    dapr_env: Vec<(String, String)>,
    /// The component's environment beyond the sidecar's address, for restarts.
    app_env: Vec<(String, String)>,
    persistent_redis: bool,
    redis: Process,
    pubsub_redis: Option<Process>,
    daprd: Option<Process>,
    host: Process,
    replica: Option<Replica>,
}

/// A second instance of the component with its own daprd, under the same app-id and on the
/// same Redis: what two pods of the SpinApp are.
pub struct Replica {
    pub app_port: u16,
    pub dapr_http_port: u16,
    host: Process,
    daprd: Process,
}

impl Replica {
    /// What this instance printed, as `Stack::app_output_lines`.
    pub fn app_output_lines(&self) -> Vec<String> {
        without_host_prefixes(&self.host.output())
    }
}

/// How a test wants its stack, beyond the defaults.
#[derive(Default)]
pub struct Options<'a> {
    /// The component's environment: its Spin variables as `SPIN_VARIABLE_<NAME>`.
    pub app_env: &'a [(&'a str, &'a str)],
    /// daprd's environment, e.g. its tokens (`DAPR_API_TOKEN`, `APP_API_TOKEN`).
    pub dapr_env: &'a [(&'a str, &'a str)],
    /// The pub/sub components on a Redis of their own, which keeps its streams on disk (as
    /// a broker does), so that a test can stop it and start it again without losing events.
    pub own_pubsub_redis: bool,
    /// daprd traces every call (scripts/dapr/tracing.yaml: sampling 1) to a Zipkin endpoint
    /// on this port.
    pub zipkin_port: Option<u16>,
    /// The Redis of the state store (and of the pub/sub, unless it has its own) keeps every
    /// write on disk before it answers, so that a test can kill it and start it again.
    pub persistent_redis: bool,
    /// The state store and pub/sub exactly as the DACA course ships them
    /// (tests/fixtures/course), instead of scripts/dapr's; only their Redis address rewritten.
    pub course_components: bool,
}

static STACKS: AtomicUsize = AtomicUsize::new(0);

impl Stack {
    /// Redis, then the component under wasmtime serve, then daprd (which asks the app for
    /// its subscriptions at start-up), and waits until the app reports ready.
    pub fn start() -> Stack {
        Stack::start_with_env(&[])
    }

    pub fn start_with_env(app_env: &[(&str, &str)]) -> Stack {
        Stack::start_with(Options {
            app_env,
            ..Options::default()
        })
    }

    pub fn start_traced(zipkin_port: u16) -> Stack {
        Stack::start_with(Options {
            zipkin_port: Some(zipkin_port),
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Stack {
        let dir = scratch_dir();
        fs::create_dir_all(dir.join("components")).unwrap();
        let (redis_port, dapr_http_port, app_port) = (free_port(), free_port(), free_port());
        let pubsub_redis_port = if options.own_pubsub_redis {
            free_port()
        } else {
            redis_port
        };

        let course = repo().join("tests/fixtures/course");
        for resource in fs::read_dir(repo().join("scripts/dapr")).unwrap() {
            let mut path = resource.unwrap().path();
            if options.course_components && course.join(path.file_name().unwrap()).exists() {
                path = course.join(path.file_name().unwrap());
            }
            let text = fs::read_to_string(&path).unwrap();
            let port = if text.contains("type: pubsub.") {
                pubsub_redis_port
            } else {
                redis_port
            };
            let address = format!("127.0.0.1:{port}");
            fs::write(
                dir.join("components").join(path.file_name().unwrap()),
                text.replace("localhost:6379", &address)
                    .replace("redis-master.default.svc.cluster.local:6379", &address),
            )
            .unwrap();
        }

        let redis = start_redis("redis", &dir, redis_port, options.persistent_redis);
        let pubsub_redis = options
            .own_pubsub_redis
            .then(|| start_redis("pubsub-redis", &dir, pubsub_redis_port, true));
        let host = start_host("wasmtime", &dir, app_port, dapr_http_port, options.app_env);
        let tracing = options.zipkin_port.map(|port| {
            let config = fs::read_to_string(repo().join("scripts/dapr/tracing.yaml"))
                .unwrap()
                .replace("localhost:9411", &format!("127.0.0.1:{port}"));
            fs::write(dir.join("tracing.yaml"), config).unwrap();
            dir.join("tracing.yaml")
        });
        let daprd_command = daprd_command(&dir, app_port, dapr_http_port, tracing.as_deref());
        let dapr_env = options
            .dapr_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let app_env = options
            .app_env
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut stack = Stack {
            dir,
            redis_port,
            pubsub_redis_port,
            dapr_http_port,
            app_port,
            daprd_command,
            dapr_env,
            app_env,
            persistent_redis: options.persistent_redis,
            redis,
            pubsub_redis,
            daprd: None,
            host,
            replica: None,
        };
        stack.wait_for("the component (GET /healthz)", Duration::from_secs(60), |s| {
            s.answers("/healthz", 200)
        });
        stack.start_daprd();
        stack.wait_until_ready();
        stack
    }

    /// Starts the second instance and its daprd, and waits until it is ready.
    pub fn start_replica(&mut self) -> &Replica {
        assert!(self.replica.is_none(), "a replica is already running");
        let (app_port, dapr_http_port) = (free_port(), free_port());
        let host = start_host("wasmtime-replica", &self.dir, app_port, dapr_http_port, &[]);
        self.wait_for("the replica (GET /healthz)", Duration::from_secs(60), |_| {
            request(app_port, "GET", "/healthz", &[], "").is_ok_and(|r| r.status == 200)
        });
        let daprd = Process::start(
            "daprd-replica",
            &self.dir,
            &daprd_command(&self.dir, app_port, dapr_http_port, None),
            &self.dapr_env,
        );
        self.replica = Some(Replica {
            app_port,
            dapr_http_port,
            host,
            daprd,
        });
        self.wait_for(
            "the replica to be ready (GET /readyz)",
            Duration::from_secs(60),
            |_| request(app_port, "GET", "/readyz", &[], "").is_ok_and(|r| r.status == 200),
        );
        self.replica.as_ref().unwrap()
    }

    pub fn replica(&self) -> &Replica {
        self.replica.as_ref().expect("no replica started")
    }

    /// Stops the pub/sub's own Redis (`Options::own_pubsub_redis`), as an outage would.
    pub fn stop_pubsub_redis(&mut self) {
        self.pubsub_redis
            .as_mut()
            .expect("the pub/sub has no Redis of its own")
            .stop();
    }

    /// Starts it again on the same port, with the streams it had on disk.
    pub fn start_pubsub_redis(&mut self) {
        self.pubsub_redis = Some(start_redis(
            "pubsub-redis",
            &self.dir,
            self.pubsub_redis_port,
            true,
        ));
    }

    /// Freezes the Redis of the state store (SIGSTOP): connections stay open, nothing answers.
    pub fn pause_redis(&self) {
        signal(&self.redis, "STOP");
    }

    pub fn resume_redis(&self) {
        signal(&self.redis, "CONT");
    }

    /// Kills the component's host (SIGKILL), requests in flight and all.
    pub fn kill_host(&mut self) {
        self.host.stop();
    }

    /// Starts the host again on the same port, with the same settings, and waits until it answers.
    pub fn start_host(&mut self) {
        let env: Vec<(&str, &str)> = self
            .app_env
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.host = start_host("wasmtime", &self.dir, self.app_port, self.dapr_http_port, &env);
        self.wait_for(
            "the component after its restart (GET /healthz)",
            Duration::from_secs(60),
            |s| s.answers("/healthz", 200),
        );
    }

    pub fn start_daprd(&mut self) {
        assert!(self.daprd.is_none(), "daprd is already running");
        self.daprd = Some(Process::start(
            "daprd",
            &self.dir,
            &self.daprd_command,
            &self.dapr_env,
        ));
        let port = self.dapr_http_port;
        self.wait_for("daprd (GET /v1.0/healthz)", Duration::from_secs(60), |_| {
            request(port, "GET", "/v1.0/healthz", &[], "").is_ok_and(|r| r.status == 204)
        });
    }

    pub fn stop_daprd(&mut self) {
        if let Some(mut daprd) = self.daprd.take() {
            daprd.stop();
        }
    }

    /// The share of one core daprd used over `over`, from its user and system time in
    /// /proc (Linux): near 0 at rest, unless something in it spins.
    pub fn daprd_cpu_share(&self, over: Duration) -> f64 {
        let pid = self.daprd.as_ref().expect("daprd is not running").child.id();
        let ticks = || -> u64 {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // Fields after the parenthesised command: utime and stime are the 12th and 13th.
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        };
        let clock_ticks: f64 = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        let before = ticks();
        std::thread::sleep(over);
        (ticks() - before) as f64 / clock_ticks / over.as_secs_f64()
    }

    /// Kills the Redis of the state store (SIGKILL) and starts it again: empty, or with what
    /// it had on disk (`Options::persistent_redis`).
    pub fn restart_redis(&mut self) {
        self.redis.stop();
        self.redis = start_redis("redis", &self.dir, self.redis_port, self.persistent_redis);
    }

    pub fn wait_until_ready(&mut self) {
        self.wait_for(
            "the component to be ready (GET /readyz)",
            Duration::from_secs(60),
            |s| s.answers("/readyz", 200),
        );
    }

    /// Polls `ready` until it holds; on time-out, fails with every process's log.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&mut Stack) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ready(self) {
                return;
            }
            let replica = self
                .replica
                .as_mut()
                .map(|r| [&mut r.host, &mut r.daprd])
                .into_iter()
                .flatten();
            for process in [Some(&mut self.redis), self.daprd.as_mut(), Some(&mut self.host)]
                .into_iter()
                .flatten()
                .chain(replica)
            {
                if let Some(status) = process.exited() {
                    panic!(
                        "{} exited ({status}) while waiting for {what}:\n{}",
                        process.name,
                        process.output()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        let replica = self
            .replica
            .as_ref()
            .map(|r| [&r.host, &r.daprd])
            .into_iter()
            .flatten();
        [
            Some(&self.redis),
            self.pubsub_redis.as_ref(),
            self.daprd.as_ref(),
            Some(&self.host),
        ]
        .into_iter()
        .flatten()
        .chain(replica)
        .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.output(), 60)))
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// What the component printed, without wasmtime's `stdout [N] :: ` prefixes.
    pub fn app_output_lines(&self) -> Vec<String> {
        without_host_prefixes(&self.host.output())
    }

    /// Whether the app answers `GET path` with `status` (a refused connection is a no).
    fn answers(&self, path: &str, status: u16) -> bool {
        request(self.app_port, "GET", path, &[], "").is_ok_and(|r| r.status == status)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], "")
    }

    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        request(self.app_port, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()))
    }

    /// Redis's own answer to a command (RESP, inline), e.g. to count keys behind Dapr's back.
    pub fn redis_command(&self, command: &str) -> String {
        redis_command(self.redis_port, command).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(replica) = &mut self.replica {
            replica.daprd.stop();
            replica.host.stop();
        }
        self.stop_daprd();
        self.host.stop();
        if let Some(pubsub_redis) = &mut self.pubsub_redis {
            pubsub_redis.stop();
        }
        self.redis.stop();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh folder for one started stack's files and logs.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dapr-spin-hello-e2e-{}-{}",
        std::process::id(),
        STACKS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The component under `wasmtime serve`, talking to the daprd on `dapr_http_port`: the one
/// variable a user sets to move the sidecar (tests/variables.rs).
fn start_host(
    name: &'static str,
    dir: &Path,
    app_port: u16,
    dapr_http_port: u16,
    app_env: &[(&str, &str)],
) -> Process {
    let port = dapr_http_port.to_string();
    start_component(
        name,
        dir,
        app_port,
        &[&[("SPIN_VARIABLE_DAPR_HTTP_PORT", port.as_str())], app_env].concat(),
    )
}

/// Set to a number, the host reuses each instance for up to that many requests
/// (`wasmtime serve --max-instance-reuse-count`), as a host that pools instances does: the
/// suites run with it in CI too (scripts/test.sh), so the component must be reuse-safe.
pub const INSTANCE_REUSE_VAR: &str = "E2E_INSTANCE_REUSE";

/// Set to a CPU list (`taskset -c`), the host runs on those cores only.
pub const HOST_CORES_VAR: &str = "E2E_HOST_CORES";

/// The composed component under `wasmtime serve` on `port`, with `env` as its WASI environment.
/// The component reads nothing but Spin variables, so every name is a `SPIN_VARIABLE_*`.
fn start_component(name: &'static str, dir: &Path, port: u16, env: &[(&str, &str)]) -> Process {
    for (name, _) in env {
        assert!(name.starts_with("SPIN_VARIABLE_"), "{name}: the component's settings are Spin variables, SPIN_VARIABLE_<NAME> (README, \"Spin variables\")");
    }
    let reuse = std::env::var(INSTANCE_REUSE_VAR).unwrap_or_default();
    let mut settings = vec![("APP_PORT", port.to_string()), ("WASMTIME_INSTANCE_REUSE", reuse)];
    settings.extend(env.iter().map(|(name, value)| (*name, value.to_string())));
    let component = wasmtime_component().display().to_string();
    let mut command = stack_command("app", &["wasmtime", &component], &settings);
    // Pinned to its own cores when asked (bench/soak.sh), as the benchmarks pin a server.
    if let Ok(cores) = std::env::var(HOST_CORES_VAR) {
        command.splice(0..0, ["taskset".to_string(), "-c".to_string(), cores]);
    }
    // The command names the variables; wasmtime takes their values from its environment.
    let variables: Vec<(String, String)> = env.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    Process::start(name, dir, &command, &variables)
}

/// The component alone under `wasmtime serve`, for tests that put their own server where
/// the sidecar would be (`SPIN_VARIABLE_DAPR_HTTP_ENDPOINT` in `env`).
pub struct Component {
    pub port: u16,
    dir: PathBuf,
    host: Process,
}

impl Component {
    pub fn start(env: &[(&str, &str)]) -> Component {
        let dir = scratch_dir();
        let port = free_port();
        let mut host = start_component("wasmtime", &dir, port, env);
        let start = Instant::now();
        while !request(port, "GET", "/healthz", &[], "").is_ok_and(|r| r.status == 200) {
            if let Some(status) = host.exited() {
                panic!("wasmtime exited ({status}):\n{}", host.output());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the component did not start:\n{}",
                host.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Component { port, dir, host }
    }

    pub fn call(&self, method: &str, path: &str) -> Reply {
        request(self.port, method, path, &[], "")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.host.output()))
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.host.stop();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The command line `scripts/local.sh <name>` runs (redis, daprd, app), for `args` and these
/// `settings` of local.sh's variables, and for no others: none leak in from this environment.
fn stack_command(name: &str, args: &[&str], settings: &[(&str, String)]) -> Vec<String> {
    let output = Command::new(repo().join("scripts/local.sh"))
        .arg("command")
        .arg(name)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("cannot run scripts/local.sh");
    assert!(
        output.status.success(),
        "scripts/local.sh command {name} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// daprd for the app on `app_port`, with the components in `dir`, its other ports free ones.
fn daprd_command(dir: &Path, app_port: u16, dapr_http_port: u16, config: Option<&Path>) -> Vec<String> {
    let resources = dir.join("components").display().to_string();
    let config = config.map(|path| path.display().to_string());
    let args: Vec<&str> = [Some(resources.as_str()), config.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let settings = [
        ("APP_PORT", app_port),
        ("DAPR_HTTP_PORT", dapr_http_port),
        ("DAPR_GRPC_PORT", free_port()),
        ("DAPR_INTERNAL_GRPC_PORT", free_port()),
        ("DAPR_METRICS_PORT", free_port()),
    ]
    .map(|(name, port)| (name, port.to_string()));
    stack_command("daprd", &args, &settings)
}

/// Output lines without wasmtime's `stdout [N] :: ` prefixes. wasmtime writes the prefix and
/// the line apart, so when two instances print at once one line can carry both prefixes and
/// the next none (seen in CI: `stdout [93] :: stdout [91] :: Received event: ...`).
pub fn without_host_prefixes(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|mut line| {
            while let Some(rest) = host_prefix_stripped(line) {
                line = rest;
            }
            line.to_string()
        })
        .collect()
}

/// `line` after a leading `stdout [N] :: ` or `stderr [N] :: `, if it has one.
fn host_prefix_stripped(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("stdout [")
        .or_else(|| line.strip_prefix("stderr ["))?;
    let (instance, rest) = rest.split_once("] :: ")?;
    (!instance.is_empty() && instance.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// redis-server on `port`: in memory, like the course's dev Redis (and kubernetes/base/redis.yaml),
/// so a restart empties it; or `persistent`, writing each command to an append-only file in
/// its own folder before it answers, so a restart keeps every write and stream entry it acknowledged.
fn start_redis(name: &'static str, dir: &Path, port: u16, persistent: bool) -> Process {
    let data = persistent.then(|| {
        let data = dir.join(name);
        fs::create_dir_all(&data).unwrap();
        data.display().to_string()
    });
    let command = stack_command(
        "redis",
        data.as_deref().as_slice(),
        &[("REDIS_PORT", port.to_string())],
    );
    let mut redis = Process::start(name, dir, &command, &[]);
    let start = Instant::now();
    while redis_command(port, "PING").map(|r| r != "+PONG").unwrap_or(true) {
        if redis.exited().is_some() || start.elapsed() > Duration::from_secs(20) {
            panic!("redis-server did not start:\n{}", redis.output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    redis
}

/// Sends a signal (`kill -STOP`, ...) to a started process.
fn signal(process: &Process, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(process.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {} failed", process.name);
}

fn redis_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection), so the tests see the wire as
/// curl does, with no client library between them and the server.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw)
        .ok_or_else(|| std::io::Error::other(format!("malformed reply: {:?}", String::from_utf8_lossy(&raw))))
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// One `Received event` line: `Received event: user_id="U" message="M" id=N delivery=D`,
/// then ` replaces=D1,D2` when the delivery took over from others that never completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub user_id: String,
    pub message: String,
    pub id: u64,
    pub delivery: String,
    pub replaces: Vec<String>,
}

/// The `Received event` lines among `lines`, read whole (the message is a quoted string).
pub fn received(lines: &[String]) -> Vec<Received> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("Received event: "))
        .map(|rest| parse_received(rest).unwrap_or_else(|| panic!("unexpected line: Received event: {rest}")))
        .collect()
}

fn parse_received(rest: &str) -> Option<Received> {
    let quoted = |text: &str, name: &str| -> Option<(String, usize)> {
        let text = text.strip_prefix(name)?;
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<String>();
        let value = values.next()?.ok()?;
        Some((value, name.len() + values.byte_offset()))
    };
    let (user_id, used) = quoted(rest, "user_id=")?;
    let rest = rest[used..].strip_prefix(' ')?;
    let (message, used) = quoted(rest, "message=")?;
    let fields: std::collections::HashMap<&str, &str> = rest[used..]
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    Some(Received {
        user_id,
        message,
        id: fields.get("id")?.parse().ok()?,
        delivery: fields.get("delivery")?.to_string(),
        replaces: fields
            .get("replaces")
            .map(|r| r.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// How many times each message was acted on, as a reader of the lines who knows the rule
/// counts it: a line whose delivery a later line replaces (its host or sidecar died before
/// it recorded completion, src/delivery/claims.rs) was acted on again by that later line, so it does not
/// count twice. Keyed by (user_id, id, message); also the lines each has, raw.
pub fn acted_on(received: &[Received]) -> std::collections::BTreeMap<(String, u64, String), (usize, usize)> {
    let replaced: std::collections::HashSet<&str> = received
        .iter()
        .flat_map(|r| r.replaces.iter().map(String::as_str))
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for line in received {
        let entry: &mut (usize, usize) = counts
            .entry((line.user_id.clone(), line.id, line.message.clone()))
            .or_default();
        entry.1 += 1;
        if !replaced.contains(line.delivery.as_str()) {
            entry.0 += 1;
        }
    }
    counts
}
