//! A hub WebSocket request: `HubRequest::parse` and `action` on any text never panic, only a
//! JSON object is a request, page bounds stay within the protocol's, and a parsed request
//! re-serialized is a request again. (Not the same one to the bit: serde_json reads long
//! floats to the nearest value only.)
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use m2m_proto::hub::{Action, HubRequest};
use m2m_proto::limits::MAX_PAGE;
use serde::de::IgnoredAny;

fuzz_target!(|data: &[u8]| {
    // The hub reads text frames as UTF-8 and binary frames only when they are.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = HubRequest::parse(text) else {
        return;
    };
    assert!(
        serde_json::from_str::<HashMap<String, IgnoredAny>>(text).is_ok(),
        "a request that is not a JSON object"
    );
    let again = serde_json::to_string(&request).expect("a parsed request serializes");
    let reparsed = HubRequest::parse(&again).expect("a serialized request parses");
    assert_eq!(reparsed.action_name(), request.action_name());
    match request.action() {
        Ok(Action::Discover(d)) => assert!((1..=MAX_PAGE).contains(&d.limit)),
        Ok(Action::Find(f)) => assert!((1..=MAX_PAGE).contains(&f.limit)),
        Ok(_) => {}
        Err(e) => assert!(!e.code().is_empty()),
    }
});
