//! The command line: every command, flag and help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Multi-stage canary delivery for Kubernetes.
///
/// A release repo (git) holds every service's tracks (internal → canary → paid → production);
/// cohort changes it only through validated commits and renders the Kubernetes objects the
/// cluster needs.
#[derive(Debug, Parser)]
#[command(
    name = "cohort",
    version,
    about,
    long_about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The release repo (default: the current directory).
    #[arg(long, short = 'C', global = true, env = "COHORT_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole pipeline on this machine: no cluster, no Docker, nothing to configure.
    ///
    /// Creates a temporary release repo with the example service, starts local "pods" (HTTP
    /// servers on loopback, three per track, answering with their version), runs the real
    /// router on the rendered router config and sends synthetic traffic with a cohort mix and
    /// user ids. Then, with the real commands: a good build goes internal → canary → paid →
    /// production, each promotion on a passing judgement; a bad build is caught on the canary
    /// and rolled back; enterprise traffic never touches a canary. Ends with `cohort history`.
    /// Exit status 0 when it all went as told.
    Demo {
        /// Finish in under a minute: no pauses between steps, traffic as fast as it goes.
        #[arg(long)]
        fast: bool,
        /// Keep the temporary release repo, to look at its history afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Create a release repo with the seed's pipeline and an example service.
    ///
    /// Writes cohort.yaml, services/account-service.yaml and releases/account-service.yaml,
    /// runs `git init` if DIR is not in a git repository yet, and commits the files.
    Init {
        /// Where to create it (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Check the release repo and report every problem at once, with file:line:col.
    ///
    /// Exit status: 0 valid (warnings allowed), 1 invalid, 2 usage error.
    Validate {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Print the Kubernetes objects (or an haproxy.cfg) for services.
    ///
    /// Output is deterministic: the same repo gives the same bytes on every run and machine.
    Render(RenderArgs),
    /// Put a new build on the first stage (the command CI runs on every mainline push).
    Deploy {
        /// The service.
        service: String,
        /// The build's version, e.g. 1.19.0.
        #[arg(value_name = "VERSION")]
        build: String,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// Move a version one stage on, checking the target stage's gate.
    ///
    /// Without --to, the newest build moves: the first stage whose next stage runs a different
    /// version is promoted into that next stage. Gates (time in the previous stage, recorded
    /// checks, judgement) are read from cohort.yaml and the repo's history.
    Promote {
        /// The service.
        service: String,
        /// The stage to promote into (it receives the version of the stage before it).
        #[arg(long, value_name = "TRACK")]
        to: Option<String>,
        /// Override a closed gate; needs --reason, which is recorded in the commit.
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why; recorded in the commit.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: ChangeOutput,
        /// Used when the target stage's gate requires a canary judgement.
        #[command(flatten)]
        judge: JudgeArgs,
    },
    /// Return a track to its previous version, or to one it ran before (--to).
    Rollback {
        /// The service.
        service: String,
        /// The track to roll back.
        track: String,
        /// A version this track ran before.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Why; recorded in the commit.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// Record that a version passed a check a gate asks for (one commit).
    Approve {
        /// The service.
        service: String,
        /// The version that passed.
        #[arg(value_name = "VERSION")]
        build: String,
        /// The check's name, as listed under `gates` in cohort.yaml.
        #[arg(long, value_name = "NAME")]
        check: String,
        /// A note, e.g. a link to the test run.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// Judge every canary and act by cohort.yaml's `autopilot:` policy: ramp, promote, roll
    /// back, each a commit.
    ///
    /// On every pass (every --interval; once with --once) it reads the release repo (`-C`, or
    /// the current directory; or --git, a remote it fetches every pass and pushes each
    /// decision to), judges each track that runs a newer version than the last stage against
    /// the last stage from the routers' own counts (the cluster's router pods, --metrics-url,
    /// or in pull mode --control: the sums of the agents' reports), and decides one action per
    /// service: roll back a failing track where the stage says `rollback: auto` (never held
    /// back), else ramp a step or promote where the policy allows it, the gate is open, the
    /// version rolled out and its judgement passes; ramps and promotions keep to
    /// `autopilot.windows` and stop under `cohort freeze` and `cohort pause`. Each action is
    /// the commit `rollback` or `promote` would make, by `cohort autopilot`, with the
    /// judgement's evidence in the body and a `Cohort-Judgement:` trailer. A push that finds
    /// the branch moved is never forced: the remote is fetched and the service decided again
    /// on top of what is there. `cohort render --autopilot` prints what runs it in a cluster.
    /// Exit status (--once): 0 the pass ran, 1 an action was refused or could not be recorded,
    /// 2 could not read the repo or the routers.
    Autopilot(AutopilotArgs),
    /// Stop the autopilot acting for a service (one commit); its rollbacks go on.
    ///
    /// Nothing else changes: people can still deploy, promote and roll back. `cohort resume`
    /// takes it up again.
    Pause {
        /// The service.
        service: String,
        /// Why; recorded in the commit and the release state.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// Let the autopilot act for a paused service again (one commit).
    Resume {
        /// The service.
        service: String,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// Stop automatic promotions and ramp steps of a service, or of every service in the repo
    /// now (a commit each); automatic rollbacks go on.
    Freeze {
        /// The service (default: every service in the repo).
        service: Option<String>,
        /// Why; recorded in the commit and the release state.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// End a freeze of a service, or of every frozen service (a commit each).
    Unfreeze {
        /// The service (default: every frozen service).
        service: Option<String>,
        #[command(flatten)]
        out: ChangeOutput,
    },
    /// Show what each service's tracks run now.
    Tracks {
        /// Only these services.
        services: Vec<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Show recorded changes, newest first: time, author, action, service, track, from → to.
    History {
        /// Only this service.
        service: Option<String>,
        /// Only this track.
        #[arg(long)]
        track: Option<String>,
        /// At most this many entries.
        #[arg(long, short = 'n')]
        limit: Option<usize>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Service health at a glance, from the cluster: router, ready endpoints and versions per
    /// track, replicas, stuck rollouts, forgotten versions, drift from the release repo.
    ///
    /// Gathers the namespace with one LIST per kind. With a release repo (`-C` or the current
    /// directory) expectations come from it; without one, from labels and the defaults below.
    /// Exit status: 0 all healthy, 1 problems found, 2 could not check.
    Status(StatusArgs),
    /// Judge a track against its baseline: the routers' own counts, and the release repo's checks.
    ///
    /// Reads every router of the service (through the cluster's API server, or the admin
    /// URLs given with --metrics-url), sums their last --window, and compares the track with
    /// the baseline over the cohorts both served: a one-sided two-proportion test for the
    /// error rate (with a tolerance of 0.1 point) and Mann-Whitney U over the latency
    /// histograms (failing only when also 1.25× slower at p50 or p99). A pass needs enough
    /// requests to have caught twice the baseline's error rate (or --min-error-increase more);
    /// with fewer it says how many more, and about how long that takes.
    ///
    /// With a release repo, the service's `judgement.checks` are run too (Prometheus queries,
    /// web checks, Job checks, waited for) and make one verdict with the counts: a failing
    /// check fails it, one inconclusive or that could not judge keeps it inconclusive.
    /// Exit status: 0 pass, 1 fail, 3 inconclusive, 2 could not judge.
    Analyze(AnalyzeArgs),
    /// Make the cluster run what the release repo says, without dropping traffic.
    ///
    /// Server-side apply (field manager `cohort`), service by service, in this order: new
    /// track Deployments, waited for until every replica is updated and available → track
    /// Services → router ConfigMap → router Deployment (waited for) → front Service → only then
    /// delete the managed Deployments of versions the repo no longer names. If a wait fails or
    /// times out cohort stops, prunes nothing and says which pods are not ready and why.
    /// Exit status: 0 applied, 1 a rollout did not become ready, 2 could not apply
    /// (unreachable, forbidden, invalid object, field conflict).
    Apply(ApplyArgs),
    /// Show what `cohort apply` would change, and drift: objects in the cluster that differ
    /// from the release repo, and managed objects it no longer names.
    ///
    /// Compares each live object with the result of a server-side dry-run apply, so defaults
    /// the server fills in are no difference. Exit status: 0 no differences, 1 differences,
    /// 2 could not check.
    Diff(DiffArgs),
    /// Run the data plane: route requests by cohort to tracks (what the router pods run).
    ///
    /// Reads the router config that `cohort render` puts in the `<service>-router` ConfigMap.
    /// SIGHUP reloads it (an invalid config is refused and the old one keeps serving); SIGTERM
    /// turns /ready to 503, keeps serving for the drain delay, then stops.
    Router {
        /// The router config (router.yaml).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "haproxy_config",
            conflicts_with = "haproxy_config"
        )]
        config: Option<PathBuf>,
        /// Route as an existing haproxy.cfg of the seed's shape says (servers named after
        /// tracks, a backend per cohort); what could change routing and is not understood is
        /// refused with its line.
        #[arg(long, value_name = "FILE")]
        haproxy_config: Option<PathBuf>,
        /// Where to accept traffic.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Where to serve /live, /ready, /metrics, /stats and /config. At most 64 connections
        /// there (the quietest is closed to make room), under the same --header-timeout.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9901")]
        admin: std::net::SocketAddr,
        /// How long to keep serving after SIGTERM, so Kubernetes can take the pod out of endpoints.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        drain_delay: std::time::Duration,
        /// After the drain delay, how long requests in flight may take to finish.
        #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
        grace: std::time::Duration,
        /// A client must send its whole request head within this, or is disconnected (slowloris);
        /// a connection idle between requests (HTTP/2: nothing in flight, no bytes) is closed after it.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        header_timeout: std::time::Duration,
        /// A track must send its response head within this, or the client gets 504. Time spent
        /// waiting for the client to send its request body does not count.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        response_timeout: std::time::Duration,
        /// A client sending a request body must send more of it within this, or gets 408. Such
        /// failures (and aborted or malformed bodies) are the client's: counted in
        /// cohort_router_client_errors_total, never as the track's errors.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        client_body_timeout: std::time::Duration,
        /// Connections to tracks unused for this long are closed (they cost memory at both ends).
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        upstream_idle_timeout: std::time::Duration,
        /// Largest request head accepted, in bytes (request line and header lines, as
        /// received); larger ones get 431. At most 100 header fields are accepted too.
        #[arg(long, value_name = "BYTES", default_value_t = 65536)]
        max_header_bytes: usize,
        /// Client connections served at once (WebSocket tunnels included); more wait to be
        /// accepted. Default: what the file-descriptor limit allows, (ulimit -n - 128 - 64) / 2
        /// (128 for the router itself, 64 for the admin port, 2 per connection: the client's
        /// and the track's), at most 10000; the soft limit is first raised toward the hard one.
        /// A larger N than the limit allows is warned about at start.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: Option<u32>,
        /// HTTP/2 requests in flight per client connection (more wait). Each holds at most one
        /// connection to a track, so one client connection opens at most this many upstream.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        max_streams: u32,
        /// Threads serving traffic (default: one per CPU). 1 runs everything on one thread.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// An upgraded (WebSocket) connection is closed when neither side sends for this long
        /// (HAProxy's `timeout tunnel`).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        tunnel_timeout: std::time::Duration,
        /// An idle HTTP/1.1 keep-alive connection that has been answered and then sends nothing
        /// for this long (up to twice this) is parked: it stays open but holds no buffers until
        /// its next request, so memory follows the connections in use, not those merely open.
        /// 0s never parks.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        park_after: std::time::Duration,
        /// Forward every request with hyper, the general path, instead of forwarding plain
        /// HTTP/1.1 requests with the router's own code. For measuring the difference only.
        #[arg(long, hide = true)]
        hyper_only: bool,
        /// Also serve /config (backends, trusted peers) to peers in this network; repeat for
        /// more. By default only loopback may read it (`kubectl port-forward`); it answers 403
        /// to others. /live, /ready, /metrics and /stats are open to every peer.
        #[arg(long, value_name = "CIDR")]
        admin_config_from: Vec<ipnet::IpNet>,
        /// How tracks' backends are found. `dns`: each `host:port` of the config, every A/AAAA
        /// record, resolved again every 10s. `kubernetes`: the ready pods of each track's Service
        /// (the config's `endpoints`), from its EndpointSlices, watched; requests are balanced
        /// over the pods, and a pod that is terminating gets no new ones. The router needs list
        /// and watch on endpointslices in its namespace (`cohort render` gives it that Role).
        #[arg(long, value_enum, default_value = "dns")]
        discovery: DiscoveryArg,
        /// With --discovery kubernetes: the namespace of the tracks' Services (default: the
        /// pod's own in a cluster, else the kubeconfig context's).
        #[arg(long, value_name = "NAME", requires = "discovery")]
        namespace: Option<String>,
        /// With --discovery kubernetes: the kubeconfig file (default: $KUBECONFIG,
        /// ~/.kube/config, then in-cluster).
        #[arg(long, value_name = "FILE", requires = "discovery")]
        kubeconfig: Option<PathBuf>,
    },
    /// Serve the control API over the release repo: each cluster's desired state, agents'
    /// reports, the fleet view.
    ///
    /// GET /v1/clusters/CLUSTER/desired-state answers the objects `cohort apply` would apply,
    /// at the repo's current commit, with an ETag (an unchanged state is a 304 with no body);
    /// an invalid commit is served with its problems so agents skip it. POST
    /// /v1/clusters/CLUSTER/reports takes an agent's report; GET /v1/fleet (fleet_token only)
    /// shows every cluster's last report. Each cluster's token, from --tokens, reaches only its
    /// own paths. /openapi.json describes it all. Stop with Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Run the in-cluster agent: pull the desired state, apply what changed, report back.
    ///
    /// Polls a git remote of the release repo (--git) or a control API (--control) every
    /// --interval (±20%), backing off while the source is unreachable. Each service whose
    /// objects changed is applied as `cohort apply` does it (same code, same order, same
    /// waits), one at a time; what was applied is recorded in the ConfigMap
    /// cohort-agent-state, so a restart neither applies again nor loses its place. A revision
    /// that does not validate is reported and skipped; the cluster keeps the last good one.
    /// `cohort render --agent` prints the manifests to run it in a cluster.
    /// With --once: one pass, exit 0 all applied, 1 an apply failed or the revision was
    /// refused, 2 the source or the cluster could not be reached.
    Agent(AgentArgs),
    /// Print a shell completion script, e.g. `cohort completions bash > /etc/bash_completion.d/cohort`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages: cohort.1, and cohort-COMMAND.1 for each command.
    ///
    /// From the same definitions as --help. Each file is written anew and renamed into place.
    /// E.g. `cohort man --out ~/.local/share/man/man1`, then `man cohort-apply`.
    Man {
        /// The directory to write them into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// How the router finds the tracks' backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoveryArg {
    /// Resolve the config's `host:port` names.
    Dns,
    /// Watch each track's Service's EndpointSlices.
    Kubernetes,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these services (default: all in the namespace).
    pub services: Vec<String>,
    /// Show every cluster of the fleet instead, from this control API (`cohort serve`): its
    /// state, last poll and report, applied revision, and problems. Exit status 0 when every
    /// cluster is in sync and healthy, 1 otherwise, 2 when the API could not be read.
    #[arg(long, value_name = "URL", requires = "token_file", conflicts_with_all = ["services", "watch"])]
    pub fleet: Option<String>,
    /// With --fleet: the file holding the fleet_token.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    pub token_file: Option<PathBuf>,
    /// With --fleet: also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Fewest ready endpoints a track's Service may have.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub min_ready_endpoints: u32,
    /// Router replicas expected when there is no release repo.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub router_replicas: u32,
    /// Keep watching (one watch per kind, no polling) and re-evaluate on every change; the
    /// table is printed again when it changes. Stop with Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// With --watch: also re-evaluate this often when nothing changed (a problem is announced
    /// after two evaluations in a row, resolved after two without it).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "watch")]
    pub recheck_every: std::time::Duration,
    /// With --watch: post problems opened and resolved to the Slack incoming webhook whose
    /// URL is in this environment variable.
    #[arg(
        long,
        value_name = "VAR",
        requires = "watch",
        conflicts_with = "slack_webhook_file"
    )]
    pub slack_webhook_env: Option<String>,
    /// With --watch: the same, the webhook URL read from this file (e.g. a mounted Secret).
    #[arg(long, value_name = "FILE", requires = "watch")]
    pub slack_webhook_file: Option<PathBuf>,
    /// With --watch: mail problems opened and resolved through this SMTP server, HOST or
    /// HOST:PORT (needs --email-from and --email-to).
    #[arg(long, value_name = "HOST[:PORT]", requires_all = ["watch", "email_from", "email_to"])]
    pub smtp_server: Option<String>,
    /// How the SMTP connection is protected.
    #[arg(long, value_enum, default_value_t = SmtpSecurityArg::Starttls)]
    pub smtp_security: SmtpSecurityArg,
    /// SMTP user name (the password comes from --smtp-password-env or --smtp-password-file).
    #[arg(long, value_name = "USER", requires = "smtp_server")]
    pub smtp_user: Option<String>,
    /// The environment variable holding the SMTP password.
    #[arg(
        long,
        value_name = "VAR",
        requires = "smtp_user",
        conflicts_with = "smtp_password_file"
    )]
    pub smtp_password_env: Option<String>,
    /// The file holding the SMTP password.
    #[arg(long, value_name = "FILE", requires = "smtp_user")]
    pub smtp_password_file: Option<PathBuf>,
    /// The sender of notification mail, e.g. `cohort <cohort@example.com>`.
    #[arg(long, value_name = "ADDRESS", requires = "smtp_server")]
    pub email_from: Option<String>,
    /// A recipient of notification mail (repeat for more).
    #[arg(long, value_name = "ADDRESS", requires = "smtp_server")]
    pub email_to: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The service.
    pub service: String,
    /// The track to judge, e.g. canary.
    #[arg(long, value_name = "TRACK")]
    pub track: String,
    /// What to judge it against (default: the last stage, production; with --mirror, the
    /// track the copies come from).
    #[arg(long, value_name = "TRACK")]
    pub baseline: Option<String>,
    /// Judge the track on the copies of requests mirrored to it (the service's `mirror:`),
    /// against the answers the track they were copied from gave to the very same requests:
    /// a build judged on real traffic before any customer sees its answers.
    #[arg(long)]
    pub mirror: bool,
    /// Judge on the routers' counts alone, without the extra checks of `judgement.checks`
    /// (Prometheus queries, web checks, Jobs). Gates and the autopilot always run them.
    #[arg(long)]
    pub counts_only: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// Where the routers' counts come from, and how strict the judgement is.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// A router's admin URL (e.g. http://10.0.0.7:9901); repeat for every router of the
    /// service. Without it the routers are found, and read, through the cluster.
    #[arg(long = "metrics-url", value_name = "URL")]
    pub metrics_urls: Vec<String>,
    /// The window judged: the last DURATION, 1s to 10m (default: cohort.yaml's
    /// `judgement.window`, else 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_window)]
    pub window: Option<std::time::Duration>,
    /// Confidence a failing verdict needs (a healthy track fails at most 1 − this often;
    /// default: cohort.yaml's `judgement.confidence`, else 0.95).
    #[arg(long, value_name = "P")]
    pub confidence: Option<f64>,
    /// The smallest error-rate increase, in percentage points, a pass must rule out (besides
    /// twice the baseline's rate; default: cohort.yaml's `judgement.min_error_increase`, else 0.5%).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub min_error_increase: Option<f64>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct AutopilotArgs {
    /// One pass, then exit (for scripts and cron). Each pass then judges the routers' window
    /// afresh; only a running autopilot adds its looks up, which the judgement's confidence
    /// over repeated looks needs.
    #[arg(long)]
    pub once: bool,
    /// Say what would be done; commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Time between passes.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Output format: text says each decision when it changes; json prints each pass.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// Serve /live, /ready (the last pass ran to the end) and /metrics (passes, decisions
    /// by kind, verdicts, the last pass) on this address, e.g. 0.0.0.0:9902.
    #[arg(long, value_name = "ADDR", conflicts_with = "once")]
    pub admin: Option<std::net::SocketAddr>,
    /// Run as one of several replicas: only the holder of this Lease (in the cluster's
    /// namespace: -n, else the context's or the pod's) acts; the others stand by and take
    /// over within three intervals of it stopping. Renewed every pass, handed back on exit.
    #[arg(long, value_name = "NAME", conflicts_with = "once")]
    pub lease: Option<String>,
    /// Pull mode: judge on the routers' counts that every cluster's agent reports to this
    /// control API (`cohort serve`), for clusters nothing may connect into, instead of reading
    /// routers. A cluster whose agent has gone silent keeps the services it runs from passing.
    #[arg(
        long,
        value_name = "URL",
        requires = "token_file",
        conflicts_with = "metrics_urls"
    )]
    pub control: Option<String>,
    /// With --control: the file holding the server's fleet_token.
    #[arg(long, value_name = "FILE", requires = "control")]
    pub token_file: Option<PathBuf>,
    /// With --control: also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", requires = "control")]
    pub ca_file: Option<PathBuf>,
    /// The release repo as a git remote: fetched every pass, each decision pushed to it (a
    /// push that loses a race with someone else's is fetched and decided again, never forced).
    /// Without it, the local clone (--repo) is committed to.
    #[command(flatten)]
    pub remote: GitRemoteArgs,
    /// Where the routers' counts come from, and how strict judgements are.
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// Where the cluster is, as kubectl's flags say it.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the release repo's, else the context's). `apply` and `diff`
    /// work only in the release repo's namespace, which its objects name.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub namespace: Option<String>,
}

impl ClusterArgs {
    /// Where the cluster is: these flags, the namespace defaulting to `namespace` (the release
    /// repo's) when given, else to the kubeconfig context's (or the pod's, in a cluster).
    pub fn target(&self, namespace: Option<&str>) -> cohort_kube::Target {
        cohort_kube::Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone().or_else(|| namespace.map(str::to_string)),
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Only these services (default: every service in the release repo).
    pub services: Vec<String>,
    /// Output format: text shows progress as it happens; json prints one document at the end.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Server-side dry run: the API server checks and defaults every object, nothing is
    /// changed, nothing waited for or deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Take over fields another field manager set (e.g. replicas changed with kubectl
    /// scale): the release repo's value wins. Without it such a conflict stops the apply.
    #[arg(long)]
    pub force_conflicts: bool,
    /// How long each wait for rollouts may take before cohort stops (and prunes nothing).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// How many services are applied at once. Each service's objects still go in order, under
    /// its own lease; a service that fails stops only itself (the others are applied, and the
    /// exit status says one failed). 1 applies them one after another.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Only these services (default: every service in the release repo, and managed objects
    /// of services it no longer has).
    pub services: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmtpSecurityArg {
    /// Upgrade with STARTTLS (port 587 by default); refuse a server that cannot.
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption (port 25 by default): only for a relay on loopback or a trusted network.
    Plain,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("process").args(["agent", "autopilot"]))]
pub struct RenderArgs {
    /// Only these services (default: all).
    pub services: Vec<String>,
    /// Write one file per service into DIR instead of printing. Each file is written anew and
    /// renamed into place: a symbolic link already there is replaced, never written through.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Output format for Kubernetes objects.
    #[arg(short = 'o', long, value_enum, default_value_t = YamlOrJson::Yaml)]
    pub output: YamlOrJson,
    /// What to render.
    #[arg(long, value_enum, default_value_t = RenderFormat::Kubernetes)]
    pub format: RenderFormat,
    /// Render the RBAC objects cohort needs instead: a read-only ClusterRole for `cohort status`
    /// and a Role in the pipeline's namespace for `cohort apply`.
    #[arg(long, conflicts_with_all = ["services", "format", "out"])]
    pub rbac: bool,
    /// Render the in-cluster agent instead: ServiceAccount, Role and RoleBinding in the
    /// pipeline's namespace, and its Deployment. With --control it reads its token from the
    /// Secret cohort-agent-token (key `token`), which you create. The namespace and image come
    /// from the release repo when there is one (-C, or the current directory), else from
    /// --namespace and --image.
    #[arg(long, conflicts_with_all = ["services", "format", "out", "rbac"])]
    pub agent: bool,
    /// Render the autopilot instead: ServiceAccount, a Role that only reads the routers' pods
    /// (and their counts through the API server), lists Deployments and holds the Lease
    /// cohort-autopilot, the RoleBinding, and a Deployment of --replicas (one acts, the others
    /// stand by). It fetches and pushes --git; for an https remote it reads `USER:TOKEN` from
    /// the Secret cohort-autopilot-git (key `credentials`), which you create. The namespace
    /// and image come as for --agent.
    #[arg(long, requires = "git", conflicts_with_all = ["services", "format", "out", "rbac", "agent", "control", "install"])]
    pub autopilot: bool,
    /// With --autopilot: how many replicas.
    #[arg(long, value_name = "N", default_value_t = 2, requires = "autopilot", value_parser = clap::value_parser!(i32).range(1..=5))]
    pub replicas: i32,
    /// With --autopilot: where the release repo sits in the git repository, if not at its top.
    #[arg(long, value_name = "DIR", requires = "autopilot")]
    pub path: Option<String>,
    /// With --agent: the generic install that deploy/install.yaml is, for any namespace and git
    /// remote. It names no namespace (`kubectl apply -n NS` places it) and reads the git
    /// remote and branch from the keys `git` and `branch` of the ConfigMap cohort-agent, which
    /// you create. Reads no release repo.
    #[arg(long, requires = "agent", conflicts_with_all = ["control", "git", "namespace", "branch"])]
    pub install: bool,
    /// With --agent or --autopilot: the namespace to run it in, which must be the pipeline's
    /// (its Role is namespaced). Needed without a release repo; with one, it may only repeat
    /// the repo's.
    #[arg(long, short = 'n', value_name = "NAME", requires = "process")]
    pub namespace: Option<String>,
    /// With --agent or --autopilot: the image (default: the release repo's `router.image`,
    /// else this version's released image).
    #[arg(long, value_name = "REF", requires = "process")]
    pub image: Option<String>,
    /// With --agent: the control API the agent polls, e.g. https://cohort.example.com.
    #[arg(long, value_name = "URL", requires_all = ["agent", "cluster"], conflicts_with = "git")]
    pub control: Option<String>,
    /// With --agent --control: the cluster's name in the server's tokens file.
    #[arg(long, value_name = "NAME", requires = "control")]
    pub cluster: Option<String>,
    /// With --agent: the git remote of the release repo the agent polls instead. With
    /// --autopilot: the remote it fetches and pushes its decisions to.
    #[arg(long, value_name = "URL", requires = "process")]
    pub git: Option<String>,
    /// With --git: the branch.
    #[arg(long, value_name = "NAME", default_value = "main")]
    pub branch: String,
    /// With --agent or --autopilot: also trust the CA certificates under key `ca.crt` of this
    /// ConfigMap (a company CA signed the control API's or the git server's certificate).
    #[arg(long, value_name = "NAME", requires = "process")]
    pub ca_configmap: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen. Without TLS only a loopback address is accepted (tokens would cross
    /// the network in the clear), unless --plain-http says a proxy in front terminates TLS.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// The tokens file: `clusters: {NAME: {token: ..., services: [...]}}` and an optional
    /// `fleet_token:` for `cohort status --fleet`.
    #[arg(long, value_name = "FILE")]
    pub tokens: PathBuf,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (behind a proxy that terminates TLS).
    #[arg(long, conflicts_with = "tls_cert")]
    pub plain_http: bool,
    /// Serve what is pushed to a git remote (mirrored and fetched every --fetch-every)
    /// instead of the clone at -C.
    #[command(flatten)]
    pub remote: GitRemoteArgs,
    /// With --git: how often to fetch.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "git")]
    pub fetch_every: std::time::Duration,
    /// Connections served at once; more wait to be accepted. Each takes a file descriptor:
    /// keep it well under `ulimit -n`.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A new connection must finish its TLS handshake and send a whole request head within
    /// this (as must a kept-alive one once its next request begins), or is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: std::time::Duration,
    /// A report's body must arrive whole within this once its token is checked, or gets 408.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: std::time::Duration,
    /// A cluster without a report for this long is silent in GET /v1/counts: the autopilot
    /// (`--control`) then judges none of the services it runs to pass. Keep it above the
    /// agents' --interval.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub silent_after: std::time::Duration,
    /// A kept-alive connection with no request (or a request moving no byte) is closed after
    /// this. Longer than the agents' --interval keeps their connections open between polls.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["git", "control"]))]
pub struct AgentArgs {
    /// Pull from a git remote of the release repo.
    #[command(flatten)]
    pub remote: GitRemoteArgs,
    /// With --git: only these services (repeat; default: all).
    #[arg(long = "service", value_name = "NAME", requires = "git")]
    pub services: Vec<String>,
    /// Pull from this control API (`cohort serve`), e.g. https://cohort.example.com.
    #[arg(long, value_name = "URL", requires_all = ["cluster", "token_file"])]
    pub control: Option<String>,
    /// The cluster's name (in the control API's tokens file; reports carry it).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// With --control: the file holding the cluster's bearer token (e.g. a mounted Secret).
    #[arg(long, value_name = "FILE", requires = "control")]
    pub token_file: Option<PathBuf>,
    /// With --control: also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", requires = "control")]
    pub ca_file: Option<PathBuf>,
    /// With --control: read the routers' counts from these admin URLs (repeat; each says
    /// which service it routes) instead of the routers' pods through the API server. The
    /// counts go with each report, so that `cohort autopilot --control` can judge on every
    /// cluster's.
    #[arg(long = "metrics-url", value_name = "URL", requires = "control")]
    pub metrics_urls: Vec<String>,
    /// Time between polls (±20% jitter).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Longest wait between polls while the source is unreachable (doubling up to it).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub max_backoff: std::time::Duration,
    /// How long each wait for rollouts may take (as `cohort apply --timeout`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// On SIGTERM, how long an apply under way may still take; past it, it is abandoned
    /// (not recorded, so the next start applies it again).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// How many services are applied at once (each in its own order, under its own lease).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Where to serve /live, /ready and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9102")]
    pub admin: std::net::SocketAddr,
    /// One pass (poll, apply, report), then exit.
    #[arg(long)]
    pub once: bool,
    /// Log lines as text (key=value) or JSON, on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub cluster_args: ClusterArgs,
}

/// A git remote of the release repo, mirrored locally (`serve --git`, `agent --git`,
/// `autopilot --git`).
#[derive(Debug, Args)]
pub struct GitRemoteArgs {
    /// Follow this git remote of the release repo (https://..., a path or file:// URL) rather
    /// than a local clone.
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// With --git: the branch to follow.
    #[arg(long, value_name = "NAME", default_value = "main", requires = "git")]
    pub branch: String,
    /// With --git: where the release repo sits in the git repository.
    #[arg(long, value_name = "DIR", requires = "git")]
    pub path: Option<PathBuf>,
    /// With --git: where to keep the local mirror (kept between restarts, only changes are
    /// fetched). Default: a directory under the system's temp dir named after the remote.
    #[arg(long, value_name = "DIR", requires = "git")]
    pub mirror_dir: Option<PathBuf>,
    /// With an https --git remote: also trust the CA certificates in this PEM file (besides
    /// the system's).
    #[arg(long, value_name = "FILE", requires = "git")]
    pub git_ca_file: Option<PathBuf>,
    /// With an https --git remote: sign in with the one line USER:TOKEN in this file (e.g. a
    /// mounted Secret; `x-access-token:TOKEN` on GitHub, `oauth2:TOKEN` on GitLab).
    #[arg(long, value_name = "FILE", requires = "git")]
    pub git_credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-11-22T10:00:00Z INFO applied service=account-service ...`
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct ChangeOutput {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    /// For people.
    Text,
    /// For machines.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YamlOrJson {
    /// A YAML stream.
    Yaml,
    /// A Kubernetes List.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderFormat {
    /// Services, Deployments, ConfigMap, PodDisruptionBudgets, and the router's ServiceAccount,
    /// Role and RoleBinding.
    Kubernetes,
    /// An haproxy.cfg equivalent to the router config.
    Haproxy,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p) && *p > 0.0)
        .ok_or_else(|| format!("`{s}` is not a percentage; write e.g. `0.5%`"))
}

/// A judgement window: as `judgement.window` in cohort.yaml, between 1s and 10m, the span the
/// routers keep.
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    match (1_000..=600_000).contains(&d.as_millis()) {
        true => Ok(d),
        false => Err(format!(
            "`{s}` is outside 1s to 10m: the routers keep ten minutes of counts"
        )),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    cohort_core::Duration::parse(s)
        .map(|d| std::time::Duration::from_millis(d.as_millis()))
        .ok_or_else(|| format!("`{s}` is not a duration; write e.g. `5s` or `500ms`"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
