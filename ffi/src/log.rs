//! Routing the `log` crate's records (the library's and ONNX Runtime's, through `tracing`) to a
//! host's callback. One `log::Log` is installed per process, on the first
//! `attune_set_log_callback`; the callback itself can be replaced at any time.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::{OnceLock, RwLock};

use crate::boundary::{self, enum_value, Fail};
use crate::status::*;

/// Logging off.
pub const ATTUNE_LOG_OFF: u32 = 0;
/// Errors only.
pub const ATTUNE_LOG_ERROR: u32 = 1;
/// Warnings and errors.
pub const ATTUNE_LOG_WARN: u32 = 2;
/// Informational messages (model loaded, updates) and above.
pub const ATTUNE_LOG_INFO: u32 = 3;
/// Debugging detail and above.
pub const ATTUNE_LOG_DEBUG: u32 = 4;
/// Everything.
pub const ATTUNE_LOG_TRACE: u32 = 5;

/// Receives one log record: `level` is `ATTUNE_LOG_ERROR` ..= `ATTUNE_LOG_TRACE`, `target` the
/// module that logged (e.g. "attune::engine"), `message` the text; both NUL-terminated and
/// borrowed until the callback returns.
///
/// May be called on any thread that calls into the library and on ONNX Runtime's own threads,
/// possibly at the same time on several threads: it must be thread-safe. It must not unwind
/// through the library and must not call `attune_set_log_callback`; records logged by library
/// calls made from inside it are dropped.
pub type attune_log_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, level: u32, target: *const c_char, message: *const c_char)>;

/// The host's callback and its `user_data`.
#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_char),
    user_data: *mut c_void,
}

// SAFETY: the header requires the callback to be callable from any thread with its `user_data`;
// the library never dereferences `user_data` itself.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// Whether our logger is the process's `log` logger (decided on the first call).
static INSTALLED: OnceLock<bool> = OnceLock::new();

thread_local! {
    /// Set while this thread runs the host's callback, so records logged from inside it are
    /// dropped instead of recursing (or deadlocking on `SINK`).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

struct CallbackLogger;

fn level_code(level: log::Level) -> u32 {
    match level {
        log::Level::Error => ATTUNE_LOG_ERROR,
        log::Level::Warn => ATTUNE_LOG_WARN,
        log::Level::Info => ATTUNE_LOG_INFO,
        log::Level::Debug => ATTUNE_LOG_DEBUG,
        log::Level::Trace => ATTUNE_LOG_TRACE,
    }
}

fn level_filter(code: u32) -> log::LevelFilter {
    match code {
        ATTUNE_LOG_OFF => log::LevelFilter::Off,
        ATTUNE_LOG_ERROR => log::LevelFilter::Error,
        ATTUNE_LOG_WARN => log::LevelFilter::Warn,
        ATTUNE_LOG_INFO => log::LevelFilter::Info,
        ATTUNE_LOG_DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// `text` with interior NULs replaced and a NUL appended.
fn c_text(text: &str) -> Vec<u8> {
    let mut v: Vec<u8> = text.bytes().map(|b| if b == 0 { b' ' } else { b }).collect();
    v.push(0);
    v
}

impl log::Log for CallbackLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || IN_CALLBACK.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        let sink = SINK.read().unwrap_or_else(|p| p.into_inner());
        let Some(sink) = *sink else { return };
        let target = c_text(record.target());
        let message = c_text(&record.args().to_string());
        IN_CALLBACK.with(|c| c.set(true));
        // SAFETY: the host's callback, called with its own `user_data` and two NUL-terminated
        // strings that live until it returns. The read lock is held during the call, so a
        // concurrent `attune_set_log_callback` waits until it returns.
        unsafe { (sink.callback)(sink.user_data, level_code(record.level()), target.as_ptr().cast(), message.as_ptr().cast()) };
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn flush(&self) {}
}

static LOGGER: CallbackLogger = CallbackLogger;

/// Sets (or, with `callback` NULL, removes) the process-wide log callback and the most detailed
/// level passed to it (`max_level`, `ATTUNE_LOG_OFF` ..= `ATTUNE_LOG_TRACE`). `user_data` is
/// passed to every call unchanged. When this returns, the previous callback is no longer running
/// and will not be called again, so its `user_data` may be freed.
///
/// The first call installs the library's logger for the `log` crate; if the process already has
/// another one (a Rust host that installed its own), it returns `ATTUNE_STATUS_UNSUPPORTED` and
/// the records go to that logger. Statuses: `INVALID_ENUM` (max_level > 5), `UNSUPPORTED`.
///
/// # Safety
/// `callback` is NULL or a function that may be called as described at `attune_log_callback`
/// with `user_data`, until this function is called again.
#[no_mangle]
pub unsafe extern "C" fn attune_set_log_callback(callback: attune_log_callback, user_data: *mut c_void, max_level: u32) -> attune_status {
    boundary::status(|| {
        let level = level_filter(enum_value(max_level, ATTUNE_LOG_TRACE + 1, "max_level")?);
        if IN_CALLBACK.with(Cell::get) {
            return Err(Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "attune_set_log_callback called from inside the log callback"));
        }
        if !*INSTALLED.get_or_init(|| log::set_logger(&LOGGER).is_ok()) {
            return Err(Fail::new(ATTUNE_STATUS_UNSUPPORTED, "another logger is already installed for the `log` crate in this process"));
        }
        let mut sink = SINK.write().unwrap_or_else(|p| p.into_inner());
        *sink = callback.map(|callback| Sink { callback, user_data });
        log::set_max_level(if sink.is_some() { level } else { log::LevelFilter::Off });
        Ok(())
    })
}
