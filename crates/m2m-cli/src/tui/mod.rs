//! `m2m agent`: the interactive terminal agent. [`app`] holds the state and key handling,
//! [`render`] draws it; the IO loop that ties them to the terminal and the SDK lives in
//! `run`.

pub mod app;
pub mod render;
