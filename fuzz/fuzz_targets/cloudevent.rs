//! CloudEvents over HTTP: binary (ce-* headers), structured and batched bodies. What
//! is accepted must also be written back and read again as the same event.
#![no_main]

use bytes::Bytes;
use cloudevents::AttributesReader;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use updraft_events::cloudevent::{read_reply, read_request, to_binary};

fuzz_target!(|input: (Vec<(String, Vec<u8>)>, Vec<u8>)| {
    let (pairs, body) = input;
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
            headers.append(name, value);
        }
    }
    let Ok(events) = read_request(&headers, Bytes::from(body)) else {
        return;
    };
    for event in events {
        let (headers, body) = to_binary(event.clone()).expect("an accepted event is written");
        let back = read_reply(&headers, body).expect("a written event is read back");
        assert_eq!(back.id(), event.id());
    }
});
