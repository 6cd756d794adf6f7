/* A hostile stand-in for clearing-agent, for testing the library's side of the contract.
 * As PID 1 ("init") it waits for SIGTERM/SIGKILL. As "exec" it misbehaves according to
 * $FAKE_AGENT_MODE:
 *   silent   reads its request and never answers (a stuck or frozen agent)
 *   garbage  answers with bytes that are not agent frames
 *   forged   answers with a RESULT frame claiming an unknown status
 *   vanish   exits without a result */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "init") == 0) {
        sigset_t s;
        sigfillset(&s);
        sigprocmask(SIG_BLOCK, &s, NULL);
        int sig;
        sigwait(&s, &sig);
        return 0;
    }
    const char *mode = getenv("FAKE_AGENT_MODE");
    char buf[4096];
    (void)!read(0, buf, sizeof(buf));
    if (!mode || strcmp(mode, "silent") == 0) {
        for (;;)
            pause();
    }
    if (strcmp(mode, "garbage") == 0) {
        static const char junk[] = "HTTP/1.1 200 OK\r\n\r\n{\"status\":\"exited\",\"exit_code\":0}";
        (void)!write(1, junk, sizeof(junk) - 1);
        sleep(2);
        return 0;
    }
    if (strcmp(mode, "forged") == 0) {
        /* RESULT frame (type 6, channel 1) with status 99 */
        static const unsigned char f[] = {0, 0, 0, 14, 0, 0, 0, 1, 6, 0, 0, 0,
                                          0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 99};
        (void)!write(1, f, sizeof(f));
        sleep(2);
        return 0;
    }
    return 0; /* vanish */
}
