package dev.attune;

/**
 * Receives each new piece of a reply as it is generated, on the thread that called
 * {@code generate}. Return {@code true} to go on, {@code false} to stop now (barge-in: the reply
 * then ends with {@link FinishReason#CANCELLED} and holds the text so far). An exception thrown
 * here stops generation and is rethrown by {@code generate}. Calls on the same session from inside
 * the callback throw {@code ATTUNE_STATUS_BUSY}.
 */
@FunctionalInterface
public interface TextCallback {
    boolean onText(String piece);
}
