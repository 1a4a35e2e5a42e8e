//! `updraft domain`: custom domains routed to services (Knative's DomainMapping).

use clap::Subcommand;
use updraft_api::requests::DomainMappingRequest;

use crate::client::{ApiClient, CliError};
use crate::output::{print_listing, print_structured};
use crate::{ListScope, NamespaceArg, Output};

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Route a domain of your own to a service (its DNS must lead to the gateway).
    Map {
        /// The domain, like api.example.com.
        domain: String,
        /// The service it leads to.
        #[arg(long, value_name = "SERVICE")]
        to: String,
        /// Lead to this tag's revision instead of the service's traffic split.
        #[arg(long)]
        tag: Option<String>,
        /// A secret with tls.crt and tls.key the gateway presents for the domain
        /// (when it serves TLS).
        #[arg(long, value_name = "SECRET")]
        tls_secret: Option<String>,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Stop routing a domain.
    Unmap {
        domain: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// List the custom domains and where they lead.
    List {
        #[command(flatten)]
        scope: ListScope,
    },
}

pub async fn domain(command: DomainCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        DomainCommand::Map {
            domain,
            to,
            tag,
            tls_secret,
            ns,
        } => {
            let body = DomainMappingRequest {
                service: to,
                tag,
                tls_secret,
            };
            let applied = client.put_domain_mapping(&ns.namespace, &domain, &body).await?;
            if !print_structured(&applied, output) {
                println!("domainmapping/{} {}", applied.name, applied.result);
            }
        }
        DomainCommand::Unmap { domain, ns } => {
            client.delete_domain_mapping(&ns.namespace, &domain).await?;
            return Ok(crate::triggers::deleted("domainmapping", &ns, &domain, output));
        }
        DomainCommand::List { scope } => {
            let mappings = scope.list(client, async |ns| client.domain_mappings(ns).await).await?;
            if !print_structured(&mappings, output) {
                print_listing(
                    scope.all_namespaces,
                    &["DOMAIN", "SERVICE", "TAG", "URL"],
                    mappings.iter().map(|m| {
                        (
                            m.namespace.clone(),
                            vec![
                                m.domain.clone(),
                                m.service.clone(),
                                m.tag.clone().unwrap_or_default(),
                                m.url.clone(),
                            ],
                        )
                    }),
                );
            }
        }
    }
    Ok(0)
}
