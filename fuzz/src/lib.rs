//! Shared pieces of the fuzz targets: reference models, input formats, and a throw-away
//! hub.

pub mod hub;
pub mod line_model;
pub mod session;
pub mod ws_io;
