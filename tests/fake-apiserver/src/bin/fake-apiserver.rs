//! `fake-apiserver`: the fake Kubernetes API server as a process, so shell tests can run
//! the real `portcullis-operator run` against it.
//!
//! ```text
//! fake-apiserver [--kubeconfig PATH] [--namespace NS] [--seed FILE_OR_DIR]...
//! ```
//!
//! Listens on 127.0.0.1 (an ephemeral port), creates the objects of each `--seed` YAML file
//! (or each `*.yaml`/`*.yml` in a directory; kinds the server does not serve, such as
//! `Namespace`, are skipped with a note on stderr), writes a kubeconfig for itself to
//! `--kubeconfig` (atomically: a reader never sees half a file) and prints its URL on
//! stdout. It serves until SIGTERM or SIGINT.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use portcullis_fake_apiserver::FakeApiServer;
use serde::Deserialize as _;
use serde_json::Value;

const USAGE: &str = "usage: fake-apiserver [--kubeconfig PATH] [--namespace NS] [--seed FILE_OR_DIR]...";

struct Args {
    kubeconfig: Option<PathBuf>,
    namespace: String,
    seeds: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        kubeconfig: None,
        namespace: "default".to_owned(),
        seeds: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--kubeconfig" => args.kubeconfig = Some(PathBuf::from(value()?)),
            "--namespace" => args.namespace = value()?,
            "--seed" => args.seeds.push(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The YAML files named by `path`: itself, or the `*.yaml`/`*.yml` files of a directory.
fn yaml_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let file = entry?.path();
        if matches!(file.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

fn seed(server: &FakeApiServer, path: &Path) -> Result<usize, String> {
    let mut created = 0;
    for file in yaml_files(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let object = Value::deserialize(document).map_err(|e| format!("{}: {e}", file.display()))?;
            if object.is_null() {
                continue;
            }
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            match server.create(&object) {
                Ok(_) => created += 1,
                Err(e) => eprintln!("fake-apiserver: {}: skipped {kind} {name}: {e}", file.display()),
            }
        }
    }
    Ok(created)
}

fn write_atomically(server: &FakeApiServer, path: &Path, namespace: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    server.write_kubeconfig(&tmp, namespace)?;
    std::fs::rename(&tmp, path)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("fake-apiserver: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match FakeApiServer::start().await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("fake-apiserver: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    for path in &args.seeds {
        match seed(&server, path) {
            Ok(n) => eprintln!("fake-apiserver: created {n} object(s) from {}", path.display()),
            Err(e) => {
                eprintln!("fake-apiserver: seeding: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.kubeconfig
        && let Err(e) = write_atomically(&server, path, &args.namespace)
    {
        eprintln!("fake-apiserver: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{}", server.url());
    let _ = std::io::stdout().flush();

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("fake-apiserver: SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
