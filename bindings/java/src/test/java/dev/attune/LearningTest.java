package dev.attune;

import static dev.attune.Fixtures.config;
import static dev.attune.Fixtures.expectStatus;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

class LearningTest {
    private static List<Reply> replies(Session s, int n) {
        List<Reply> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(s.generate(PromptKind.TEXT, "Say something nice", Fixtures.seeded(10 + i, 6), null));
        }
        return out;
    }

    @Test
    void everyKindOfFeedbackQueuesAndAnUpdateLearnsFromThem() {
        try (Runtime rt = Runtime.open(config(null, 100)); Session s = rt.openSession("learner")) {
            expectStatus("ATTUNE_STATUS_NOT_FOUND", s::lastReport);
            expectStatus("ATTUNE_STATUS_LEARNING", s::update);
            List<Reply> r = replies(s, 5);
            assertEquals(FeedbackOutcome.QUEUED, s.feedbackThumbs(r.get(0).episodeId(), true));
            assertEquals(FeedbackOutcome.QUEUED, s.feedback(r.get(1).episodeId(), -0.5));
            assertEquals(FeedbackOutcome.QUEUED, s.feedbackStars(r.get(2).episodeId(), 5));
            assertEquals(FeedbackOutcome.QUEUED, s.feedbackScore(r.get(3).episodeId(), "csat", 72));
            assertEquals(FeedbackOutcome.QUEUED, s.feedbackJson(r.get(4).episodeId(), "[{\"outcome\": 1, \"weight\": 0.7}, {\"stars\": 1, \"weight\": 0.3}]"));
            String stats = s.statsJson();
            assertTrue(stats.contains("\"feedback\":5"), stats);
            assertTrue(stats.contains("\"user\":\"learner\""), stats);

            UpdateReport report = s.update();
            assertEquals("accepted", report.outcome(), report.json());
            assertTrue(report.json().contains("\"algorithm\""), report.json());
            assertTrue(report.json().contains("\"episodes\":5"), report.json());
            assertEquals(report.json(), s.lastReport().json());
            assertTrue(s.statsJson().contains("\"updates\":1"), s.statsJson());
            // Everything waiting was learned: nothing is left for another update.
            expectStatus("ATTUNE_STATUS_LEARNING", s::update);
        }
    }

    @Test
    void anAcceptedUpdateChangesTheAdapter() {
        try (Runtime rt = Runtime.open(config(null, 100)); Session s = rt.openSession("changes")) {
            assertTrue(s.statsJson().contains("\"kl\":0.0,"), "a fresh adapter is the base model: " + s.statsJson());
            int accepted = 0;
            for (int round = 0; round < 4; round++) {
                for (Reply r : replies(s, 4)) {
                    s.feedbackThumbs(r.episodeId(), r.text().length() % 2 == 0);
                }
                if (s.update().accepted()) {
                    accepted++;
                }
            }
            assertTrue(accepted >= 1, "at least one of four updates is accepted");
            String stats = s.statsJson();
            assertTrue(stats.contains("\"accepted\":" + accepted), stats);
            assertFalse(stats.contains("\"kl\":0.0,"), "the adapter moved away from the base model: " + stats);
        }
    }

    @Test
    void feedbackThatCompletesABatchRunsTheUpdate() {
        try (Runtime rt = Runtime.open(config(null, 2)); Session s = rt.openSession("batch")) {
            List<Reply> r = replies(s, 2);
            assertEquals(FeedbackOutcome.QUEUED, s.feedbackThumbs(r.get(0).episodeId(), true));
            // The second reward completes the batch: its update applies a step (accepted here).
            assertEquals(FeedbackOutcome.UPDATED, s.feedbackThumbs(r.get(1).episodeId(), false));
            UpdateReport last = s.lastReport();
            assertEquals("accepted", last.outcome(), last.json());
            assertTrue(last.json().contains("\"episodes\":2"), last.json());
        }
    }

    @Test
    void aDemonstrationIsLearnedAndTakesNoFeedback() {
        try (Runtime rt = Runtime.open(config(null, 100)); Session s = rt.openSession("teacher")) {
            long id = s.demonstrate(PromptKind.USER, "Greet me", "Hello! Nice to see you.");
            expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.feedbackThumbs(id, true));
            UpdateReport report = s.update();
            assertTrue(report.json().contains("\"episodes\":1"), report.json());
        }
    }

    @Test
    void aCorrectionIsLearnedAsAPairAndItsReplyKeepsTakingFeedback() {
        // Replay is off by default; this test checks it.
        String cfg = config(null, 1).replace("\"lr\": 0.01", "\"lr\": 0.01, \"pair_replay\": 2");
        try (Runtime rt = Runtime.open(cfg); Session s = rt.openSession("fixer")) {
            Reply r = replies(s, 1).get(0);
            assertEquals(FeedbackOutcome.UPDATED, s.correct(r.episodeId(), "Sure, here is something nice."));
            UpdateReport first = s.lastReport();
            assertEquals("accepted", first.outcome(), first.json());
            assertTrue(first.json().contains("\"pairs\":1"), first.json());
            // The reply still takes its reward; that update replays the kept correction.
            assertEquals(FeedbackOutcome.UPDATED, s.feedbackThumbs(r.episodeId(), false));
            assertTrue(s.lastReport().json().contains("\"replayed_pairs\":1"), s.lastReport().json());
            expectStatus("ATTUNE_STATUS_UNKNOWN_EPISODE", () -> s.correct(1L << 40, "x"));
            expectStatus("ATTUNE_STATUS_INVALID_ARGUMENT", () -> s.correct(r.episodeId(), "   "));
        }
    }
}
