package dev.attune;

import static dev.attune.Fixtures.config;
import static dev.attune.Fixtures.expectStatus;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class ErrorsTest {
    private static Runtime rt;
    private static Session s;
    private static long episode;

    @BeforeAll
    static void open() {
        rt = Runtime.open(config(null, 100));
        s = rt.openSession("errors");
        episode = s.generate("Hi").episodeId();
    }

    @AfterAll
    static void close() {
        s.close();
        rt.close();
    }

    @Test
    void runtimeConfigurations() {
        AttuneException e = expectStatus("ATTUNE_STATUS_MODEL", () -> Runtime.open("{\"engine\": {\"model_dir\": \"/nonexistent/model\"}}"));
        assertTrue(e.getMessage().contains("/nonexistent/model"), e.getMessage());
        assertEquals(22, e.code());
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> Runtime.open("{not json"));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> Runtime.open("[]"));
        expectStatus("ATTUNE_STATUS_CONFIG", () -> Runtime.open("{\"engine\": {\"model_dir\": \"models/tiny\"}, \"colour\": 1}"));
        expectStatus("ATTUNE_STATUS_CONFIG", () -> Runtime.open("{\"engine\": {\"model_dir\": \"models/tiny\", \"execution_providers\": [\"abacus\"]}}"));
        expectStatus("ATTUNE_STATUS_NULL_ARGUMENT", () -> Runtime.open(null));
    }

    @Test
    void sessions() {
        expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> rt.openSession(""));
        expectStatus("ATTUNE_STATUS_NULL_ARGUMENT", () -> rt.openSession(null));
    }

    @Test
    void generation() {
        expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.generate(""));
        expectStatus("ATTUNE_STATUS_NULL_ARGUMENT", () -> s.generate(null));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> s.generate(PromptKind.CHAT, "not messages", null, null));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> s.generate(PromptKind.TEXT, "Hi", "{\"max_new_tokens\": ", null));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> s.generate(PromptKind.TEXT, "Hi", "{\"speed\": 3}", null));
        expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.generate(PromptKind.TEXT, "Hi", "{\"sampling\": {\"temperature\": -1}}", null));
        String longPrompt = "word ".repeat(400);
        expectStatus("ATTUNE_STATUS_CONTEXT_OVERFLOW", () -> s.generate(PromptKind.TEXT, longPrompt, null, null));
        Reply chat = s.generate(PromptKind.CHAT, "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}]", null, null);
        assertTrue(chat.recorded());
    }

    @Test
    void feedback() {
        AttuneException e = expectStatus("ATTUNE_STATUS_UNKNOWN_EPISODE", () -> s.feedbackThumbs(987654321L, true));
        assertTrue(e.getMessage().contains("987654321"), e.getMessage());
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedback(episode, Double.NaN));
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedback(episode, Double.POSITIVE_INFINITY));
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedback(episode, 1.5));
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedbackStars(episode, 0));
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedbackStars(episode, -3));
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedbackScore(episode, "csat", Double.NaN));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> s.feedbackJson(episode, "{\"thumbs\": "));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> s.feedbackJson(episode, "{\"smile\": 1}"));
        expectStatus("ATTUNE_STATUS_INVALID_JSON", () -> s.feedbackJson(episode, "{\"thumbs\": true, \"stars\": 2}"));
        expectStatus("ATTUNE_STATUS_INVALID_REWARD", () -> s.feedbackJson(episode, "{\"stars\": 9}"));
        expectStatus("ATTUNE_STATUS_NULL_ARGUMENT", () -> s.feedbackJson(episode, null));
        // None of the refused rewards was recorded.
        assertTrue(s.statsJson().contains("\"feedback\":0"), s.statsJson());
    }

    @Test
    void statusNames() {
        assertEquals("ATTUNE_STATUS_OK", Runtime.statusName(0));
        assertEquals("ATTUNE_STATUS_INVALID_REWARD", Runtime.statusName(30));
        assertEquals("ATTUNE_STATUS_UNKNOWN", Runtime.statusName(12345));
    }
}
