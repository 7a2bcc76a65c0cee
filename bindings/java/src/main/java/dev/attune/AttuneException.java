package dev.attune;

/**
 * A failed Attune call. Carries the C API's status: {@link #code()} is the stable number
 * ({@code ATTUNE_STATUS_*} in {@code include/attune.h}) and {@link #status()} its name, e.g.
 * {@code "ATTUNE_STATUS_INVALID_JSON"}; the message says what went wrong.
 */
public class AttuneException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int code;
    private final String status;

    /** Called by the native library. */
    public AttuneException(int code, String status, String message) {
        super(status + ": " + message);
        this.code = code;
        this.status = status;
    }

    /** The status code, e.g. 5 for {@code ATTUNE_STATUS_INVALID_JSON}. */
    public int code() {
        return code;
    }

    /** The status name, e.g. {@code "ATTUNE_STATUS_INVALID_JSON"}. */
    public String status() {
        return status;
    }
}
