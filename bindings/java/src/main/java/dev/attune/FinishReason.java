package dev.attune;

/** Why a generation ended. */
public enum FinishReason {
    /** An end-of-sequence or stop token. */
    STOP_TOKEN,
    /** A stop string (not part of the reply). */
    STOP_STRING,
    /** {@code max_new_tokens} tokens. */
    LENGTH,
    /** The context window is full. */
    CONTEXT_FULL,
    /** The text callback returned false (barge-in). */
    CANCELLED;

    static FinishReason of(String name) {
        return valueOf(name.toUpperCase(java.util.Locale.ROOT));
    }
}
