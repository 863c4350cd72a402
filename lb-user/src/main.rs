//! `lb`: the node load balancer. `lb run` serves traffic (L7 proxy + XDP); `lb check` validates
//! a config and prints every error with its field path.

use clap::{Parser, Subcommand};
use lb_user::{bpf, config, daemon};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static ALLOC: lb_user::alloc::Mimalloc = lb_user::alloc::Mimalloc;

#[derive(Parser)]
#[command(name = "lb", version, about = "XDP-accelerated L4+L7 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve traffic from a config file (SIGHUP reloads it, SIGTERM/Ctrl-C stops cleanly).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Interface to attach the XDP program to (repeatable). None: no XDP.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// XDP attach mode: native (driver) or skb (generic).
        #[arg(long, default_value = "native", value_parser = bpf::parse_mode)]
        xdp_mode: aya::programs::XdpMode,
        /// Emit the XDP program's debug log lines (aya-log) into this log.
        #[arg(long)]
        xdp_debug: bool,
        /// Admin endpoint (/metrics, /healthz).
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
        /// Seconds open connections get to finish on shutdown.
        #[arg(long, default_value_t = 10)]
        grace_secs: u64,
        /// Seconds between checks of the config and certificate files for changes (0: reload
        /// only on SIGHUP).
        #[arg(long, default_value_t = 2)]
        watch_secs: u64,
        /// Proxy worker threads (HAProxy's nbthread). Default: one per CPU.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
        /// Also serve Ingresses from Kubernetes (routes and clusters added to the config file's;
        /// nothing is served before the first full list).
        #[arg(long)]
        kube: bool,
        /// Kubeconfig for --kube (default: in-cluster config, then $KUBECONFIG, ~/.kube/config).
        #[arg(long, requires = "kube")]
        kubeconfig: Option<PathBuf>,
        /// Only Ingresses of this IngressClass (default: every class of our controller).
        #[arg(long, requires = "kube")]
        ingress_class: Option<String>,
        /// Our IngressClass controller name.
        #[arg(long, requires = "kube", default_value = lb_user::kube::DEFAULT_CONTROLLER)]
        controller: String,
        /// Watch only this namespace (repeatable; default: all).
        #[arg(long = "watch-namespace", requires = "kube")]
        watch_namespaces: Vec<String>,
        /// The settings ConfigMap (NAMESPACE/NAME): its lb.yaml replaces --config while it exists.
        #[arg(long, requires = "kube", default_value = "lb-system/lb-config", value_parser = lb_user::kube::settings::parse_ref)]
        configmap: (String, String),
    },
    /// Validate a config: print every error with its field path; exit 1 if there is any.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Talk to a running lb's runtime API (weights, drain, maint, status).
    Ctl {
        /// Admin endpoint of the running lb.
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
        /// File holding the API's bearer token (admin.token_file of that lb).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the API's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Clusters and endpoints: state, weights, health, connections, responses.
    Status,
    /// Set an endpoint's weight: 0-256, or a percentage of its configured weight (`5%`).
    SetWeight {
        cluster: String,
        endpoint: String,
        weight: String,
    },
    /// No new requests to the endpoint; in-flight ones finish.
    Drain { cluster: String, endpoint: String },
    /// Take the endpoint out of service (maintenance).
    Maint { cluster: String, endpoint: String },
    /// End drain or maintenance.
    Ready { cluster: String, endpoint: String },
    /// Remove every runtime override of the endpoint.
    Reset { cluster: String, endpoint: String },
    /// L7 workers (listeners with workers > 1): state, open and accepted connections.
    Workers,
    /// No new connections to worker K (SK_REUSEPORT steering); its open ones finish.
    DrainWorker {
        worker: u32,
        /// Only on this listener (default: every listener that has worker K).
        #[arg(long)]
        listener: Option<String>,
    },
    /// Worker K takes new connections again.
    ReadyWorker {
        worker: u32,
        #[arg(long)]
        listener: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Check { config } => check(&config),
        Cmd::Ctl {
            admin,
            token_file,
            json,
            cmd,
        } => ctl(
            lb_user::ctl::Ctl {
                admin,
                token_file,
                json,
            },
            cmd,
        ),
        Cmd::Run {
            config,
            ifaces,
            xdp_mode,
            xdp_debug,
            admin,
            grace_secs,
            watch_secs,
            workers,
            kube,
            kubeconfig,
            ingress_class,
            controller,
            watch_namespaces,
            configmap,
        } => {
            let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            if xdp_debug {
                // aya-log records carry the eBPF crate's module path as their target.
                if let Ok(directive) = "lb_ebpf=debug".parse() {
                    filter = filter.add_directive(directive);
                }
            }
            tracing_subscriber::fmt()
                // stdout carries the access log.
                .with_writer(std::io::stderr)
                .with_env_filter(filter)
                .init();
            let opts = daemon::RunOptions {
                config,
                ifaces,
                xdp_mode,
                xdp_debug,
                admin,
                grace: Duration::from_secs(grace_secs),
                watch: (watch_secs > 0).then(|| Duration::from_secs(watch_secs)),
                kube: kube.then_some(lb_user::kube::source::KubeRun {
                    kubeconfig,
                    options: lb_user::kube::Options {
                        controller,
                        ingress_class,
                        namespaces: watch_namespaces,
                        config_map: configmap,
                    },
                    settings: Default::default(),
                    status: Default::default(),
                }),
            };
            // One worker: a current-thread runtime (no work-stealing bookkeeping), like one
            // HAProxy thread; more: the multi-threaded scheduler.
            let mut rt = match workers {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(usize::from(n));
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            // Every thread that runs connections stashes its 2-16 KiB blocks (alloc.rs): this
            // one (the current-thread runtime) and the runtime's threads, which free theirs
            // when they end (the blocking pool's come and go).
            lb_user::alloc::cache_this_thread();
            rt.on_thread_start(lb_user::alloc::cache_this_thread)
                .on_thread_stop(lb_user::alloc::release_thread_cache);
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(daemon::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn ctl(c: lb_user::ctl::Ctl, cmd: CtlCmd) -> ExitCode {
    use lb_user::ctl::Action;
    let (action, target) = match cmd {
        CtlCmd::Status => (Action::Status, None),
        CtlCmd::SetWeight {
            cluster,
            endpoint,
            weight,
        } => (Action::SetWeight(weight), Some((cluster, endpoint))),
        CtlCmd::Drain { cluster, endpoint } => (Action::State("drain"), Some((cluster, endpoint))),
        CtlCmd::Maint { cluster, endpoint } => (Action::State("maint"), Some((cluster, endpoint))),
        CtlCmd::Ready { cluster, endpoint } => (Action::State("ready"), Some((cluster, endpoint))),
        CtlCmd::Reset { cluster, endpoint } => (Action::Reset, Some((cluster, endpoint))),
        CtlCmd::Workers => (Action::Workers, None),
        CtlCmd::DrainWorker { worker, listener } => {
            let state = "drain";
            (
                Action::WorkerState {
                    worker,
                    state,
                    listener,
                },
                None,
            )
        }
        CtlCmd::ReadyWorker { worker, listener } => {
            let state = "ready";
            (
                Action::WorkerState {
                    worker,
                    state,
                    listener,
                },
                None,
            )
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(c.run(action, target)) {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path).and_then(|cfg| lb_user::source::load_tls(&cfg, path).map(|_| cfg))
    {
        Ok(cfg) => {
            let endpoints: usize = cfg.clusters.iter().map(|c| c.endpoints.len()).sum();
            println!(
                "{}: OK ({} listeners, {} routes, {} clusters, {} endpoints, {} deny prefixes)",
                path.display(),
                cfg.listeners.len(),
                cfg.routes.len(),
                cfg.clusters.len(),
                endpoints,
                cfg.xdp.deny.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}
