//! The commands of the `sluice` binary, one module per command.

pub mod replay;
pub mod scaffold;
pub mod store;
pub mod testbed;
