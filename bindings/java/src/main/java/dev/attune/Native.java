package dev.attune;

/**
 * The native methods ({@code libattune_jni}). Loaded from the path in the system property
 * {@code attune.native.library} when it is set, otherwise by {@code System.loadLibrary("attune_jni")}
 * (from {@code java.library.path}; on Android, from the APK's {@code jniLibs}).
 */
final class Native {
    static {
        String path = System.getProperty("attune.native.library");
        if (path != null && !path.isEmpty()) {
            System.load(path);
        } else {
            System.loadLibrary("attune_jni");
        }
    }

    private Native() {}

    static native String statusName(int status);

    static native long runtimeOpen(String configJson);
    static native void runtimeClose(long runtime);
    static native long runtimeContextTokens(long runtime);
    static native boolean runtimeForgetUser(long runtime, String userId);

    static native long sessionOpen(long runtime, String userId);
    static native void sessionClose(long session);
    static native String sessionUser(long session);
    static native Reply sessionGenerate(long session, int promptKind, String prompt, String optionsJson, TextCallback onText, boolean record);
    static native String sessionFeedback(long session, long episodeId, int kind, double value, String text);
    static native long sessionDemonstrate(long session, int promptKind, String prompt, String reply);
    static native String sessionCorrect(long session, long episodeId, String correctedReply);
    static native UpdateReport sessionUpdate(long session);
    static native UpdateReport sessionLastReport(long session);
    static native long sessionSave(long session);
    static native void sessionRollback(long session, int stepsBack);
    static native void sessionReset(long session);
    static native void sessionForget(long session);
    static native byte[] sessionExport(long session);
    static native void sessionImport(long session, byte[] data);
    static native String sessionStatsJson(long session);
}
