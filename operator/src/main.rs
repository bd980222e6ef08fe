//! `portcullis-operator`: prints the CRDs, renders configuration from files, and runs the
//! controllers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_operator::{certs, controller, render, webhook_server};

#[derive(Parser)]
#[command(name = "portcullis-operator", version, about = "The Portcullis operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print both CustomResourceDefinitions as YAML (what crds/ holds).
    Crds,
    /// Compile SecurityProfiles, ApiRoutes and Secrets from YAML into a sidecar's files.
    Render(RenderArgs),
    /// Run the controllers against the cluster in the kubeconfig (in-cluster config when
    /// deployed).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Admin address: /metrics, /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    admin: std::net::SocketAddr,
    /// Hits per minute across every route (Helm value orgAllowance.requestsPerMinute).
    #[arg(long)]
    org_allowance: Option<u32>,
    /// Peers (CIDRs, comma-separated) whose X-Forwarded-For the sidecars believe.
    #[arg(long, value_delimiter = ',')]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Namespace of the leader-election Lease (default: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "portcullis-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: $POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds between renewals (and a standby's retries).
    #[arg(long, default_value_t = 5)]
    lease_renew: u64,
    /// Namespaces reconciled at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds between full resyncs.
    #[arg(long, default_value_t = 300)]
    resync: u64,
    /// Seconds a shutdown waits for running reconciles.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// HTTPS address of the admission webhooks (every replica serves them); none: no webhooks.
    #[arg(long, env = "PORTCULLIS_WEBHOOK_ADDR")]
    webhook_addr: Option<std::net::SocketAddr>,
    /// Settings file (the chart's settings.json): the sidecar to inject, the webhook Service
    /// and configurations; org allowance and trusted proxies when the flags are not given.
    #[arg(long, env = "PORTCULLIS_SETTINGS")]
    settings: Option<PathBuf>,
    /// Lifetime of the operator's CA (seconds, or with s, m, h, d); rotated at two thirds.
    #[arg(long, default_value = "365d", value_parser = parse_lifetime)]
    ca_lifetime: i64,
    /// Lifetime of the certificates the CA issues (routes, webhooks); renewed at two thirds.
    #[arg(long, default_value = "30d", value_parser = parse_lifetime)]
    cert_lifetime: i64,
    /// Give every configuration group a NetworkPolicy admitting ingress to the sidecar's
    /// ports only (false: none is written; existing ones are left alone).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    network_policy: bool,
}

fn parse_lifetime(s: &str) -> Result<i64, String> {
    portcullis_operator::certs::parse_duration(s)
}

