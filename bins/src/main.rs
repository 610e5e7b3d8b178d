//! `natter`: the chat server, the line client and the one-shot downloader.

mod cli;
mod gui;
mod impair;
mod impair_args;
mod line_ui;
mod local_time;
mod tui;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use natter_core::chat::password::Password;
use natter_runtime_common::client;
use natter_runtime_common::serve::{BoundServer, RunServer};
use natter_runtime_common::tls::{ClientTlsOptions, ServerTlsOptions, default_known_hosts};
use natter_runtime_common::{ClientOptions, DownloadOptions, RunClient, Runtime, ServerOptions};

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Before any thread starts: see local_time::init.
    local_time::init();
    let cli = Cli::parse();
    // Log lines would scribble over the terminal window of `natter tui`: there, only RUST_LOG
    // turns them on.
    // The window client logs only warnings unless asked (its libraries are chatty at info).
    let default_filter = match cli.command {
        Command::Tui(_) => "off",
        Command::Gui(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Server(args) => server(args),
        Command::Client(args) => client(args),
        Command::Tui(args) => tui(args),
        Command::Gui(args) => gui::run(args),
        Command::Get(args) => get(args),
        Command::Impair(args) => impair::run(&args),
    }
}

fn server(args: cli::ServerArgs) -> ExitCode {
    raise_descriptor_limit(args.max_connections);
    let mut options = ServerOptions::new(args.addr, args.files);
    options.chat.udp_ports = args.udp_ports.0..=args.udp_ports.1;
    options.chat.max_connections = args.max_connections;
    options.chat.max_per_ip = args.max_per_ip;
    options.chat.max_transfers_per_client = args.transfers_per_client;
    options.chat.max_transfers_per_ip = args.transfers_per_ip;
    options.chat.early_flights = !args.no_early_flights;
    options.chat.presence_room_limit = args.presence_limit;
    options.chat.name_timeout = args.name_timeout.into();
    options.chat.max_input_rate = args.max_input_rate;
    options.chat.max_queued_bytes = args.max_queued_bytes;
    options.chat.transfer_idle_timeout = args.idle_timeout.into();
    options.rescan_every = args.rescan_every.into();
    if let Err(err) = server_tls(&mut options, args.tls) {
        eprintln!("natter server: {err}");
        return ExitCode::FAILURE;
    }
    if let (Some(url), Some(node)) = (args.cluster, args.node) {
        if let Err(err) = natter_core::cluster::check_node_name(&node) {
            eprintln!("natter server: --node {node}: {err}");
            return ExitCode::FAILURE;
        }
        let mut cluster = natter_core::cluster::ClusterConfig::new(&node, 0);
        cluster.lease = std::time::Duration::from_millis(args.cluster_lease_ms.max(30));
        options.chat.cluster = Some(cluster);
        let mut broker = natter_runtime_common::cluster::Broker::new(&url);
        broker.ca = args.cluster_ca;
        broker.client_cert = args.cluster_cert.zip(args.cluster_key);
        match args.cluster_password_file.as_deref().map(read_password).transpose() {
            Ok(password) => broker.password = password,
            Err(err) => {
                eprintln!("natter server: --cluster-password-file: {err}");
                return ExitCode::FAILURE;
            }
        }
        options.broker = Some(broker);
    }
    let run: RunServer = match args.runtime.into() {
        Runtime::Mio => natter_runtime_mio::serve,
        Runtime::Smol => natter_runtime_smol::serve,
    };
    let result = BoundServer::bind(options).and_then(|server| server.run(run));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("natter server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// TLS and the room password (PROTOCOL 1.6) from the command line.
fn server_tls(options: &mut ServerOptions, args: cli::ServerTlsArgs) -> Result<(), String> {
    let Some(addr) = args.tls_addr else {
        return Ok(());
    };
    options.tls = Some(ServerTlsOptions {
        addr,
        cert: args.tls_cert,
        key: args.tls_key,
        data_dir: args.data_dir,
    });
    options.plain = !args.no_plain;
    if let Some(path) = args.password_file {
        options.chat.password = Some(read_password(&path)?);
    }
    Ok(())
}

/// The password in `path` (its first line); never printed, not even in an error.
fn read_password(path: &std::path::Path) -> Result<Password, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the password file {}: {err}", path.display()))?;
    let password = Password::new(text.lines().next().unwrap_or(""));
    if password.is_empty() {
        return Err(format!("the password file {} is empty", path.display()));
    }
    Ok(password)
}

/// The client's TLS options from the command line: `None` for plain chat.
pub(crate) fn client_tls(
    addr: &cli::ServerAddr,
    args: cli::ClientTlsArgs,
) -> Result<Option<ClientTlsOptions>, String> {
    if !(args.tls || addr.tls || args.fingerprint.is_some()) {
        if args.password_file.is_some() {
            return Err("a password is only ever sent over TLS: add --tls".into());
        }
        return Ok(None);
    }
    let fingerprint = args.fingerprint.as_deref().map(str::parse).transpose()?;
    let password = args.password_file.as_deref().map(read_password).transpose()?;
    Ok(Some(ClientTlsOptions {
        server_name: addr.host.clone(),
        known_hosts: args.known_hosts.unwrap_or_else(default_known_hosts),
        fingerprint,
        password,
    }))
}

/// The name given on the command line, or asked for on the terminal.
fn name_or_ask(given: Option<String>) -> Option<String> {
    if given.is_some() {
        return given;
    }
    print!("Your name: ");
    let _ = std::io::stdout().flush();
    let mut name = String::new();
    std::io::stdin().read_line(&mut name).ok()?;
    Some(name.trim_end_matches(['\r', '\n']).to_owned())
}

impl cli::SessionArgs {
    /// The client loop of the runtime asked for.
    fn client_loop(&self) -> RunClient {
        match self.runtime.into() {
            Runtime::Mio => natter_runtime_mio::client,
            Runtime::Smol => natter_runtime_smol::client,
        }
    }

    /// A session as `name` at `addr` with these options, saving into `out_dir`.
    fn client_options(
        &self,
        addr: std::net::SocketAddr,
        name: String,
        out_dir: std::path::PathBuf,
        tls: Option<ClientTlsOptions>,
    ) -> ClientOptions {
        ClientOptions {
            addr,
            name,
            out_dir,
            part_size: self.part_size,
            stall_timeout: self.stall_timeout.into(),
            max_size: self.max_size,
            max_transfers: self.transfers,
            tls,
        }
    }
}

fn client(args: cli::ClientArgs) -> ExitCode {
    let tls = match client_tls(&args.addr, args.session.tls.clone()) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("natter client: {err}");
            return ExitCode::FAILURE;
        }
    };
    let stdin = std::io::stdin();
    let Some(name) = name_or_ask(args.name) else {
        return ExitCode::FAILURE;
    };
    println!("{}", line_ui::HELP);
    let options = args.session.client_options(args.addr.addr, name, args.out, tls);
    let mut ui = line_ui::LineUi::new();
    // Read on the runtime's input thread, so the iterator must own its handle.
    let lines = std::iter::from_fn(move || {
        let mut line = String::new();
        match stdin.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
        }
    });
    let result = client::run_client(args.session.client_loop(), options, &mut ui, lines);
    match result {
        Ok(()) if ui.all_downloads_ok() => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("natter client: {err}");
            ExitCode::FAILURE
        }
    }
}

