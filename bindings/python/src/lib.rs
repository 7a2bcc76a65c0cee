//! Attune's Python binding, the `attune._native` extension module (re-exported by the `attune`
//! package): `Runtime`, `Session` and `Reply` over the shared host handles
//! (`attune_host::handle`), with the C API's rules. JSON crosses as Python objects: configurations,
//! options and rewards may be given as dicts (or JSON text), reports and statistics come back as
//! dicts. Every failure raises `attune.AttuneError`, whose `status` is the C API's status name and
//! `code` its number.
//!
//! Generation releases the GIL while the model runs and takes it again for each piece of text it
//! hands to the callback, so other Python threads run meanwhile.

use std::sync::Arc;

use attune_host::handle::{finish_name, outcome_name, report_json, Feedback, ReplyData, RuntimeHandle, SessionHandle, UpdateReport};
use attune_host::json::PromptKind;
use attune_host::status::{self, INVALID_ARGUMENT};
use attune_host::HostError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyString};

create_exception!(attune, AttuneError, PyException, "A failed Attune call: `status` is the status name (e.g. \"ATTUNE_STATUS_INVALID_JSON\"), `code` its stable number.");

/// `e` as an `AttuneError` with `status` and `code` set.
fn error(e: HostError) -> PyErr {
    Python::with_gil(|py| {
        let err = AttuneError::new_err(format!("{}: {}", e.name(), e.message));
        let value = err.value(py);
        // Setting attributes on a fresh exception instance cannot fail in practice; if it did, the
        // exception still carries the status in its message.
        let _ = value.setattr("status", e.name());
        let _ = value.setattr("code", e.status);
        let _ = value.setattr("message", e.message.as_str());
        err
    })
}

type Result<T> = std::result::Result<T, PyErr>;

/// Runs a call on the host handles: panics and failures become `AttuneError`.
fn host<T>(f: impl FnOnce() -> attune_host::HostResult<T>) -> Result<T> {
    attune_host::catch(f).map_err(error)
}

/// A JSON argument given as text or as a Python object (dict, list, number, ...).
fn json_text(obj: &Bound<'_, PyAny>) -> Result<String> {
    if let Ok(s) = obj.downcast::<PyString>() {
        return s.extract();
    }
    let dumps = obj.py().import("json")?.getattr("dumps")?;
    match dumps.call1((obj,)) {
        Ok(s) => s.extract(),
        Err(e) => Err(error(HostError::new(status::INVALID_JSON, format!("not representable as JSON: {e}")))),
    }
}

/// JSON text as a Python object.
fn loads<'py>(py: Python<'py>, text: &str) -> Result<Bound<'py, PyAny>> {
    py.import("json")?.getattr("loads")?.call1((text,))
}

fn prompt_kind(kind: &str) -> Result<PromptKind> {
    match kind {
        "text" => Ok(PromptKind::Text),
        "user" => Ok(PromptKind::User),
        "chat" => Ok(PromptKind::Chat),
        _ => Err(error(HostError::new(status::INVALID_ENUM, format!("kind {kind:?} is not one of \"text\", \"user\", \"chat\"")))),
    }
}

/// A prompt: text (read as `kind` says), or a list of `{"role", "content"}` dicts (a chat).
fn prompt_arg(prompt: &Bound<'_, PyAny>, kind: Option<&str>) -> Result<(PromptKind, String)> {
    if prompt.is_none() {
        return Err(error(HostError::new(status::NULL_ARGUMENT, "prompt is None")));
    }
    if let Ok(s) = prompt.downcast::<PyString>() {
        return Ok((prompt_kind(kind.unwrap_or("user"))?, s.extract()?));
    }
    if kind.is_some_and(|k| k != "chat") {
        return Err(error(HostError::new(INVALID_ARGUMENT, "a prompt that is not a string is a chat (kind=\"chat\")")));
    }
    Ok((PromptKind::Chat, json_text(prompt)?))
}

/// A loaded model, its adapter store and learning settings, shared by all threads.
///
/// `Runtime(config)` takes the C API's configuration as a dict or JSON text, e.g.
/// `{"engine": {"model_dir": "models/tiny"}, "store": {"dir": "/tmp/attune"}}`.
/// `close()` (or leaving a `with` block) closes it: later calls on it and on its sessions raise
/// `ATTUNE_STATUS_RUNTIME_CLOSED`; closing twice does nothing.
#[pyclass(frozen, module = "attune")]
struct Runtime {
    handle: Arc<RuntimeHandle>,
}

