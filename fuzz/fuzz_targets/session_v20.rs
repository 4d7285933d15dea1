//! The 2.0 P2P session (responder and initiator) under an attacker on the wire; see
//! `m2m_fuzz::session` for the input format and what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    m2m_fuzz::session::run(data, m2m_fuzz::session::Version::V20);
});
