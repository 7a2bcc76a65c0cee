package dev.attune;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.function.Executable;

/** The tiny test model's configuration and the assertions the tests share. */
final class Fixtures {
    private Fixtures() {}

    /** The model folder: $ATTUNE_TEST_MODEL, or models/tiny (tests run from the repository root). */
    static String modelDir() {
        String d = System.getenv("ATTUNE_TEST_MODEL");
        String dir = d != null && !d.isEmpty() ? d : "models/tiny";
        if (!Files.isDirectory(Paths.get(dir))) {
            throw new IllegalStateException("no test model at " + Paths.get(dir).toAbsolutePath() + ": run `make setup-test`");
        }
        return dir;
    }

    /**
     * The tiny model on the CPU with a small KV cache and short probes, no rate limit, an update
     * after every {@code autoUpdateAfter} rewards; {@code storeDir} null keeps adapters in memory.
     */
    static String config(Path storeDir, int autoUpdateAfter) {
        String store = storeDir == null ? "{}" : "{\"dir\": " + quote(storeDir.toString()) + ", \"keep_versions\": 4}";
        return "{\"engine\": {\"model_dir\": " + quote(modelDir()) + ", \"execution_providers\": [\"cpu\"], \"threads\": 2, \"max_context\": 256},"
            + " \"store\": " + store + ","
            + " \"learner\": {\"auto_update_after\": " + autoUpdateAfter + ", \"max_updates_per_minute\": 0, \"max_same_sign_run\": 0, \"lr\": 0.01},"
            + " \"generation\": {\"max_new_tokens\": 12, \"sampling\": {\"temperature\": 0.8, \"seed\": 7}},"
            + " \"probe_prompts\": [\"Hello there.\"], \"probe_tokens\": 4}";
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static Path tempStore() throws IOException {
        return Files.createTempDirectory("attune-jtest-");
    }

    /** Seeded sampling so that a test's replies are the same on every run. */
    static String seeded(int seed, int maxNewTokens) {
        return "{\"max_new_tokens\": " + maxNewTokens + ", \"sampling\": {\"temperature\": 1.0, \"seed\": " + seed + "}}";
    }

    private static final Pattern PROBE_KL = Pattern.compile("\"probe\":\\{[^}]*?\"kl\":([^,}]+)");

    /** The session's adapter's KL to the base model on the probe replies (0 for a fresh adapter). */
    static double probeKl(Session s) {
        String stats = s.statsJson();
        Matcher m = PROBE_KL.matcher(stats);
        if (!m.find()) {
            throw new AssertionError("no probe KL in " + stats);
        }
        return Double.parseDouble(m.group(1));
    }

    /** Asserts that {@code call} throws an AttuneException with {@code status}; returns it. */
    static AttuneException expectStatus(String status, Executable call) {
        AttuneException e = assertThrows(AttuneException.class, call);
        assertEquals(status, e.status(), e.getMessage());
        assertEquals(status, Runtime.statusName(e.code()), "the code and the name agree");
        return e;
    }
}
