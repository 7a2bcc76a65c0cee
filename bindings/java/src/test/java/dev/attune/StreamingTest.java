package dev.attune;

import static dev.attune.Fixtures.config;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class StreamingTest {
    private Runtime rt;
    private Session s;

    @BeforeEach
    void open() {
        rt = Runtime.open(config(null, 100));
        s = rt.openSession("stream");
    }

    @AfterEach
    void close() {
        s.close();
        rt.close();
    }

    @Test
    void thePiecesMakeUpTheReply() {
        List<String> pieces = new ArrayList<>();
        Reply r = s.generate(PromptKind.TEXT, "Tell me a long story about", Fixtures.seeded(2, 20), piece -> pieces.add(piece));
        assertTrue(pieces.size() >= 2, "pieces " + pieces);
        assertEquals(r.text(), String.join("", pieces));
        assertNotEquals(FinishReason.CANCELLED, r.finish());
    }

    @Test
    void returningFalseStopsGeneration() {
        List<String> pieces = new ArrayList<>();
        Reply full = s.generate(PromptKind.TEXT, "Tell me a long story about", Fixtures.seeded(2, 20), null);
        Reply barged = s.generate(PromptKind.TEXT, "Tell me a long story about", Fixtures.seeded(2, 20), piece -> {
            pieces.add(piece);
            return pieces.size() < 2;
        });
        assertEquals(2, pieces.size());
        assertEquals(FinishReason.CANCELLED, barged.finish());
        assertEquals(String.join("", pieces), barged.text());
        assertTrue(full.text().startsWith(barged.text()), "the barged reply is the start of the full one");
        assertTrue(barged.tokens() < full.tokens(), barged.tokens() + " < " + full.tokens());
        // A cancelled reply is still an episode that takes feedback.
        assertEquals(FeedbackOutcome.QUEUED, s.feedbackThumbs(barged.episodeId(), false));
    }

    @Test
    void anExceptionInTheCallbackStopsAndPropagates() {
        IllegalStateException boom = new IllegalStateException("user hung up");
        IllegalStateException e = assertThrows(IllegalStateException.class,
            () -> s.generate(PromptKind.TEXT, "Tell me a long story about", Fixtures.seeded(2, 20), piece -> {
                throw boom;
            }));
        assertSame(boom, e);
        // The session is usable afterwards.
        assertTrue(s.generate("Hi").tokens() >= 1);
    }

    @Test
    void callsOnTheSessionFromItsCallbackAreBusy() {
        List<String> statuses = new ArrayList<>();
        s.generate(PromptKind.TEXT, "Tell me a long story about", Fixtures.seeded(2, 8), piece -> {
            for (Runnable call : new Runnable[] {() -> s.generate("nested"), s::close, s::save}) {
                try {
                    call.run();
                } catch (AttuneException e) {
                    statuses.add(e.status());
                }
            }
            return false;
        });
        assertEquals(List.of("ATTUNE_STATUS_BUSY", "ATTUNE_STATUS_BUSY", "ATTUNE_STATUS_BUSY"), statuses);
        // The close from the callback did nothing: the session still works.
        assertTrue(s.generate("Hi").recorded());
    }

    @Test
    void anotherSessionMayBeUsedFromTheCallback() {
        try (Session other = rt.openSession("other")) {
            List<Long> ids = new ArrayList<>();
            s.generate(PromptKind.TEXT, "Hello", Fixtures.seeded(2, 4), piece -> ids.add(other.generate(PromptKind.TEXT, "Hi", Fixtures.seeded(1, 2), null).episodeId()));
            assertTrue(!ids.isEmpty());
        }
    }
}
