//! Log through the host. In a plugin the line goes to the host's logger, tagged
//! with the plugin's name; when your function runs natively (tests) it goes to
//! stderr. Logging is cheap but not free: never log per record at `info`.
//!
//! ```
//! sluice_plugin::log::info!("loaded {} rules", 3);
//! ```

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Log `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::host_log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {level:?}] {message}");
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// `trace!("...", args)`: log at trace level.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) }; }
/// `debug!("...", args)`: log at debug level.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) }; }
/// `info!("...", args)`: log at info level.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) }; }
/// `warn!("...", args)`: log at warn level.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) }; }
/// `error!("...", args)`: log at error level.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) }; }

pub use crate::{debug, error, info, trace, warn};
