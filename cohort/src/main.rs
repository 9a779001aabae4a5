//! `cohort`: multi-stage canary delivery for Kubernetes. This binary is wiring only: it
//! parses the command line, calls the library crates and prints what they return.
// One call needs it: heap.rs gives freed memory back to the system (malloc_trim).
#![deny(unsafe_code)]

// Human output goes through `out!` and `eout!`: what they print may hold text from outside
// (reports, commit messages, reasons, file contents, names, errors from servers), so control
// characters and bidi overrides are shown escaped and cannot drive the terminal. `println!`
// and `eprintln!` are refused by clippy here (cohort/clippy.toml) so nothing slips past.

/// `println!` for people: unsafe characters escaped (line breaks kept); returns an error
/// instead of panicking when stdout is gone (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(
            std::io::stdout().lock(),
            "{}",
            cohort_core::printable::escape_lines(&format!($($arg)*))
        )?
    }};
}

/// `out!` for exact text: JSON (serde_json escapes what it must, and `-o json` keeps the
/// text as it is), and lines cohort colours itself, whose text from outside is escaped first.
macro_rules! out_exact {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// `eprintln!` for people, escaped as `out!` is.
macro_rules! eout {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}",
            cohort_core::printable::escape_lines(&format!($($arg)*))
        );
    }};
}

mod agent_cmd;
mod analyze_cmd;
mod apply_cmd;
mod autopilot_cmd;
mod change;
mod checks_run;
mod cli;
mod demo;
mod heap;
mod man_cmd;
mod repo_cmds;
mod router_cmd;
mod serve_cmd;
mod status_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};
use cohort_release::record::Action;

/// A mistake in how cohort was called (an unknown service, a track that is not a stage):
/// exit status 2, like a usage error found by the argument parser.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `e`, with its causes, as a usage error (exit status 2).
pub fn usage(e: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
    UsageError(format!("{:#}", anyhow::Error::new(e))).into()
}

/// The cluster could not be checked (unreachable, forbidden, misconfigured): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CouldNotCheck(pub cohort_kube::KubeError);

/// The release repo could not be turned into objects to apply, or the cluster refused them
/// (a field conflict, an invalid object): exit status 2, keeping 1 for what the command
/// itself found (a rollout that did not become ready, differences).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CouldNotApply(pub String);

/// A judgement could not be made on the traffic seen so far; what was printed says how much
/// more is needed: exit status 3.
#[derive(Debug, thiserror::Error)]
#[error("inconclusive")]
pub struct Inconclusive;

/// The repo or the request is invalid and what was printed says why: exit status 1 with no
/// further message.
#[derive(Debug, thiserror::Error)]
#[error("invalid")]
pub struct Reported;

/// The release repo is invalid and what was printed says why; for commands whose exit status
/// 1 means something else (apply, diff): exit status 2 with no further message.
#[derive(Debug, thiserror::Error)]
#[error("the release repo is invalid")]
pub struct InvalidRepo;

/// The runtime of a command that talks to a cluster or a server: one thread is plenty.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The runtime of a long-running server (`serve`, `agent`): two threads, so a slow request or
/// apply never stalls the admin port or other clients.
fn two_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What kubectl runs for `kubectl cohort ...`: an executable of this name on the PATH.
const KUBECTL_PLUGIN: &str = "kubectl-cohort";

/// The command line, parsed. Run as kubectl's plugin, help and usage name the command as its
/// user typed it (`kubectl cohort status`), not as the file kubectl found.
fn parse_command_line() -> Cli {
    let mut command = Cli::command();
    let argv0 = std::env::args_os().next();
    let file = argv0
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name());
    if file.is_some_and(|f| f == KUBECTL_PLUGIN) {
        command = command.bin_name("kubectl cohort");
    }
    let mut matches = command.clone().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

