package dev.attune;

/**
 * What one learning update did: its outcome ({@code "accepted"}, {@code "rolled_back"} or
 * {@code "skipped"}) and the whole report as JSON ({@code {"algorithm", "outcome", "episodes",
 * "tokens", "loss": {...}, "mean_kl", "probe", "grad_norm", "beta", "lr", "elapsed_s", ...}}).
 */
public final class UpdateReport {
    private final String outcome;
    private final String json;

    /** Called by the native library. */
    UpdateReport(String outcome, String json) {
        this.outcome = outcome;
        this.json = json;
    }

    /** {@code "accepted"}, {@code "rolled_back"} or {@code "skipped"}. */
    public String outcome() {
        return outcome;
    }

    /** Whether the step was applied and passed every safeguard. */
    public boolean accepted() {
        return "accepted".equals(outcome);
    }

    public String json() {
        return json;
    }

    @Override
    public String toString() {
        return json;
    }
}
