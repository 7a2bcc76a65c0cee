//! The native side of Attune's Java binding: the `static native` methods of `dev.attune.Native`,
//! over the shared host handles (`attune_host::handle`). Java holds runtimes and sessions by a
//! number from a registry, never by address, so a closed or stale handle is an exception, never a
//! use after free.
//!
//! Architecture invariant: every export runs inside [`call`], which catches panics and turns every
//! failure into a `dev.attune.AttuneException` carrying the C API's status code and name; a Java
//! exception already pending (one thrown by the text callback) is left to propagate as it is.

use std::sync::Arc;

use attune_host::handle::{finish_name, outcome_name, report_json, Feedback, Registry, RuntimeHandle, SessionHandle, UpdateReport};
use attune_host::json::PromptKind;
use attune_host::status::*;
use attune_host::{HostError, HostResult};
use jni::objects::{JByteArray, JClass, JObject, JString, JThrowable, JValue};
use jni::sys::{jboolean, jbyteArray, jdouble, jint, jlong, jobject, jstring, JNI_FALSE};
use jni::JNIEnv;

static RUNTIMES: Registry<RuntimeHandle> = Registry::new();
static SESSIONS: Registry<SessionHandle> = Registry::new();

const EXCEPTION: &str = "dev/attune/AttuneException";

/// A failed JNI call (a Java exception is usually pending then, and is what Java sees).
fn jni_err(e: jni::errors::Error) -> HostError {
    HostError::new(INVALID_ARGUMENT, format!("JNI: {e}"))
}

/// Throws `e` as an `AttuneException`, unless a Java exception is already pending.
fn throw(env: &mut JNIEnv, e: &HostError) {
    if env.exception_check().unwrap_or(true) {
        return;
    }
    fn build<'l>(env: &mut JNIEnv<'l>, e: &HostError) -> jni::errors::Result<JObject<'l>> {
        let name = env.new_string(e.name())?;
        let message = env.new_string(&e.message)?;
        env.new_object(EXCEPTION, "(ILjava/lang/String;Ljava/lang/String;)V", &[JValue::Int(e.status as jint), JValue::Object(&name), JValue::Object(&message)])
    }
    match build(env, e) {
        Ok(obj) => {
            let _ = env.throw(JThrowable::from(obj));
        }
        Err(_) => {
            if !env.exception_check().unwrap_or(true) {
                let _ = env.throw_new("java/lang/IllegalStateException", e.to_string());
            }
        }
    }
}

/// Runs an export's body: a panic or failure becomes an exception and the export returns
/// `default`.
fn call<'l, T>(env: &mut JNIEnv<'l>, default: T, f: impl FnOnce(&mut JNIEnv<'l>) -> HostResult<T>) -> T {
    match attune_host::catch(|| f(env)) {
        Ok(v) => v,
        Err(e) => {
            throw(env, &e);
            default
        }
    }
}

/// A Java string argument that must not be null.
fn string(env: &mut JNIEnv, s: &JString, name: &str) -> HostResult<String> {
    if s.is_null() {
        return Err(HostError::new(NULL_ARGUMENT, format!("{name} is null")));
    }
    Ok(env.get_string(s).map_err(jni_err)?.into())
}

/// A Java string argument that may be null.
fn string_opt(env: &mut JNIEnv, s: &JString, name: &str) -> HostResult<Option<String>> {
    if s.is_null() {
        Ok(None)
    } else {
        string(env, s, name).map(Some)
    }
}

fn new_string(env: &mut JNIEnv, s: &str) -> HostResult<jstring> {
    Ok(env.new_string(s).map_err(jni_err)?.into_raw())
}

fn runtime(id: jlong) -> HostResult<Arc<RuntimeHandle>> {
    RUNTIMES.get(id as u64).ok_or_else(|| HostError::new(RUNTIME_CLOSED, "the runtime is closed"))
}

fn session(id: jlong) -> HostResult<Arc<SessionHandle>> {
    SESSIONS.get(id as u64).ok_or_else(|| HostError::new(INVALID_ARGUMENT, "the session is closed"))
}