fn tui(args: cli::ClientArgs) -> ExitCode {
    let tls = match client_tls(&args.addr, args.session.tls.clone()) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("natter tui: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Some(name) = name_or_ask(args.name) else {
        return ExitCode::FAILURE;
    };
    let options = args.session.client_options(args.addr.addr, name, args.out, tls);
    match tui::run(args.session.client_loop(), options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("natter tui: {err}");
            ExitCode::FAILURE
        }
    }
}

fn get(args: cli::GetArgs) -> ExitCode {
    let tls = match client_tls(&args.addr, args.session.tls.clone()) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("natter get: {err}");
            return ExitCode::FAILURE;
        }
    };
    let name = args.name.unwrap_or_else(|| format!("get-{}", std::process::id()));
    let options = DownloadOptions::new(
        args.files,
        args.session.client_options(args.addr.addr, name, args.out, tls),
    );
    let label = match options.files.as_slice() {
        [one] => one.clone(),
        many => format!("{} files", many.len()),
    };
    // One bar for one file; with several running at once, bars would fight over one line.
    let mut bar =
        line_ui::ProgressBar::hidden_until_known(&label, args.quiet || options.files.len() > 1);
    let mut last = None;
    let mut on_progress = |p: &natter_core::transfer::receiver::Progress| {
        bar.update(p);
        tracing::trace!(
            "progress: {} of {} bytes, window {}, in flight {}, bw {:?}, srtt {:?}, lost {}, probes {}",
            p.bytes_received,
            p.size,
            p.window,
            p.in_flight,
            p.bandwidth,
            p.srtt,
            p.parts_lost,
            p.probe_timeouts
        );
        last = Some(p.clone());
    };
    let result = client::download_many(args.session.client_loop(), &options, &mut on_progress);
    bar.finish();
    if let Some(progress) = last {
        tracing::debug!("transfer statistics: {progress:?}");
    }
    let results = match result {
        Ok(results) => results,
        Err(err) => {
            eprintln!("natter get: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    for (file, result) in &results {
        match result {
            Ok(report) => println!("{report}"),
            Err(err) => {
                failed += 1;
                eprintln!("natter get: {file}: {err}");
            }
        }
    }
    if failed > 0 || results.len() < options.files.len() {
        if options.files.len() > 1 {
            eprintln!("natter get: {failed} of {} files failed", options.files.len());
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Each connection and each transfer holds a descriptor, and the usual soft limit (1024) is lower
/// than a busy room needs. Raise it toward the hard limit the administrator allows; a server that
/// cannot only warns, and refuses connections past its own maximum anyway.
fn raise_descriptor_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = (max_connections as u64).saturating_add(256);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    limit.current = Some(limit.maximum.map_or(wanted, |max| max.min(wanted)));
    if let Err(err) = setrlimit(Resource::Nofile, limit) {
        tracing::warn!("cannot raise the open-file limit from {current}: {err}");
    } else if let Some(now) = limit.current.filter(|&now| now < wanted) {
        tracing::warn!(
            "open-file limit is {now}: fewer than the {max_connections} connections asked for may fit"
        );
    }
}
