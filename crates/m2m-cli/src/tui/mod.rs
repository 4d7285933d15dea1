//! `m2m agent`: the interactive terminal agent. [`app`] holds the state and key handling,
//! [`render`] draws it, and [`run`] ties them to the terminal and the SDK.

pub mod app;
pub mod render;
pub mod run;