fn prompt_kind(kind: jint) -> HostResult<PromptKind> {
    match kind {
        0 => Ok(PromptKind::Text),
        1 => Ok(PromptKind::User),
        2 => Ok(PromptKind::Chat),
        _ => Err(HostError::new(INVALID_ENUM, format!("prompt kind {kind} is not one of the documented values (0 ..= 2)"))),
    }
}

/// A `dev.attune.UpdateReport`.
fn report<'l>(env: &mut JNIEnv<'l>, r: &UpdateReport) -> HostResult<jobject> {
    let outcome = env.new_string(outcome_name(r)).map_err(jni_err)?;
    let json = env.new_string(report_json(r)).map_err(jni_err)?;
    let obj = env
        .new_object("dev/attune/UpdateReport", "(Ljava/lang/String;Ljava/lang/String;)V", &[JValue::Object(&outcome), JValue::Object(&json)])
        .map_err(jni_err)?;
    Ok(obj.into_raw())
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_statusName<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, status: jint) -> jstring {
    call(&mut env, std::ptr::null_mut(), |env| new_string(env, name(status as u32)))
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_runtimeOpen<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, config: JString<'l>) -> jlong {
    call(&mut env, 0, |env| {
        let config = string(env, &config, "configJson")?;
        Ok(RUNTIMES.insert(RuntimeHandle::open(&config)?) as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_runtimeClose<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) {
    call(&mut env, (), |_| {
        if let Some(rt) = RUNTIMES.remove(id as u64) {
            rt.close();
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_runtimeContextTokens<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jlong {
    call(&mut env, 0, |_| Ok(runtime(id)?.context_tokens()? as jlong))
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_runtimeForgetUser<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong, user: JString<'l>) -> jboolean {
    call(&mut env, JNI_FALSE, |env| {
        let user = string(env, &user, "userId")?;
        Ok(runtime(id)?.forget_user(&user)? as jboolean)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionOpen<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, rt: jlong, user: JString<'l>) -> jlong {
    call(&mut env, 0, |env| {
        let user = string(env, &user, "userId")?;
        let s = runtime(rt)?.open_session(&user)?;
        Ok(SESSIONS.insert(Arc::new(s)) as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionClose<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) {
    call(&mut env, (), |_| {
        if let Some(s) = SESSIONS.get(id as u64) {
            // Only a session that is not in use is closed and forgotten; a busy one stays.
            s.close()?;
            SESSIONS.remove(id as u64);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionUser<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jstring {
    call(&mut env, std::ptr::null_mut(), |env| {
        let s = session(id)?;
        new_string(env, s.user())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_dev_attune_Native_sessionGenerate<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    id: jlong,
    kind: jint,
    prompt: JString<'l>,
    options: JString<'l>,
    callback: JObject<'l>,
    record: jboolean,
) -> jobject {
    call(&mut env, std::ptr::null_mut(), |env| {
        let s = session(id)?;
        let kind = prompt_kind(kind)?;
        let prompt = string(env, &prompt, "prompt")?;
        let options = string_opt(env, &options, "optionsJson")?;
        let mut on_text = |text: &str| -> bool {
            if callback.is_null() {
                return true;
            }
            let Ok(piece) = env.new_string(text) else { return false };
            let r = env.call_method(&callback, "onText", "(Ljava/lang/String;)Z", &[JValue::Object(&piece)]);
            let _ = env.delete_local_ref(piece);
            // A callback that throws stops generation; its exception is what Java sees.
            r.and_then(|v| v.z()).unwrap_or(false)
        };
        let reply = s.generate(kind, &prompt, options.as_deref(), record != JNI_FALSE, &mut on_text);
        if env.exception_check().map_err(jni_err)? {
            return Ok(std::ptr::null_mut());
        }
        let reply = reply?;
        let text = env.new_string(&reply.text).map_err(jni_err)?;
        let finish = env.new_string(finish_name(reply.finish)).map_err(jni_err)?;
        let json = env.new_string(&reply.json).map_err(jni_err)?;
        let obj = env
            .new_object(
                "dev/attune/Reply",
                "(Ljava/lang/String;JLjava/lang/String;ILjava/lang/String;)V",
                &[
                    JValue::Object(&text),
                    JValue::Long(reply.episode_id.map_or(-1, |e| e as jlong)),
                    JValue::Object(&finish),
                    JValue::Int(reply.tokens as jint),
                    JValue::Object(&json),
                ],
            )
            .map_err(jni_err)?;
        Ok(obj.into_raw())
    })
}

/// `kind`: 0 scalar outcome (`value`), 1 thumbs (`value` > 0 is up), 2 stars (`value`), 3 score
/// (`text` the source, `value`), 4 JSON (`text`). Returns the outcome's name.
#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionFeedback<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    id: jlong,
    episode: jlong,
    kind: jint,
    value: jdouble,
    text: JString<'l>,
) -> jstring {
    call(&mut env, std::ptr::null_mut(), |env| {
        let s = session(id)?;
        let feedback = match kind {
            0 => Feedback::Scalar(value),
            1 => Feedback::Thumbs(value > 0.0),
            // Java passes an int; anything negative is out of range like 0 is.
            2 => Feedback::Stars(if value >= 0.0 { value as u64 } else { 0 }),
            3 => Feedback::Score(string(env, &text, "source")?, value),
            4 => Feedback::Json(string(env, &text, "rewardJson")?),
            _ => return Err(HostError::new(INVALID_ENUM, format!("feedback kind {kind} is unknown"))),
        };
        let outcome = s.feedback(episode as u64, feedback)?;
        new_string(env, outcome.name())
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionCorrect<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong, episode: jlong, corrected: JString<'l>) -> jstring {
    call(&mut env, std::ptr::null_mut(), |env| {
        let s = session(id)?;
        let corrected = string(env, &corrected, "correctedReply")?;
        let outcome = s.correct(episode as u64, &corrected)?;
        new_string(env, outcome.name())
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionDemonstrate<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    id: jlong,
    kind: jint,
    prompt: JString<'l>,
    reply: JString<'l>,
) -> jlong {
    call(&mut env, 0, |env| {
        let s = session(id)?;
        let kind = prompt_kind(kind)?;
        let (prompt, reply) = (string(env, &prompt, "prompt")?, string(env, &reply, "reply")?);
        Ok(s.demonstrate(kind, &prompt, &reply)? as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionUpdate<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jobject {
    call(&mut env, std::ptr::null_mut(), |env| {
        let r = session(id)?.update()?;
        report(env, &r)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionLastReport<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jobject {
    call(&mut env, std::ptr::null_mut(), |env| {
        let r = session(id)?.last_report()?;
        report(env, &r)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionSave<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jlong {
    call(&mut env, 0, |_| Ok(session(id)?.save()? as jlong))
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionRollback<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong, steps: jint) {
    call(&mut env, (), |_| {
        let s = session(id)?;
        let steps = usize::try_from(steps).map_err(|_| HostError::new(INVALID_ARGUMENT, format!("invalid argument: rollback of {steps} steps")))?;
        s.rollback(steps)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionReset<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) {
    call(&mut env, (), |_| session(id)?.reset())
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionForget<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) {
    call(&mut env, (), |_| session(id)?.forget())
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionExport<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jbyteArray {
    call(&mut env, std::ptr::null_mut(), |env| {
        let bytes = session(id)?.export()?;
        Ok(env.byte_array_from_slice(&bytes).map_err(jni_err)?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionImport<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong, data: JByteArray<'l>) {
    call(&mut env, (), |env| {
        let s = session(id)?;
        if data.is_null() {
            return Err(HostError::new(NULL_ARGUMENT, "data is null"));
        }
        let bytes = env.convert_byte_array(&data).map_err(jni_err)?;
        s.import(&bytes)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_attune_Native_sessionStatsJson<'l>(mut env: JNIEnv<'l>, _: JClass<'l>, id: jlong) -> jstring {
    call(&mut env, std::ptr::null_mut(), |env| {
        let json = session(id)?.stats_json()?;
        new_string(env, &json)
    })
}
