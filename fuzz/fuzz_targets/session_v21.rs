//! The 2.1 P2P session (responder and initiator, with identities, against 2.1 and 2.0
//! counterparts) under an attacker on the wire; see `m2m_fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    m2m_fuzz::session::run(data, m2m_fuzz::session::Version::V21);
});
