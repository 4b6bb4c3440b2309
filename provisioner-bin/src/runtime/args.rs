//! The command-line flags (and environment variables) every provisioner binary shares.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::BoolishValueParser;

use super::client::{DEFAULT_BURST, DEFAULT_QPS};

/// Flags shared by every provisioner binary; `#[command(flatten)]` them into a binary's own
/// arguments.
///
/// **Client-side rate limit.** Provisioning a claim costs five requests (claim update,
/// PersistentVolume create, claim update, two Events), so keeping pace with
/// kube-controller-manager's PV binder, which binds up to about 100 claims a second on a
/// small control plane (the throughput benchmark's baseline), takes 500 requests a second:
/// the default. The burst of 1,000 lets the first 200 claims of a burst go at once. The Go
/// provisioners' 5 requests a second cap them at one or two claims a second; API Priority and
/// Fairness protects the API server on its side. `--kube-api-qps=0` disables the limit.
///
/// ```
/// use clap::Parser;
/// use provisioner_bin::runtime::CommonArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     common: CommonArgs,
/// }
///
/// let cli = Cli::parse_from(["provisioner", "--leader-election=false", "--kube-api-qps", "50"]);
/// assert!(!cli.common.leader_election);
/// assert_eq!(cli.common.kube_api_qps, 50.0);
/// ```
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// Elect a leader among replicas (only the leader provisions). `false` makes this replica
    /// always act: run one replica only.
    #[arg(
        long = "leader-election",
        env = "ENABLE_LEADER_ELECTION",
        default_value = "true",
        value_parser = BoolishValueParser::new(),
        action = ArgAction::Set,
        value_name = "BOOL"
    )]
    pub leader_election: bool,

    /// Namespace of the leader election lock. Default: the ServiceAccount's namespace, else
    /// `default`.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long a leader keeps the lock without renewing it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_lease_duration: Duration,

    /// How long a leader keeps trying to renew before it stops working.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_renew_deadline: Duration,

    /// The pause between attempts to acquire or renew the lock.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_retry_period: Duration,

    /// Address of the HTTP endpoints /healthz, /readyz and /metrics (`:PORT` listens on all
    /// addresses; port 0 picks a free port, logged at start).
    #[arg(
        long,
        env = "METRICS_ADDRESS",
        default_value = ":8080",
        value_parser = parse_address,
        value_name = "ADDRESS"
    )]
    pub metrics_address: SocketAddr,

    /// Sustained API requests per second (client-side limit; 0 disables it).
    #[arg(long, env = "KUBE_API_QPS", default_value_t = DEFAULT_QPS, value_name = "QPS")]
    pub kube_api_qps: f32,

    /// API requests sent at once after a quiet period.
    #[arg(long, env = "KUBE_API_BURST", default_value_t = DEFAULT_BURST, value_name = "N")]
    pub kube_api_burst: u32,

    /// Claims provisioned, and volumes deleted, at the same time (each).
    #[arg(
        long,
        alias = "worker-threads",
        env = "CONCURRENCY",
        default_value_t = 32,
        value_name = "N"
    )]
    pub concurrency: u16,

    /// On SIGTERM or SIGINT, how long operations in flight may take to finish before the
    /// process exits anyway (their state is in the cluster; the next leader resumes them).
    #[arg(long, env = "GRACE_PERIOD", default_value = "20s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace_period: Duration,

    /// Kubeconfig file. Default: the files in `KUBECONFIG`, then `~/.kube/config`, then
    /// the in-cluster ServiceAccount.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Parses a duration as Go writes them (`15s`, `1m30s`, `500ms`, `2h`) or a number of
/// seconds (`15`).
///
/// ```
/// use std::time::Duration;
/// use provisioner_bin::runtime::args::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
/// assert!(parse_duration("15 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|error| error.to_string());
    }
    let invalid = || format!("invalid duration {text:?} (examples: 15s, 1m30s, 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| invalid())?;
        rest = next;
    }
    if text.is_empty() {
        return Err(invalid());
    }
    Ok(total)
}

/// Parses `HOST:PORT`, or `:PORT` for all IPv4 addresses (as Go's `net.Listen` reads it).
///
/// ```
/// use provisioner_bin::runtime::args::parse_address;
///
/// assert_eq!(parse_address(":8080").unwrap().to_string(), "0.0.0.0:8080");
/// assert_eq!(parse_address("127.0.0.1:0").unwrap().to_string(), "127.0.0.1:0");
/// ```
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port = port
            .parse()
            .map_err(|_| format!("invalid port in {text:?}"))?;
        return Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        )));
    }
    text.parse()
        .map_err(|_| format!("invalid address {text:?} (expected HOST:PORT or :PORT)"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["p"]).unwrap();
        let args = cli.common;
        assert!(args.leader_election);
        assert_eq!(args.leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(args.leader_election_renew_deadline, Duration::from_secs(10));
        assert_eq!(args.leader_election_retry_period, Duration::from_secs(2));
        assert_eq!(args.metrics_address.to_string(), "0.0.0.0:8080");
        assert_eq!(args.kube_api_qps, 500.0);
        assert_eq!(args.kube_api_burst, 1000);
        assert_eq!(args.concurrency, 32);
        assert_eq!(args.grace_period, Duration::from_secs(20));
    }

    #[test]
    fn leader_election_accepts_what_go_strconv_parsebool_users_write() {
        for (text, expected) in [
            ("false", false),
            ("FALSE", false),
            ("0", false),
            ("true", true),
            ("1", true),
        ] {
            let cli = Cli::try_parse_from(["p", &format!("--leader-election={text}")]).unwrap();
            assert_eq!(cli.common.leader_election, expected, "{text}");
        }
        assert!(Cli::try_parse_from(["p", "--leader-election=maybe"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("[::1]:9090").unwrap().to_string(),
            "[::1]:9090"
        );
        assert!(parse_address("localhost").is_err());
        assert!(parse_address(":http").is_err());
    }
}
