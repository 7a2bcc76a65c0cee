package dev.attune;

import static dev.attune.Fixtures.config;
import static dev.attune.Fixtures.expectStatus;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class LifecycleTest {
    @Test
    void openGenerateClose() {
        try (Runtime rt = Runtime.open(config(null, 100))) {
            assertEquals(256, rt.contextTokens());
            try (Session s = rt.openSession("ada")) {
                assertEquals("ada", s.userId());
                assertTrue(s.runtime() == rt);
                Reply r = s.generate(PromptKind.TEXT, "Hello, how are", Fixtures.seeded(1, 6), null);
                assertTrue(r.recorded());
                assertTrue(r.tokens() >= 1 && r.tokens() <= 6, "tokens " + r.tokens());
                assertTrue(r.json().contains("\"episode_id\":" + r.episodeId()), r.json());
                Reply next = s.generate("What is two plus two?");
                assertTrue(next.episodeId() > r.episodeId(), "episode ids only grow");
                Reply preview = s.generateUnrecorded(PromptKind.USER, "Hi", null, null);
                assertFalse(preview.recorded());
                assertEquals(-1, preview.episodeId());
                assertTrue(preview.json().contains("\"episode_id\":null"), preview.json());
            }
        }
    }

    @Test
    void seededGenerationIsReproducible() {
        try (Runtime rt = Runtime.open(config(null, 100)); Session a = rt.openSession("a"); Session b = rt.openSession("b")) {
            Reply x = a.generate(PromptKind.TEXT, "Once upon a time", Fixtures.seeded(3, 10), null);
            Reply y = b.generate(PromptKind.TEXT, "Once upon a time", Fixtures.seeded(3, 10), null);
            assertEquals(x.text(), y.text());
            assertEquals(x.tokens(), y.tokens());
        }
    }

    @Test
    void oneOpenSessionPerUser() {
        try (Runtime rt = Runtime.open(config(null, 100))) {
            Session s = rt.openSession("sam");
            expectStatus("ATTUNE_STATUS_BUSY", () -> rt.openSession("sam"));
            s.close();
            try (Session again = rt.openSession("sam")) {
                assertEquals("sam", again.userId());
            }
        }
    }

    @Test
    void closingTwiceIsHarmlessAndUseAfterCloseThrows() {
        Runtime rt = Runtime.open(config(null, 100));
        Session s = rt.openSession("kim");
        s.close();
        s.close();
        AttuneException e = expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.generate("Hi"));
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
        expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", s::save);
        expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.feedbackThumbs(0, true));
        rt.close();
        rt.close();
        expectStatus("ATTUNE_STATUS_RUNTIME_CLOSED", () -> rt.openSession("kim"));
        expectStatus("ATTUNE_STATUS_RUNTIME_CLOSED", rt::contextTokens);
    }

    @Test
    void aSessionOutlivingItsRuntimeFailsUntilClosed() {
        Runtime rt = Runtime.open(config(null, 100));
        Session s = rt.openSession("lee");
        Reply r = s.generate("Hi");
        rt.close();
        expectStatus("ATTUNE_STATUS_RUNTIME_CLOSED", () -> s.generate("Hi"));
        expectStatus("ATTUNE_STATUS_RUNTIME_CLOSED", () -> s.feedbackThumbs(r.episodeId(), true));
        s.close();
        s.close();
    }

    @Test
    void closingTheRuntimeFromTheCallbackStopsGeneration() {
        Runtime rt = Runtime.open(config(null, 100));
        try (Session s = rt.openSession("mid")) {
            int[] pieces = {0};
            expectStatus("ATTUNE_STATUS_RUNTIME_CLOSED", () -> s.generate(PromptKind.TEXT, "Tell me a long story about", Fixtures.seeded(2, 20), piece -> {
                pieces[0]++;
                rt.close();
                return true;
            }));
            assertEquals(1, pieces[0], "generation stopped at the next piece");
        }
    }

    @Test
    void sessionsOfDifferentUsersWorkOnTwoThreads() throws Exception {
        try (Runtime rt = Runtime.open(config(null, 100))) {
            String[] texts = new String[2];
            Thread[] threads = new Thread[2];
            Throwable[] failures = new Throwable[2];
            for (int i = 0; i < 2; i++) {
                int n = i;
                threads[i] = new Thread(() -> {
                    try (Session s = rt.openSession("user-" + n)) {
                        texts[n] = s.generate(PromptKind.TEXT, "The weather today", Fixtures.seeded(5, 8), null).text();
                    } catch (Throwable t) {
                        failures[n] = t;
                    }
                });
                threads[i].start();
            }
            for (Thread t : threads) {
                t.join();
            }
            assertEquals(null, failures[0]);
            assertEquals(null, failures[1]);
            assertEquals(texts[0], texts[1], "the same seed gives the same reply on either thread");
        }
    }
}
