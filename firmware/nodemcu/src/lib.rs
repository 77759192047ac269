//! What the host knows of a NodeMCU: ESP8266 images, board profiles, and where the firmware
//! keeps its WiFi credentials in flash.
//!
//! The twin (`virtual-board`) and the harness (`relay-hil`) share it; the relay's own behaviour,
//! its provisioning exchange and its text lines are `relay-core`'s.

pub mod bounded;
pub mod credentials;
pub mod image;
pub mod profile;
