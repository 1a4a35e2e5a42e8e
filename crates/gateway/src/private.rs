//! Private services (Knative's `cluster-local` visibility): the gateway answers them
//! only to a caller the platform vouches for. The check itself (tokens, roles) is the
//! server's, behind [`InvokeGuard`]; requests the platform makes itself (triggers,
//! the API's invoke, which authorised its caller already) carry [`Trusted`].

use std::future::Future;
use std::pin::Pin;

use http::{HeaderMap, StatusCode};

/// Put in a request's extensions by the platform's own callers. Extensions are not
/// read from the wire, so a client cannot set it.
#[derive(Clone, Copy, Debug)]
pub struct Trusted;

pub type GuardFuture<'a> = Pin<Box<dyn Future<Output = Result<(), (StatusCode, String)>> + Send + 'a>>;

/// Decides whether a request's credentials may invoke a private service of
/// `namespace`; a refusal is the status and the reason to answer with.
pub trait InvokeGuard: Send + Sync {
    fn may_invoke<'a>(&'a self, headers: &'a HeaderMap, namespace: &'a str) -> GuardFuture<'a>;
}
