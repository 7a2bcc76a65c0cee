package dev.attune;

import java.lang.ref.Cleaner;

/**
 * A loaded model, its adapter store and learning settings, shared by all threads. Created from the
 * same JSON configuration as the C API's {@code attune_runtime_new} (see {@code docs/c-api.md}),
 * e.g. {@code {"engine": {"model_dir": "models/tiny"}, "store": {"dir": "/data/attune"}}}.
 *
 * <p>Closing the runtime makes every later call on it throw {@code ATTUNE_STATUS_RUNTIME_CLOSED},
 * and so do the calls of its sessions (close them too); a generation running on another thread
 * stops at its next piece of text. Closing twice does nothing. A runtime that becomes unreachable
 * without being closed is closed by a cleaner.
 */
public final class Runtime implements AutoCloseable {
    static final Cleaner CLEANER = Cleaner.create();

    private final long handle;
    private final Cleaner.Cleanable cleanable;

    private Runtime(long handle) {
        this.handle = handle;
        this.cleanable = CLEANER.register(this, () -> Native.runtimeClose(handle));
    }

    /**
     * Loads a runtime. Throws {@code ATTUNE_STATUS_INVALID_JSON} (not JSON), {@code _CONFIG} (an
     * unknown field, a bad value), {@code _ORT_LIBRARY}, {@code _MODEL} (an unusable model folder),
     * {@code _STORE}, ...
     */
    public static Runtime open(String configJson) {
        return new Runtime(Native.runtimeOpen(configJson));
    }

    /**
     * Opens {@code userId}'s session: the newest valid saved adapter of that user, or a fresh one.
     * One open session per user: a second throws {@code ATTUNE_STATUS_BUSY} until the first is
     * closed.
     */
    public Session openSession(String userId) {
        return new Session(this, Native.sessionOpen(handle, userId));
    }

    /** The number of tokens one generation can hold (prompt plus reply). */
    public long contextTokens() {
        return Native.runtimeContextTokens(handle);
    }

    /**
     * Deletes everything the store holds for {@code userId} (forget-me) without opening a session;
     * whether anything was saved. A session of that user that is open never writes again.
     */
    public boolean forgetUser(String userId) {
        return Native.runtimeForgetUser(handle, userId);
    }

    /** The name of a status code, e.g. {@code "ATTUNE_STATUS_BUSY"}. */
    public static String statusName(int code) {
        return Native.statusName(code);
    }

    @Override
    public void close() {
        cleanable.clean();
    }
}
