//! The settings a deploy or an update may change, as flags.

use clap::Args;
use updraft_model::DeploySpec;

use crate::client::CliError;

/// Settings a deploy or an update may change.
#[derive(Args)]
pub struct SettingsArgs {
    /// An environment variable for the instances (repeatable); `KEY-` removes one the
    /// latest revision has. A deploy keeps the settings it does not change.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE|KEY-")]
    env: Vec<String>,
    /// A variable whose value is a key of a secret of the namespace, read when each
    /// instance starts (repeatable): `DB_PASSWORD=db/password`.
    #[arg(long = "env-secret", value_name = "KEY=SECRET/KEY")]
    env_secret: Vec<String>,
    /// Images: the secret of the namespace (keys `username`, `password`) to pull the
    /// image with, as Kubernetes' imagePullSecrets; `''` removes it.
    #[arg(long, value_name = "SECRET")]
    registry_secret: Option<String>,
    /// Memory limit per instance (e.g. 256Mi).
    #[arg(long)]
    memory: Option<String>,
    /// CPU limit per instance (e.g. 0.5 or 500m).
    #[arg(long)]
    cpu: Option<String>,
    /// Idle time after which instances are stopped (default 60s).
    #[arg(long, value_name = "DURATION")]
    scale_to_zero_after: Option<String>,
    /// How long a new instance may take to become ready (Knative's progress deadline;
    /// default: the server's --ready-timeout); '' goes back to it.
    #[arg(long, value_name = "DURATION")]
    start_timeout: Option<String>,
    /// The program to run instead of the detected one; repeat for its words
    /// (`--cmd python3 --cmd app.py`).
    #[arg(long = "cmd", value_name = "WORD")]
    cmd: Vec<String>,
    /// An argument appended to the command (repeatable).
    #[arg(long = "arg", value_name = "ARG")]
    arg: Vec<String>,
    /// What the app speaks on $PORT: http1 (the default) or h2c, HTTP/2 without TLS,
    /// as gRPC servers do.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["http1", "h2c"])]
    protocol: Option<String>,
    /// Requests one instance handles at once; more wait in the gateway (0 = no limit).
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Longest a request may take, e.g. 30s (Knative's timeoutSeconds; at most 600s).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Instances kept while the service is routed (autoscaling.knative.dev/min-scale).
    #[arg(long, value_name = "N")]
    min_scale: Option<u32>,
    /// Most instances (max-scale; 0 = no limit).
    #[arg(long, value_name = "N")]
    max_scale: Option<u32>,
    /// Instances a new revision starts with (initial-scale).
    #[arg(long, value_name = "N")]
    initial_scale: Option<u32>,
    /// What the autoscaler follows: concurrency or rps (metric).
    #[arg(long, value_name = "METRIC")]
    metric: Option<String>,
    /// Per instance: concurrent requests, or requests/s for --metric rps (target).
    #[arg(long, value_name = "N")]
    target: Option<String>,
    /// Percent of the target aimed for (target-utilization-percentage; default 70).
    #[arg(long, value_name = "PERCENT")]
    target_utilization: Option<String>,
    /// The stable window the load is averaged over (window; 6s to 1h, default 60s).
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// How long a lower count must hold before scaling down (scale-down-delay).
    #[arg(long, value_name = "DURATION")]
    scale_down_delay: Option<String>,
    /// How an idle revision is kept: fixed (its scale-to-zero period) or
    /// hybrid-histogram (learns the gaps between calls and pre-warms before the next).
    #[arg(long, value_name = "POLICY")]
    keep_alive: Option<String>,
    /// Create the revision without sending it traffic (blue/green).
    #[arg(long)]
    no_traffic: bool,
    /// Move traffic to new revisions in steps over this time (0s: at once).
    #[arg(long, value_name = "DURATION")]
    rollout_duration: Option<String>,
    /// Requests per second the service accepts; more get 429 (0 removes the limit).
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Requests accepted at once above the rate (default: the rate).
    #[arg(long, value_name = "N")]
    rate_limit_burst: Option<u32>,
    /// WebAssembly: a host (or host:port, or *) outbound HTTP may reach; repeatable.
    /// `--allow-host ''` removes them all.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_host: Vec<String>,
    /// Private: the gateway answers only requests with an invoker (or developer) token
    /// of the namespace, and the platform's own (triggers).
    #[arg(long, conflicts_with = "public")]
    private: bool,
    /// Public again (the default for a new service).
    #[arg(long)]
    public: bool,
}

impl SettingsArgs {
    pub fn spec(self, package: Option<String>, mut env_remove: Vec<String>) -> Result<DeploySpec, CliError> {
        let mut env = std::collections::BTreeMap::new();
        for pair in &self.env {
            match (pair.split_once('='), pair.strip_suffix('-')) {
                (Some((k, v)), _) => {
                    env.insert(k.to_string(), v.to_string());
                }
                (None, Some(removed)) if !removed.is_empty() => env_remove.push(removed.to_string()),
                _ => {
                    return Err(CliError {
                        code: crate::exit::USAGE,
                        message: format!("--env {pair:?}: expected KEY=VALUE, or KEY- to remove one"),
                    })
                }
            }
        }
        let mut env_secrets = std::collections::BTreeMap::new();
        for pair in &self.env_secret {
            let (name, reference) = pair
                .split_once('=')
                .ok_or_else(|| CliError::usage(format!("--env-secret {pair:?}: expected KEY=SECRET/KEY")))?;
            env_secrets.insert(name.to_string(), reference.to_string());
        }
        let autoscaling = [
            ("min-scale", self.min_scale.map(|n| n.to_string())),
            ("max-scale", self.max_scale.map(|n| n.to_string())),
            ("initial-scale", self.initial_scale.map(|n| n.to_string())),
            ("metric", self.metric),
            ("target", self.target),
            ("target-utilization-percentage", self.target_utilization),
            ("window", self.window),
            ("scale-down-delay", self.scale_down_delay),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
        let allow_hosts =
            (!self.allow_host.is_empty()).then(|| self.allow_host.into_iter().filter(|h| !h.is_empty()).collect());
        Ok(DeploySpec {
            package,
            wasm: None,
            image: None,
            function_runtime: None,
            function_handler: None,
            allow_hosts,
            autoscaling,
            keep_alive: self.keep_alive,
            env,
            env_secrets,
            registry_secret: self.registry_secret,
            env_remove,
            memory: self.memory,
            cpu: self.cpu,
            command: (!self.cmd.is_empty()).then_some(self.cmd),
            args: (!self.arg.is_empty()).then_some(self.arg),
            scale_to_zero_after: self.scale_to_zero_after,
            start_timeout: self.start_timeout,
            protocol: self.protocol,
            concurrency: self.concurrency,
            timeout: self.timeout,
            no_traffic: self.no_traffic,
            rollout_duration: self.rollout_duration,
            rate_limit: self.rate_limit,
            rate_limit_burst: self.rate_limit_burst,
            private: match (self.private, self.public) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        })
    }
}
