package dev.attune;

/** How a prompt string is read. */
public enum PromptKind {
    /** Raw text, tokenised as is (no chat template). */
    TEXT,
    /** One user message, rendered with the model's chat template. */
    USER,
    /** A JSON array of {@code {"role", "content"}} messages, rendered with the chat template. */
    CHAT
}
