package dev.attune;

/** A finished reply: its text, episode id, finish reason, token count and JSON summary. */
public final class Reply {
    private final String text;
    private final long episodeId;
    private final FinishReason finish;
    private final int tokens;
    private final String json;

    /** Called by the native library; {@code episodeId} is -1 for an unrecorded reply. */
    Reply(String text, long episodeId, String finish, int tokens, String json) {
        this.text = text;
        this.episodeId = episodeId;
        this.finish = FinishReason.of(finish);
        this.tokens = tokens;
        this.json = json;
    }

    /** The reply text. */
    public String text() {
        return text;
    }

    /** The episode id to give feedback for; -1 when the reply was generated unrecorded. */
    public long episodeId() {
        return episodeId;
    }

    /** Whether the reply was recorded as an episode (it then takes feedback). */
    public boolean recorded() {
        return episodeId >= 0;
    }

    public FinishReason finish() {
        return finish;
    }

    /** The number of generated tokens. */
    public int tokens() {
        return tokens;
    }

    /** The reply as JSON: {@code {"text", "episode_id", "finish", "tokens", "timings": {...}}}. */
    public String json() {
        return json;
    }

    @Override
    public String toString() {
        return text;
    }
}