#[pymethods]
impl Runtime {
    #[new]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>) -> Result<Runtime> {
        let text = json_text(config)?;
        let handle = py.allow_threads(|| host(|| RuntimeHandle::open(&text)))?;
        Ok(Runtime { handle })
    }

    /// Opens `user_id`'s session (its newest saved adapter, or a fresh one). One open session per
    /// user: a second raises `ATTUNE_STATUS_BUSY` until the first is closed.
    fn open_session(&self, py: Python<'_>, user_id: &str) -> Result<Session> {
        let handle = py.allow_threads(|| host(|| self.handle.open_session(user_id)))?;
        Ok(Session { handle: Arc::new(handle) })
    }

    /// The tokens one generation can hold (prompt plus reply).
    fn context_tokens(&self) -> Result<usize> {
        host(|| self.handle.context_tokens())
    }

    /// Deletes everything the store holds for `user_id` (forget-me); whether anything was saved.
    fn forget_user(&self, user_id: &str) -> Result<bool> {
        host(|| self.handle.forget_user(user_id))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.handle.is_closed()
    }

    fn close(&self) {
        self.handle.close();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.handle.close();
        false
    }
}

/// A finished reply.
#[pyclass(frozen, module = "attune")]
struct Reply {
    /// The reply text.
    #[pyo3(get)]
    text: String,
    /// The episode id to give feedback for; `None` for an unrecorded reply.
    #[pyo3(get)]
    episode_id: Option<u64>,
    /// Why generation ended: "stop_token", "stop_string", "length", "context_full" or
    /// "cancelled" (the callback returned False).
    #[pyo3(get)]
    finish: &'static str,
    /// The number of generated tokens.
    #[pyo3(get)]
    tokens: usize,
    /// The reply as JSON text (text, episode id, finish, tokens, timings).
    #[pyo3(get)]
    json: String,
}

impl From<ReplyData> for Reply {
    fn from(r: ReplyData) -> Reply {
        Reply { text: r.text, episode_id: r.episode_id, finish: finish_name(r.finish), tokens: r.tokens, json: r.json }
    }
}

#[pymethods]
impl Reply {
    /// The reply as a dict, timings included.
    fn to_dict<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        loads(py, &self.json)
    }

    fn __str__(&self) -> &str {
        &self.text
    }

    fn __repr__(&self) -> String {
        format!("Reply(text={:?}, episode_id={:?}, finish={:?}, tokens={})", self.text, self.episode_id, self.finish, self.tokens)
    }
}

/// A report as a dict, with `"outcome_name"` ("accepted", "rolled_back" or "skipped") added.
fn report<'py>(py: Python<'py>, r: &UpdateReport) -> Result<Bound<'py, PyAny>> {
    let d = loads(py, &report_json(r))?;
    d.set_item("outcome_name", outcome_name(r))?;
    Ok(d)
}

/// One user's adapter, pending episodes and learner. Used by one call at a time: a call made while
/// another runs (another thread, or the session's own callback) raises `ATTUNE_STATUS_BUSY`.
/// `close()` (or leaving a `with` block) releases the user; closing twice does nothing; other calls
/// after close raise `ATTUNE_STATUS_INVALID_ARGUMENT` ("the session is closed").
#[pyclass(frozen, module = "attune")]
struct Session {
    handle: Arc<SessionHandle>,
}

impl Session {
    fn run_generate(&self, py: Python<'_>, prompt: &Bound<'_, PyAny>, kind: Option<&str>, options: Option<&Bound<'_, PyAny>>, on_text: Option<PyObject>, record: bool) -> Result<Reply> {
        let (kind, prompt) = prompt_arg(prompt, kind)?;
        let options = options.filter(|o| !o.is_none()).map(json_text).transpose()?;
        let mut raised: Option<PyErr> = None;
        let handle = &self.handle;
        let reply = py.allow_threads(|| {
            let mut stream = |text: &str| -> bool {
                let Some(cb) = &on_text else { return true };
                Python::with_gil(|py| match cb.call1(py, (text,)) {
                    // Only False stops: a callback that returns nothing (None) goes on.
                    Ok(v) => v.bind(py).downcast::<PyBool>().map_or(true, |b| b.is_true()),
                    Err(e) => {
                        raised = Some(e);
                        false
                    }
                })
            };
            host(|| handle.generate(kind, &prompt, options.as_deref(), record, &mut stream))
        });
        if let Some(e) = raised {
            return Err(e);
        }
        Ok(reply?.into())
    }

