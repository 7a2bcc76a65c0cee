package dev.attune;

/**
 * One user's adapter, pending episodes and learner. Used by one thread at a time: a call made
 * while another call on the same session runs (on another thread, or from its own text callback)
 * throws {@code ATTUNE_STATUS_BUSY} and does nothing.
 *
 * <p>{@link #close()} releases the user (unsaved adapter changes are lost; pending episodes are
 * already in the store); closing twice does nothing, and every other call after close throws
 * {@code ATTUNE_STATUS_INVALID_ARGUMENT} ("the session is closed"). A session that becomes
 * unreachable without being closed is closed by a cleaner.
 */
public final class Session implements AutoCloseable {
    private static final int FEEDBACK_SCALAR = 0;
    private static final int FEEDBACK_THUMBS = 1;
    private static final int FEEDBACK_STARS = 2;
    private static final int FEEDBACK_SCORE = 3;
    private static final int FEEDBACK_JSON = 4;

    private final long handle;
    // Keeps the runtime reachable while the session is, so that its cleaner never closes it under
    // an open session.
    private final Runtime runtime;
    private final java.lang.ref.Cleaner.Cleanable cleanable;

    Session(Runtime runtime, long handle) {
        this.runtime = runtime;
        this.handle = handle;
        this.cleanable = Runtime.CLEANER.register(this, () -> Native.sessionClose(handle));
    }

    /** The runtime the session was opened on. */
    public Runtime runtime() {
        return runtime;
    }

    /** The session's user id. */
    public String userId() {
        return Native.sessionUser(handle);
    }

    /** Generates a reply to one user message with the runtime's generation settings. */
    public Reply generate(String userMessage) {
        return generate(PromptKind.USER, userMessage, null, null);
    }

    /** Generates a reply to one user message, streaming it to {@code onText} (may be null). */
    public Reply generate(String userMessage, TextCallback onText) {
        return generate(PromptKind.USER, userMessage, null, onText);
    }

    /**
     * Generates a reply and records it as an episode that feedback can refer to
     * ({@link Reply#episodeId()}). {@code optionsJson} (may be null) overrides fields of the
     * runtime's generation settings, e.g. {@code {"max_new_tokens": 64, "sampling":
     * {"temperature": 0.7, "seed": 1}}}. {@code onText} (may be null) receives the text as it is
     * generated and can stop it (barge-in).
     */
    public Reply generate(PromptKind kind, String prompt, String optionsJson, TextCallback onText) {
        return Native.sessionGenerate(handle, kind.ordinal(), prompt, optionsJson, onText, true);
    }

    /** Like {@link #generate(PromptKind, String, String, TextCallback)}, but records no episode. */
    public Reply generateUnrecorded(PromptKind kind, String prompt, String optionsJson, TextCallback onText) {
        return Native.sessionGenerate(handle, kind.ordinal(), prompt, optionsJson, onText, false);
    }

    /**
     * Gives episode {@code episodeId} an outcome reward in [-1, 1]. Throws
     * {@code ATTUNE_STATUS_INVALID_REWARD} (NaN, infinite or out of range; nothing is recorded),
     * {@code _UNKNOWN_EPISODE} (never issued, expired, evicted), and an update's errors when the
     * feedback completes a batch.
     */
    public FeedbackOutcome feedback(long episodeId, double reward) {
        return FeedbackOutcome.of(Native.sessionFeedback(handle, episodeId, FEEDBACK_SCALAR, reward, null));
    }

    /** A thumbs up (+1) or down (-1); otherwise as {@link #feedback(long, double)}. */
    public FeedbackOutcome feedbackThumbs(long episodeId, boolean up) {
        return FeedbackOutcome.of(Native.sessionFeedback(handle, episodeId, FEEDBACK_THUMBS, up ? 1 : -1, null));
    }

    /** A star rating 1 ..= 5 (others throw {@code ATTUNE_STATUS_INVALID_REWARD}). */
    public FeedbackOutcome feedbackStars(long episodeId, int stars) {
        return FeedbackOutcome.of(Native.sessionFeedback(handle, episodeId, FEEDBACK_STARS, stars, null));
    }

    /** A score on any scale from a named source (each source is z-scored on its own). */
    public FeedbackOutcome feedbackScore(long episodeId, String source, double value) {
        return FeedbackOutcome.of(Native.sessionFeedback(handle, episodeId, FEEDBACK_SCORE, value, source));
    }

    /**
     * Named signals as JSON: one object or an array, e.g. {@code [{"outcome": 1, "weight": 0.7},
     * {"stars": 5, "weight": 0.3}]}. Also throws {@code ATTUNE_STATUS_INVALID_JSON}.
     */
    public FeedbackOutcome feedbackJson(long episodeId, String rewardJson) {
        return FeedbackOutcome.of(Native.sessionFeedback(handle, episodeId, FEEDBACK_JSON, 0, rewardJson));
    }

    /**
     * "The user wanted {@code correctedReply} instead of episode {@code episodeId}'s reply": learned
     * as a pair at the next update (which it may trigger, as feedback does) and kept for replay.
     * Throws {@code ATTUNE_STATUS_UNKNOWN_EPISODE} and {@code ATTUNE_STATUS_INVALID_ARGUMENT} (a
     * blank correction, one equal to the reply, or an episode that is not a sampled reply).
     */
    public FeedbackOutcome correct(long episodeId, String correctedReply) {
        return FeedbackOutcome.of(Native.sessionCorrect(handle, episodeId, correctedReply));
    }

    /**
     * Teaches the reply wanted for a prompt when there is no reply to correct (to correct one, use
     * {@link #correct}); the demonstration's episode id.
     */
    public long demonstrate(PromptKind kind, String prompt, String reply) {
        return Native.sessionDemonstrate(handle, kind.ordinal(), prompt, reply);
    }

    /**
     * Runs an update now on the episodes that have feedback. Throws {@code ATTUNE_STATUS_LEARNING}
     * when no reward or demonstration waits.
     */
    public UpdateReport update() {
        return Native.sessionUpdate(handle);
    }

    /** The most recent update's report; throws {@code ATTUNE_STATUS_NOT_FOUND} when none ran. */
    public UpdateReport lastReport() {
        return Native.sessionLastReport(handle);
    }

    /** Saves the adapter as a new version in the store; its version number. */
    public long save() {
        return Native.sessionSave(handle);
    }

    /** Goes back {@code stepsBack} (>= 1) saved versions and loads that adapter. */
    public void rollback(int stepsBack) {
        Native.sessionRollback(handle, stepsBack);
    }

    /** Starts over with a fresh adapter (saved versions stay recoverable with rollback). */
    public void reset() {
        Native.sessionReset(handle);
    }

    /** Forget-me: deletes the user's saved data; this session never writes to the store again. */
    public void forget() {
        Native.sessionForget(handle);
    }

    /** Saves, then returns the adapter as a self-contained file image (backup, a new device). */
    public byte[] exportAdapter() {
        return Native.sessionExport(handle);
    }

    /** Replaces the adapter with exported bytes (validated before anything changes). */
    public void importAdapter(byte[] data) {
        Native.sessionImport(handle, data);
    }

    /** The session's statistics as JSON (see {@code attune_session_stats_json}). */
    public String statsJson() {
        return Native.sessionStatsJson(handle);
    }

    /**
     * Closes the session. Throws {@code ATTUNE_STATUS_BUSY} (and closes nothing) while a call on it
     * is running, including from its own text callback.
     */
    @Override
    public void close() {
        Native.sessionClose(handle);
        cleanable.clean();
    }
}
