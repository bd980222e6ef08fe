//! `portcullis-operator`: prints the CRDs, renders configuration from files, and runs the
//! controllers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_operator::render;

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
    };
    let done = render::render(&req)?;
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
