package lambdarun;

/**
 * Starts the official runtime interface client with the handler taken from _HANDLER, so that a main class is the
 * last word of the JVM's command line, as in Lambda's own Java bootstrap: a wrapper script that inserts JVM options
 * before the last argument (AWS's documented pattern) then works unchanged.
 */
public final class LambdarunMain {
    private LambdarunMain() {}

    public static void main(String[] args) throws Throwable {
        String handler = System.getenv("_HANDLER");
        com.amazonaws.services.lambda.runtime.api.client.AWSLambda.main(new String[] {handler == null ? "" : handler});
    }
}