fn main() -> ExitCode {
    let cli = parse_command_line();
    let result = match cli.command {
        Command::Demo { fast, keep } => demo::run(&demo::DemoOptions { fast, keep }),
        Command::Init { ref dir } => repo_cmds::init(dir.clone().or(cli.repo.clone())),
        Command::Validate { output } => repo_cmds::validate(&cli, output),
        Command::Render(ref args) => repo_cmds::render(&cli, args),
        Command::Tracks { ref services, output } => repo_cmds::tracks(&cli, services, output),
        Command::History {
            ref service,
            ref track,
            limit,
            output,
        } => repo_cmds::history(&cli, service.as_deref(), track.as_deref(), limit, output),
        Command::Deploy {
            ref service,
            ref build,
            ref out,
        } => change::run(&cli, service, change::Request::Deploy { build }, out.output),
        Command::Promote {
            ref service,
            ref to,
            force,
            ref reason,
            ref out,
            ref judge,
        } => change::run(
            &cli,
            service,
            change::Request::Promote {
                to: to.as_deref(),
                force,
                reason: reason.as_deref(),
                judge,
            },
            out.output,
        ),
        Command::Rollback {
            ref service,
            ref track,
            ref to,
            ref reason,
            ref out,
        } => change::run(
            &cli,
            service,
            change::Request::Rollback {
                track,
                to: to.as_deref(),
                reason: reason.as_deref(),
            },
            out.output,
        ),
        Command::Autopilot(ref args) => autopilot_cmd::run(&cli, args),
        Command::Pause {
            ref service,
            ref reason,
            ref out,
        } => change::hold(&cli, Some(service), Action::Pause, Some(reason), out.output),
        Command::Resume { ref service, ref out } => {
            change::hold(&cli, Some(service), Action::Resume, None, out.output)
        }
        Command::Freeze {
            ref service,
            ref reason,
            ref out,
        } => change::hold(&cli, service.as_deref(), Action::Freeze, Some(reason), out.output),
        Command::Unfreeze { ref service, ref out } => {
            change::hold(&cli, service.as_deref(), Action::Unfreeze, None, out.output)
        }
        Command::Approve {
            ref service,
            ref build,
            ref check,
            ref note,
            ref out,
        } => change::run(
            &cli,
            service,
            change::Request::Approve {
                build,
                check,
                note: note.as_deref(),
            },
            out.output,
        ),
        Command::Router {
            ref config,
            ref haproxy_config,
            listen,
            admin,
            drain_delay,
            grace,
            header_timeout,
            response_timeout,
            max_header_bytes,
            max_connections,
            threads,
            upstream_idle_timeout,
            tunnel_timeout,
            park_after,
            hyper_only,
            ref admin_config_from,
            client_body_timeout,
            max_streams,
            discovery,
            ref namespace,
            ref kubeconfig,
        } => 'router: {
            let max_connections = match router_cmd::max_connections(max_connections.map(|n| n as usize)) {
                Ok(n) => n,
                Err(e) => break 'router Err(e),
            };
            let limits = cohort_router::proxy::Limits {
                header_read_timeout: header_timeout,
                max_header_bytes,
                response_timeout,
                max_connections,
                grace,
                upstream_idle_timeout,
                client_body_timeout,
                max_streams,
                tunnel_idle_timeout: tunnel_timeout,
                park_after,
                express: !hyper_only,
            };
            let source = match (config, haproxy_config) {
                (_, Some(h)) => router_cmd::Source::Haproxy(h.clone()),
                (Some(c), None) => router_cmd::Source::Cohort(c.clone()),
                (None, None) => unreachable!("clap requires one of --config and --haproxy-config"),
            };
            let discovery = match discovery {
                cli::DiscoveryArg::Dns if namespace.is_some() || kubeconfig.is_some() => {
                    break 'router Err(anyhow::Error::new(UsageError(
                        "--namespace and --kubeconfig are for --discovery kubernetes".into(),
                    )));
                }
                cli::DiscoveryArg::Dns => router_cmd::Discovery::Dns,
                cli::DiscoveryArg::Kubernetes => router_cmd::Discovery::Kubernetes(cohort_kube::Target {
                    kubeconfig: kubeconfig.clone(),
                    context: None,
                    namespace: namespace.clone(),
                }),
            };
            router_cmd::run(
                &source,
                &discovery,
                listen,
                admin,
                drain_delay,
                limits,
                threads.map(usize::from),
                cohort_router::admin::ConfigReaders {
                    networks: admin_config_from.clone(),
                },
            )
        }
        Command::Status(ref args) => status_cmd::status(&cli, args),
        Command::Apply(ref args) => apply_cmd::apply(&cli, args),
        Command::Analyze(ref args) => analyze_cmd::analyze(&cli, args),
        Command::Diff(ref args) => apply_cmd::diff(&cli, args),
        Command::Serve(ref args) => serve_cmd::serve(&cli, args),
        Command::Agent(ref args) => agent_cmd::agent(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cohort", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { ref out } => man_cmd::man(out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Reported>() => ExitCode::from(1),
        Err(e) if e.is::<Inconclusive>() => ExitCode::from(3),
        // The reader went away (`cohort history | head`): nothing left to say to anyone.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        // The repo's problems were printed already; for apply and diff they mean "could not".
        Err(e) if e.is::<InvalidRepo>() => ExitCode::from(2),
        Err(e) if e.is::<UsageError>() || e.is::<CouldNotCheck>() || e.is::<CouldNotApply>() => {
            eout!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eout!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
