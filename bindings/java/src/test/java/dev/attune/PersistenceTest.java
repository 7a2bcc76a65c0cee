package dev.attune;

import static dev.attune.Fixtures.config;
import static dev.attune.Fixtures.expectStatus;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;

class PersistenceTest {
    private static final String GREEDY = "{\"max_new_tokens\": 10, \"sampling\": {\"temperature\": 0}}";

    /** Trains the session until an update is accepted, so that its adapter differs from a fresh one. */
    private static void train(Session s) {
        for (int round = 0; round < 6; round++) {
            for (int i = 0; i < 4; i++) {
                Reply r = s.generate(PromptKind.TEXT, "Say something nice", Fixtures.seeded(round * 10 + i, 6), null);
                s.feedbackThumbs(r.episodeId(), i % 2 == 0);
            }
            if (s.update().accepted()) {
                return;
            }
        }
        throw new AssertionError("no update was accepted in six rounds: " + s.statsJson());
    }

    private static String greedy(Session s) {
        return s.generateUnrecorded(PromptKind.TEXT, "Say something nice", GREEDY, null).text();
    }

    /** The adapter as the probes see it: its KL to the base model. */
    private static double kl(Session s) {
        return Fixtures.probeKl(s);
    }

    @Test
    void aSavedAdapterIsLoadedByTheNextSession() throws Exception {
        Path store = Fixtures.tempStore();
        String trained;
        double trainedKl;
        long pendingEpisode;
        try (Runtime rt = Runtime.open(config(store, 100))) {
            try (Session s = rt.openSession("pat")) {
                train(s);
                trained = s.statsJson();
                trainedKl = kl(s);
                assertTrue(trainedKl > 0);
                assertEquals(1, s.save());
                assertEquals(2, s.save());
                pendingEpisode = s.generate("Remember me").episodeId();
            }
        }
        // A new runtime (a restart) loads the newest version and the pending episode.
        try (Runtime rt = Runtime.open(config(store, 100)); Session s = rt.openSession("pat")) {
            assertEquals(trainedKl, kl(s), "the saved adapter is the one loaded");
            String stats = s.statsJson();
            assertTrue(stats.contains("\"restored_episodes\":"), stats);
            assertFalse(stats.contains("\"restored_episodes\":0"), stats);
            assertTrue(s.generate("Hi").episodeId() > pendingEpisode, "ids continue past the last session's");
            assertEquals(FeedbackOutcome.QUEUED, s.feedbackThumbs(pendingEpisode, true));
            String accepted = trained.replaceAll(".*(\"accepted\":\\d+).*", "$1");
            assertTrue(stats.contains(accepted), accepted + " in " + stats);
        }
    }

    @Test
    void rollbackResetExportAndImport() throws Exception {
        Path store = Fixtures.tempStore();
        try (Runtime rt = Runtime.open(config(store, 100))) {
            double learned;
            String learnedReply;
            byte[] image;
            try (Session s = rt.openSession("ray")) {
                assertEquals(0.0, kl(s), "a fresh adapter is the base model");
                assertEquals(1, s.save());
                train(s);
                learned = kl(s);
                learnedReply = greedy(s);
                assertTrue(learned > 0, "the accepted update moved the adapter");
                assertEquals(2, s.save());
                image = s.exportAdapter();
                assertTrue(image.length > 0);
                // Versions: 1 fresh, 2 learned (an export saves no version).
                s.rollback(1);
                expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.rollback(0));
                expectStatus("ATTUNE_STATUS_STORE", () -> s.rollback(100));
            }
            try (Session s = rt.openSession("ray")) {
                assertEquals(0.0, kl(s), "one version back is the fresh adapter");
                s.rollback(1);
            }
            try (Session s = rt.openSession("ray")) {
                assertEquals(learned, kl(s), "a rollback can be undone");
                s.reset();
                assertEquals(0.0, kl(s), "reset starts over");
            }
            try (Session s = rt.openSession("ray")) {
                assertEquals(0.0, kl(s), "the reset is what the store holds");
                s.importAdapter(image);
                assertEquals(learned, kl(s), "the imported adapter is the exported one");
                assertEquals(learnedReply, greedy(s));
                byte[] damaged = Arrays.copyOf(image, image.length);
                damaged[damaged.length / 2] ^= 0x5a;
                expectStatus("ATTUNE_STATUS_CORRUPT_ADAPTER", () -> s.importAdapter(damaged));
                expectStatus("ATTUNE_STATUS_CORRUPT_ADAPTER", () -> s.importAdapter(Arrays.copyOf(image, 10)));
                expectStatus("ATTUNE_STATUS_NULL_ARGUMENT", () -> s.importAdapter(null));
                assertEquals(learned, kl(s), "a refused import changes nothing");
            }
            try (Session s = rt.openSession("ray")) {
                assertEquals(learned, kl(s), "the import is what the store holds");
            }
        }
    }

    @Test
    void forgetDeletesTheUserAndStopsWrites() throws Exception {
        Path store = Fixtures.tempStore();
        try (Runtime rt = Runtime.open(config(store, 100))) {
            try (Session s = rt.openSession("gone")) {
                long id = s.generate("Hi").episodeId();
                s.save();
                s.forget();
                expectStatus("ATTUNE_STATUS_USER_FORGOTTEN", s::save);
                expectStatus("ATTUNE_STATUS_UNKNOWN_EPISODE", () -> s.feedbackThumbs(id, true));
            }
            assertFalse(rt.forgetUser("gone"), "nothing left to forget");
            try (Session s = rt.openSession("other")) {
                s.save();
            }
            assertTrue(rt.forgetUser("other"));
            expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> rt.forgetUser(""));
        }
    }

    @Test
    void withoutAStoreSavingIsAStoreError() {
        try (Runtime rt = Runtime.open(config(null, 100)); Session s = rt.openSession("mem")) {
            expectStatus("ATTUNE_STATUS_STORE", s::save);
            expectStatus("ATTUNE_STATUS_STORE", s::exportAdapter);
        }
    }
}