#[derive(clap::Args)]
struct RenderArgs {
    /// YAML files or directories (searched for *.yaml and *.yml).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Directory to write config.json and secrets.json into.
    #[arg(long)]
    out: PathBuf,
    /// Compile only the routes that select a pod with these labels (k=v,k2=v2).
    #[arg(long)]
    workload_labels: Option<String>,
    /// Hits per minute across every route.
    #[arg(long)]
    org_allowance: Option<u32>,
    /// Namespace to render when the input holds several.
    #[arg(long)]
    namespace: Option<String>,
    /// Peers (CIDRs, comma-separated) whose X-Forwarded-For the sidecar believes.
    #[arg(long, value_delimiter = ',')]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The sidecar will count limits in a shared store (its --limits-store, Helm value
    /// sidecar.limitsStore.url): profiles may have a quota, which is refused without one.
    #[arg(long)]
    with_limits_store: bool,
    /// File whose bytes (at least 32) key the configuration generation, e.g. the operator's
    /// Secret portcullis-generation-key, data `key`, decoded. Without it a new random key is
    /// used, so each render of the same input has another generation.
    #[arg(long, value_name = "FILE")]
    generation_key_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", portcullis_operator::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => match run_render(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run_controllers(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_controllers(args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::time::Duration;

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = match &args.settings {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading the settings file {}", path.display()))?;
            portcullis_operator::webhook::OperatorSettings::from_json(&bytes)
                .with_context(|| format!("parsing the settings file {}", path.display()))?
        }
        None => Default::default(),
    };
    let lifetimes = portcullis_operator::certs::Lifetimes {
        ca: args.ca_lifetime,
        leaf: args.cert_lifetime.min(args.ca_lifetime),
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "portcullis-operator".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let options = controller::Options {
        settings: controller::plan::Settings {
            org_allowance: args.org_allowance.or(settings.org_allowance.requests_per_minute),
            trusted_proxies: if args.trusted_proxies.is_empty() {
                settings.trusted_proxies.clone()
            } else {
                args.trusted_proxies
            },
            limits_store_configured: settings.sidecar.limits_store.is_configured(),
            network_policy: args.network_policy,
        },
        admin: args.admin,
        lease: controller::leader::LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            identity,
            duration: Duration::from_secs(args.lease_duration.max(1)),
            renew_every: Duration::from_secs(args.lease_renew.max(1)),
        },
        workers: args.workers,
        resync: Duration::from_secs(args.resync.max(1)),
        drain: Duration::from_secs(args.drain),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .context("loading the kubeconfig")?
            }
            None => kube::Config::infer()
                .await
                .context("finding the cluster (kubeconfig or in-cluster)")?,
        };
        let client = kube::Client::try_from(config).context("building the API client")?;
        let metrics = controller::Metrics::new();
        let health = std::sync::Arc::new(controller::Health::new(args.webhook_addr.is_some()));
        let webhooks = match args.webhook_addr {
            None => None,
            Some(addr) => {
                let listener = webhook_server::bind(addr)
                    .await
                    .with_context(|| format!("binding the webhook port {addr}"))?;
                let opts = webhook_server::Options {
                    namespace: options.lease.namespace.clone(),
                    sidecar: settings.sidecar.clone(),
                    webhook: settings.webhook.clone(),
                    lifetimes,
                };
                Some(tokio::spawn(webhook_server::serve(
                    client.clone(),
                    listener,
                    opts,
                    metrics.clone(),
                    health.clone(),
                )))
            }
        };
        // The certificate manager runs on the leader; it keeps a CA even without routes that
        // ask for certificates when the webhooks need one.
        // SIGTERM/SIGINT, for everyone who stops on it.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let (leading_tx, leading_rx) = tokio::sync::watch::channel(false);
        let follow = tokio::spawn(certs::manager::follow_lease(
            client.clone(),
            options.lease.clone(),
            leading_tx,
            stopped(stop_rx.clone()),
        ));
        let has_webhook_settings = !settings.webhook.mutating_webhook_configuration.is_empty()
            || !settings.webhook.validating_webhook_configuration.is_empty();
        let manager = tokio::spawn(certs::manager::run_when_leading(
            client.clone(),
            certs::manager::Options {
                namespace: options.lease.namespace.clone(),
                lifetimes,
                always: webhooks.is_some(),
                webhook: has_webhook_settings.then(|| settings.webhook.clone()),
            },
            leading_rx,
        ));
        let result = controller::run(client, options, metrics, health, stopped(stop_rx)).await;
        // The manager first: it also ends by itself once the follower (its channel's
        // sender) is gone.
        manager.abort();
        follow.abort();
        if let Some(w) = webhooks {
            w.abort();
        }
        result?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn run_render(args: RenderArgs) -> Result<(), render::RenderError> {
    let req = render::Request {
        inputs: args.files,
        out: args.out,
        workload_labels: args.workload_labels.as_deref().map(render::parse_labels).transpose()?,
        org_allowance: args.org_allowance,
        namespace: args.namespace,
        trusted_proxies: args.trusted_proxies,
        limits_store_configured: args.with_limits_store,
        generation_key_file: args.generation_key_file,
    };
    let done = render::render(&req)?;
    for warning in &done.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "rendered namespace {} generation {} into {}: {} route(s) [{}], {} profile(s) [{}]",
        done.namespace,
        done.generation,
        req.out.display(),
        done.routes.len(),
        done.routes.join(", "),
        done.profiles.len(),
        done.profiles.join(", "),
    );
    Ok(())
}