    fn give(&self, py: Python<'_>, episode_id: u64, feedback: Feedback) -> Result<&'static str> {
        py.allow_threads(|| host(|| self.handle.feedback(episode_id, feedback))).map(|k| k.name())
    }
}

#[pymethods]
impl Session {
    /// The session's user id.
    #[getter]
    fn user_id(&self) -> &str {
        self.handle.user()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Generates a reply and records it as an episode that feedback can refer to.
    ///
    /// `prompt` is a string (read as `kind` says: "user", the default, for one user message
    /// rendered with the chat template; "text" for raw text; "chat" for a JSON array of
    /// messages) or a list of `{"role", "content"}` dicts. `options` (a dict or JSON text)
    /// overrides the runtime's generation settings, e.g. `{"max_new_tokens": 64, "sampling":
    /// {"temperature": 0.7, "seed": 1}}`. `on_text` is called with each piece of text; returning
    /// False stops generation (barge-in: the reply ends "cancelled"), and an exception it raises
    /// stops generation and is raised here.
    #[pyo3(signature = (prompt, *, kind=None, options=None, on_text=None))]
    fn generate(&self, py: Python<'_>, prompt: &Bound<'_, PyAny>, kind: Option<&str>, options: Option<&Bound<'_, PyAny>>, on_text: Option<PyObject>) -> Result<Reply> {
        self.run_generate(py, prompt, kind, options, on_text, true)
    }

    /// Like `generate`, but records no episode (`episode_id` is None).
    #[pyo3(signature = (prompt, *, kind=None, options=None, on_text=None))]
    fn generate_unrecorded(&self, py: Python<'_>, prompt: &Bound<'_, PyAny>, kind: Option<&str>, options: Option<&Bound<'_, PyAny>>, on_text: Option<PyObject>) -> Result<Reply> {
        self.run_generate(py, prompt, kind, options, on_text, false)
    }

    /// An outcome reward in [-1, 1]. Returns "queued", "ignored", "updated", "skipped" or
    /// "rolled_back" (the last three: it completed a batch and an update ran, see `last_report()`;
    /// "rolled_back": a safeguard undid its step and the signals wait for the next update). Raises
    /// `ATTUNE_STATUS_INVALID_REWARD` (NaN, inf, out of range: nothing recorded) and
    /// `ATTUNE_STATUS_UNKNOWN_EPISODE`.
    fn feedback(&self, py: Python<'_>, episode_id: u64, reward: f64) -> Result<&'static str> {
        self.give(py, episode_id, Feedback::Scalar(reward))
    }

    /// A thumbs up (+1) or down (-1).
    fn feedback_thumbs(&self, py: Python<'_>, episode_id: u64, up: bool) -> Result<&'static str> {
        self.give(py, episode_id, Feedback::Thumbs(up))
    }

    /// A star rating 1 ..= 5.
    fn feedback_stars(&self, py: Python<'_>, episode_id: u64, stars: i64) -> Result<&'static str> {
        self.give(py, episode_id, Feedback::Stars(u64::try_from(stars).unwrap_or(0)))
    }

    /// A score on any scale from a named source (each source is z-scored on its own).
    fn feedback_score(&self, py: Python<'_>, episode_id: u64, source: String, value: f64) -> Result<&'static str> {
        self.give(py, episode_id, Feedback::Score(source, value))
    }

    /// Named signals: one dict or a list of them (or JSON text), e.g.
    /// `[{"outcome": 1, "weight": 0.7}, {"stars": 5, "weight": 0.3}]`.
    fn feedback_json(&self, py: Python<'_>, episode_id: u64, reward: &Bound<'_, PyAny>) -> Result<&'static str> {
        let text = json_text(reward)?;
        self.give(py, episode_id, Feedback::Json(text))
    }

    /// "The user wanted `corrected_reply` instead of episode `episode_id`'s reply": learned as a
    /// pair at the next update (which it may trigger) and kept for replay. Returns what happened,
    /// as `feedback` does. Raises `ATTUNE_STATUS_UNKNOWN_EPISODE` and
    /// `ATTUNE_STATUS_INVALID_ARGUMENT` (a blank correction, one equal to the reply, or an
    /// episode that is not a sampled reply).
    fn correct(&self, py: Python<'_>, episode_id: u64, corrected_reply: &str) -> Result<&'static str> {
        py.allow_threads(|| host(|| self.handle.correct(episode_id, corrected_reply).map(|k| k.name())))
    }

    /// Teaches the reply wanted for a prompt when there is no reply to correct (to correct one,
    /// use `correct`); the demonstration's episode id.
    #[pyo3(signature = (prompt, reply, *, kind=None))]
    fn demonstrate(&self, py: Python<'_>, prompt: &Bound<'_, PyAny>, reply: &str, kind: Option<&str>) -> Result<u64> {
        let (kind, prompt) = prompt_arg(prompt, kind)?;
        py.allow_threads(|| host(|| self.handle.demonstrate(kind, &prompt, reply)))
    }

    /// Runs an update now; its report as a dict. Raises `ATTUNE_STATUS_LEARNING` when no reward
    /// or demonstration waits.
    fn update<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let r = py.allow_threads(|| host(|| self.handle.update()))?;
        report(py, &r)
    }

    /// The most recent update's report as a dict (`ATTUNE_STATUS_NOT_FOUND` when none ran).
    fn last_report<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let r = host(|| self.handle.last_report())?;
        report(py, &r)
    }

    /// Saves the adapter as a new version in the store; its version number.
    fn save(&self, py: Python<'_>) -> Result<u64> {
        py.allow_threads(|| host(|| self.handle.save()))
    }

    /// Goes back `steps_back` (>= 1) saved versions and loads that adapter.
    #[pyo3(signature = (steps_back=1))]
    fn rollback(&self, py: Python<'_>, steps_back: i64) -> Result<()> {
        let steps = usize::try_from(steps_back).map_err(|_| error(HostError::new(INVALID_ARGUMENT, format!("invalid argument: rollback of {steps_back} steps"))))?;
        py.allow_threads(|| host(|| self.handle.rollback(steps)))
    }

    /// Starts over with a fresh adapter (saved versions stay recoverable with `rollback`).
    fn reset(&self, py: Python<'_>) -> Result<()> {
        py.allow_threads(|| host(|| self.handle.reset()))
    }

    /// Forget-me: deletes the user's saved data; this session never writes to the store again.
    fn forget(&self, py: Python<'_>) -> Result<()> {
        py.allow_threads(|| host(|| self.handle.forget()))
    }

    /// Saves, then returns the adapter as a self-contained file image (bytes).
    fn export_adapter<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyBytes>> {
        let bytes = py.allow_threads(|| host(|| self.handle.export()))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Replaces the adapter with exported bytes (validated before anything changes).
    fn import_adapter(&self, py: Python<'_>, data: &[u8]) -> Result<()> {
        py.allow_threads(|| host(|| self.handle.import(data)))
    }

    /// The session's statistics as a dict (see `attune_session_stats_json`).
    fn stats<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let json = py.allow_threads(|| host(|| self.handle.stats_json()))?;
        loads(py, &json)
    }

    /// Closes the session (`ATTUNE_STATUS_BUSY`, closing nothing, while a call on it runs).
    fn close(&self) -> Result<()> {
        host(|| self.handle.close())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> Result<bool> {
        self.close()?;
        Ok(false)
    }
}

/// The name of a status code, e.g. "ATTUNE_STATUS_BUSY".
#[pyfunction]
fn status_name(code: u32) -> &'static str {
    status::name(code)
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Runtime>()?;
    m.add_class::<Session>()?;
    m.add_class::<Reply>()?;
    m.add("AttuneError", m.py().get_type::<AttuneError>())?;
    m.add_function(wrap_pyfunction!(status_name, m)?)?;
    Ok(())
}
