package dev.attune;

/** What happened to a piece of feedback (the C API's {@code ATTUNE_FEEDBACK_*}). */
public enum FeedbackOutcome {
    /** Stored; it will be learned from at the next update. */
    QUEUED,
    /** Accepted but not learned from; the episode stays and takes later signals. */
    IGNORED,
    /** It completed a batch and an update applied a step that passed every safeguard: see {@link Session#lastReport()}. */
    UPDATED,
    /** It completed a batch and an update ran but applied no step: see {@link Session#lastReport()}. */
    SKIPPED,
    /**
     * It completed a batch and an update applied a step that a safeguard undid: its signals went back
     * to the queue and are retried by the next update at the halved learning rate.
     */
    ROLLED_BACK;

    static FeedbackOutcome of(String name) {
        return valueOf(name.toUpperCase(java.util.Locale.ROOT));
    }
}
