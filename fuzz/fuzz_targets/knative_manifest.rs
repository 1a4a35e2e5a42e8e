//! `updraft apply` bodies: Knative Service, Trigger, PingSource and Broker manifests in
//! YAML or JSON, read strictly and turned into desired state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_events::manifest::{parse_documents, Document};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = parse_documents(text) else {
        return;
    };
    for document in documents {
        if let Document::Service(service) = document {
            let _ = service.desired("default");
        }
    }
});
