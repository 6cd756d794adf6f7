/* clearing-bench-api: what the daemon (`clearing serve`) costs on top of the Docker Engine API.
 *
 * The benchmark starts its own daemon as a child process (temporary state directory and unix
 * socket, removed at the end) and measures, in one run:
 *
 *   latency     exec of `true` through the daemon's REST API (POST /v1/sandboxes/{id}/exec,
 *               libcurl over the unix socket, one reused connection) against a raw Docker exec
 *               of `true` (POST /containers/{id}/exec + hijacked /exec/{id}/start read to the
 *               end) in a plain runsc container, interleaved round by round
 *   throughput  8 clients (--clients: each of a list of counts, up to 32), each with its own
 *               sandbox (or plain container) and connection, running `true` back to back; the
 *               two sides alternate in slices of at most 5 s until each has had the whole
 *               duration; execs per second on each side
 *   footprint   the daemon's RSS (VmRSS) with 0 sandboxes and with 8 (the largest client
 *               count) idle ones, and the CPU time (utime + stime) it uses while idle, as a
 *               percentage of one core
 *   memory      the PSS and RSS per idle sandbox of everything the engine runs for it (its
 *               containerd shim and every process below it: runsc's gofer, sentry and stubs),
 *               on each side, and what that means for a host of this size
 *
 * Only the exec is inside the clock: checking the outcome (the exit code of `true`: the exec
 * record on the daemon's side, GET /exec/{id}/json on the raw side) is not, and for throughput
 * the raw checks run after the slice. One untimed exec per sandbox and container warms each up
 * before anything is measured.
 *
 * A failed operation is reported on stderr and counted; the figures are over what succeeded,
 * and the exit status is non-zero if anything failed or anything was left behind. Everything
 * made here (sandboxes, containers, the daemon and its temporary directory) is removed, on
 * failure and on SIGINT/SIGTERM too (the current round or slice is finished first; a second
 * signal kills the process, and the daemon, which is told by PR_SET_PDEATHSIG). */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clearing/clearing.h"

#define MIN_ROUNDS 30
#define DEFAULT_ROUNDS 50
#define QUICK_ROUNDS 3
#define MAX_ROUNDS 5000
#define DEFAULT_DURATION_S 20
#define QUICK_DURATION_S 3
#define MAX_DURATION_S 600
#define DEFAULT_IDLE_S 10
#define QUICK_IDLE_S 3
#define MAX_IDLE_S 600
/* Concurrent clients in the throughput test, each with its own sandbox or container. */
#define DEFAULT_CLIENTS 8
#define MAX_CLIENTS 32
#define MAX_CLIENT_COUNTS 4
/* Throughput alternates sides in slices no longer than this, so drift lands on both. */
#define SLICE_MAX_S 5
#define MAX_SLICES ((MAX_DURATION_S + SLICE_MAX_S - 1) / SLICE_MAX_S)
#define DAEMON_START_TIMEOUT_MS 30000
#define DAEMON_STOP_TIMEOUT_MS 15000
#define API_TIMEOUT_MS 60000
#define API_MAX_ANSWER (16u * 1024 * 1024)
#define RAW_EXEC_TIMEOUT_MS 30000
/* How long to wait for the engine to record the exit code once the exec stream has ended. */
#define RAW_EXEC_SETTLE_MS 2000
#define RAW_NAME_PREFIX "clearing-bench-api-raw-"
/* Sandboxes get no idle timeout and the longest lifetime, so that a long run (MAX_ROUNDS,
 * MAX_DURATION_S) does not lose them to the daemon's reaper. */
#define SANDBOX_REQUEST                                                                           \
    "{\"idle_timeout\":0,\"limits\":{\"lifetime\":3600},"                                        \
    "\"metadata\":{\"created_by\":\"clearing-bench-api\"}}"
#define EXEC_REQUEST "{\"argv\":[\"true\"]}"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

enum side { SIDE_CLEARING, SIDE_RAW, SIDE_COUNT };

static const char *const side_names[SIDE_COUNT] = {"clearing", "raw docker"};
static const char *const side_keys[SIDE_COUNT] = {"clearing", "raw_docker"};

/* The exec latency samples of one side, in milliseconds. */
struct series {
    double *ms;
    size_t n;
    unsigned failed;
};

/* The throughput of one side, summed over its slices. */
struct throughput {
    unsigned long execs, failed;
    double seconds;
    double slice_rate[MAX_SLICES]; /* execs/s of each slice */
    unsigned slices;
};

enum rss_point { RSS_EMPTY, RSS_IDLE, RSS_AFTER_LOAD, RSS_COUNT };
enum idle_point { IDLE_EMPTY, IDLE_SANDBOXES, IDLE_COUNT };


/* The daemon's footprint; NAN where it could not be read. */
struct footprint {
    double rss_kib[RSS_COUNT];
    double peak_rss_kib;
    double idle_cpu_pct[IDLE_COUNT];
};

/* What the engine runs for the idle sandboxes of one side, from /proc; NAN where unread. */
struct sandbox_memory {
    unsigned sandboxes, processes;
    double pss_kib, rss_kib; /* the sum over every process */
};

/* A client of the daemon: one libcurl handle, so that its connection is reused. */
struct api {
    CURL *curl;
    struct curl_slist *headers;
    char *buf;
    size_t len, cap;
    bool overflow;
    char curl_err[CURL_ERROR_SIZE];
};

struct bench {
    unsigned rounds, duration_s, idle_s;
    char clearing_bin[PATH_MAX], agent[PATH_MAX];

    /* The daemon and its temporary directory. */
    char dir[64], sock[128], state[128], log[128];
    pid_t daemon;
    bool daemon_reaped, daemon_failed, log_printed;
    int daemon_status;
    char daemon_version[64];

    clr_engine *eng;
    struct api api; /* the main thread's client: setup, latency, cleanup */
    unsigned clients[MAX_CLIENT_COUNTS]; /* the client counts of the throughput part */
    unsigned client_counts;
    unsigned nsandboxes;                               /* the largest client count */
    char sandbox[MAX_CLIENTS][CLR_SANDBOX_ID_MAX + 1]; /* "" where there is none */
    bool sandbox_left[MAX_CLIENTS];                    /* the daemon did not remove it */
    char raw_name[MAX_CLIENTS][64];
    char raw_id[MAX_CLIENTS][72]; /* "" where there is none */

    bool setup_failed;
    unsigned rounds_done;
    struct series lat[SIDE_COUNT];
    struct throughput tp[MAX_CLIENT_COUNTS][SIDE_COUNT];
    unsigned slices_per_side;
    struct footprint fp;
    struct sandbox_memory mem[SIDE_COUNT];
    double host_mem_kib; /* MemTotal */
};

/* Set by SIGINT/SIGTERM. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* ---- the daemon's REST API, with libcurl over its unix socket ---- */

static size_t api_on_data(char *p, size_t size, size_t n, void *ud)
{
    struct api *a = ud;
    size_t len = size * n;
    if (a->len + len + 1 > API_MAX_ANSWER) {
        a->overflow = true;
        return 0;
    }
    if (a->len + len + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + len + 1)
            cap *= 2;
        char *d = realloc(a->buf, cap);
        if (!d)
            return 0;
        a->buf = d;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, p, len);
    a->len += len;
    a->buf[a->len] = '\0';
    return len;
}

static void api_close(struct api *a)
{
    if (a->curl)
        curl_easy_cleanup(a->curl);
    curl_slist_free_all(a->headers);
    free(a->buf);
    *a = (struct api){0};
}

static int api_open(struct api *a, const char *socket_path, char *why, size_t why_len)
{
    *a = (struct api){0};
    a->curl = curl_easy_init();
    a->headers = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h = a->headers ? curl_slist_append(a->headers, "Expect:") : NULL;
    if (!a->curl || !h) {
        api_close(a);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    a->headers = h;
    curl_easy_setopt(a->curl, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, a->headers);
    curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, api_on_data);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, a->curl_err);
    curl_easy_setopt(a->curl, CURLOPT_TIMEOUT_MS, (long)API_TIMEOUT_MS);
    /* Threads: no SIGALRM-based name resolution timeouts. */
    curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L);
    return 0;
}

/* One call: POST with body when body is not NULL, else method (GET or DELETE) without one.
 * Returns the HTTP status with the answer in a->buf (NUL-terminated, possibly empty), or -1
 * with why filled when the daemon could not be reached. */
static int api_call(struct api *a, const char *method, const char *path, const char *body,
                    char *why, size_t why_len)
{
    char url[256];
    snprintf(url, sizeof(url), "http://clearing%s", path);
    a->len = 0;
    a->overflow = false;
    a->curl_err[0] = '\0';
    if (a->buf)
        a->buf[0] = '\0';
    curl_easy_setopt(a->curl, CURLOPT_URL, url);
    if (body) {
        curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(a->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(method, "GET") == 0 ? NULL : method);
    }
    CURLcode rc = curl_easy_perform(a->curl);
    if (rc != CURLE_OK) {
        snprintf(why, why_len, "%s %s: %s", method, path,
                 a->overflow     ? "the answer is too large"
                 : a->curl_err[0] ? a->curl_err
                                  : curl_easy_strerror(rc));
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
    return (int)status;
}

static const char *api_answer(const struct api *a)
{
    return a->buf ? a->buf : "";
}

/* For an unexpected status: the daemon's error message, or the start of its answer. */
static void api_unexpected(const struct api *a, const char *method, const char *path, int status,
                           char *why, size_t why_len)
{
    json_t *j = json_loads(api_answer(a), 0, NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(why, why_len, "%s %s answered %d: %.512s", method, path, status,
             msg ? msg : api_answer(a));
    json_decref(j);
}

/* Runs `true` in the sandbox. t_ms (if not NULL) receives the time of the call alone; checking
 * the exec record comes after it. Fills why on failure. */
static int api_exec_true(struct api *a, const char *sandbox, double *t_ms, char *why,
                         size_t why_len)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec", sandbox);
    double t0 = now_ms();
    int st = api_call(a, "POST", path, EXEC_REQUEST, why, why_len);
    double t1 = now_ms();
    if (st < 0)
        return -1;
    if (st != 200) {
        api_unexpected(a, "POST", path, st, why, why_len);
        return -1;
    }
    json_t *j = json_loads(api_answer(a), 0, NULL);
    json_t *res = json_object_get(j, "result");
    const char *status = json_string_value(json_object_get(res, "status"));
    json_t *code = json_object_get(res, "exit_code");
    int rc = 0;
    if (!status || strcmp(status, "exited") != 0 || !json_is_integer(code) ||
        json_integer_value(code) != 0) {
        const char *msg = json_string_value(json_object_get(res, "message"));
        snprintf(why, why_len, "`true` ended %s, exit code %" JSON_INTEGER_FORMAT "%s%.512s",
                 status ? status : "(no result)",
                 json_is_integer(code) ? json_integer_value(code) : (json_int_t)-1,
                 msg ? ": " : "", msg ? msg : "");
        rc = -1;
    }
    json_decref(j);
    if (rc == 0 && t_ms)
        *t_ms = t1 - t0;
    return rc;
}

/* ---- raw Docker Engine API calls (as bench_lifecycle makes them) ---- */

/* One JSON call that must answer `expect` (or `also`, if not 0). Fills why on failure. */
static int call(clr_engine *eng, const char *method, const char *path, json_t *body,
                json_t **resp, int expect, int also, char *why, size_t why_len)
{
    clr_error err = CLR_ERROR_INIT;
    int st = clr_engine_call(eng, method, path, body, resp, &err);
    if (st == expect || (also && st == also))
        return 0;
    if (st >= 0 && err.code == CLR_E_NONE)
        snprintf(why, why_len, "%s %s answered %d, expected %d", method, path, st, expect);
    else
        snprintf(why, why_len, "%s", err.message);
    return -1;
}

/* Removal of a container; 404 means it is gone. */
static int raw_remove(clr_engine *eng, const char *id_or_name, char *why, size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s?force=1", id_or_name);
    return call(eng, "DELETE", path, NULL, NULL, 204, 404, why, why_len);
}

static int raw_create(clr_engine *eng, const char *name, char *cid, size_t cid_len, char *why,
                      size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/create?name=%s", name);
    /* NetworkDisabled as clearing sets it (see bench_lifecycle.c). */
    json_t *body = json_pack("{s:s, s:[s,s], s:b, s:{s:s, s:s}}", "Image", CLR_DEFAULT_IMAGE,
                             "Cmd", "sleep", "infinity", "NetworkDisabled", 1, "HostConfig",
                             "Runtime", "runsc", "NetworkMode", "none");
    json_t *resp = NULL;
    int rc = call(eng, "POST", path, body, &resp, 201, 0, why, why_len);
    json_decref(body);
    const char *id = json_string_value(json_object_get(resp, "Id"));
    if (rc == 0 && !id) {
        snprintf(why, why_len, "POST %s answered without an Id", path);
        rc = -1;
    }
    if (rc == 0)
        snprintf(cid, cid_len, "%s", id);
    json_decref(resp);
    if (rc < 0)
        return -1;
    snprintf(path, sizeof(path), "/containers/%s/start", cid);
    return call(eng, "POST", path, NULL, NULL, 204, 304, why, why_len);
}

/* Starts `true` with the exec stream attached and reads the stream to its end. */
static int raw_exec(clr_engine *eng, const char *cid, char *eid, size_t eid_len, char *why,
                    size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/exec", cid);
    json_t *body = json_pack("{s:b, s:b, s:[s]}", "AttachStdout", 1, "AttachStderr", 1, "Cmd",
                             "true");
    json_t *resp = NULL;
    int rc = call(eng, "POST", path, body, &resp, 201, 0, why, why_len);
    json_decref(body);
    const char *id = json_string_value(json_object_get(resp, "Id"));
    if (rc == 0 && !id) {
        snprintf(why, why_len, "POST %s answered without an Id", path);
        rc = -1;
    }
    if (rc == 0)
        snprintf(eid, eid_len, "%s", id);
    json_decref(resp);
    if (rc < 0)
        return -1;

    clr_error err = CLR_ERROR_INIT;
    clr_engine_stream *s = NULL;
    snprintf(path, sizeof(path), "/exec/%s/start", eid);
    body = json_pack("{s:b, s:b}", "Detach", 0, "Tty", 0);
    rc = clr_engine_hijack(&s, eng, path, body, &err);
    json_decref(body);
    if (rc < 0) {
        snprintf(why, why_len, "%s", err.message);
        return -1;
    }
    double deadline = now_ms() + RAW_EXEC_TIMEOUT_MS;
    uint8_t buf[16384];
    for (;;) {
        double left = deadline - now_ms();
        if (interrupted || left <= 0) {
            snprintf(why, why_len, "%s", interrupted ? "interrupted"
                                                     : "the exec stream did not end within 30 s");
            rc = -1;
            break;
        }
        ssize_t n = clr_engine_stream_read(s, buf, sizeof(buf), (int)left, &err);
        if (n == 0)
            break;
        if (n == -1) {
            snprintf(why, why_len, "%s", err.message);
            rc = -1;
            break;
        }
    }
    clr_engine_stream_free(s);
    return rc;
}

/* Outside the clock: did `true` really run and exit 0? */
static int raw_exec_check(clr_engine *eng, const char *eid, char *why, size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/exec/%s/json", eid);
    double deadline = now_ms() + RAW_EXEC_SETTLE_MS;
    for (;;) {
        json_t *resp = NULL;
        if (call(eng, "GET", path, NULL, &resp, 200, 0, why, why_len) < 0) {
            json_decref(resp);
            return -1;
        }
        bool running = json_is_true(json_object_get(resp, "Running"));
        json_t *code = json_object_get(resp, "ExitCode");
        json_int_t exit_code = json_is_integer(code) ? json_integer_value(code) : -1;
        json_decref(resp);
        if (!running && exit_code == 0)
            return 0;
        if (!running || now_ms() >= deadline) {
            snprintf(why, why_len, "`true` %s, exit code %" JSON_INTEGER_FORMAT,
                     running ? "was still running after its stream ended" : "failed", exit_code);
            return -1;
        }
        sleep_ms(10);
    }
}

/* ---- the daemon process ---- */

/* Has the daemon exited? Reaps it and records how, once. */
static bool daemon_gone(struct bench *b)
{
    if (b->daemon <= 0 || b->daemon_reaped)
        return true;
    int st;
    if (waitpid(b->daemon, &st, WNOHANG) == b->daemon) {
        b->daemon_reaped = true;
        b->daemon_status = st;
        return true;
    }
    return false;
}

static void describe_status(int st, char *out, size_t len)
{
    if (WIFEXITED(st))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, len, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(out, len, "ended (wait status %#x)", (unsigned)st);
}

/* The end of the daemon's log, so that a failure says why. */
static void print_daemon_log(struct bench *b)
{
    if (b->log_printed)
        return;
    b->log_printed = true;
    int fd = open(b->log, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > 4096 ? size - 4096 : 0;
    char buf[4097];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    fprintf(stderr, "--- the end of the daemon's log (%s) ---\n%s%s--- end of log ---\n", b->log,
            buf, buf[n - 1] == '\n' ? "" : "\n");
}

/* When a call to the daemon failed: says so if the daemon is the reason. */
static void check_daemon(struct bench *b)
{
    if (b->daemon_failed || !daemon_gone(b))
        return;
    char how[96];
    describe_status(b->daemon_status, how, sizeof(how));
    fprintf(stderr, "the daemon (pid %ld) %s\n", (long)b->daemon, how);
    print_daemon_log(b);
    b->daemon_failed = true;
}

/* Forks `clearing --state-dir STATE serve --socket SOCK ...`, with its output in the log. */
static int daemon_start(struct bench *b, char *why, size_t why_len)
{
    int logfd = open(b->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0) {
        snprintf(why, why_len, "cannot create %s: %s", b->log, strerror(errno));
        return -1;
    }
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* The daemon's agent is the one the caller named, from the same build. */
    if (setenv("CLEARING_AGENT", b->agent, 1) < 0 || nullfd < 0) {
        snprintf(why, why_len, "cannot prepare the daemon's environment: %s", strerror(errno));
        close(logfd);
        if (nullfd >= 0)
            close(nullfd);
        return -1;
    }
    char *const argv[] = {b->clearing_bin, "--state-dir", b->state, "serve", "--socket",
                          b->sock, "--max-sandboxes", "64", "--max-execs", "64", NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, why_len, "fork: %s", strerror(errno));
        close(logfd);
        close(nullfd);
        return -1;
    }
    if (pid == 0) {
        /* Its own process group, so that ^C reaches only the benchmark, which then removes
         * the sandboxes through the daemon before stopping it. If the benchmark dies without
         * cleaning up, the daemon is told to stop. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        dup2(nullfd, STDIN_FILENO);
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        execv(b->clearing_bin, argv);
        dprintf(STDERR_FILENO, "clearing-bench-api: cannot run %s: %s\n", b->clearing_bin,
                strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: whichever runs first */
    close(logfd);
    close(nullfd);
    b->daemon = pid;
    return 0;
}

/* Waits until the daemon answers GET /v1/health. */
static int daemon_wait(struct bench *b, char *why, size_t why_len)
{
    double deadline = now_ms() + DAEMON_START_TIMEOUT_MS;
    char last[1100] = "no answer yet";
    while (!interrupted) {
        if (daemon_gone(b)) {
            char how[96];
            describe_status(b->daemon_status, how, sizeof(how));
            snprintf(why, why_len, "the daemon %s before it answered", how);
            return -1;
        }
        if (access(b->sock, F_OK) == 0) {
            int st = api_call(&b->api, "GET", "/v1/health", NULL, last, sizeof(last));
            if (st == 200) {
                json_t *j = json_loads(api_answer(&b->api), 0, NULL);
                const char *v = json_string_value(json_object_get(j, "version"));
                snprintf(b->daemon_version, sizeof(b->daemon_version), "%s", v ? v : "?");
                json_decref(j);
                return 0;
            }
            if (st > 0)
                api_unexpected(&b->api, "GET", "/v1/health", st, last, sizeof(last));
        }
        if (now_ms() >= deadline) {
            snprintf(why, why_len, "the daemon did not answer within %d s (%.300s)",
                     DAEMON_START_TIMEOUT_MS / 1000, last);
            return -1;
        }
        sleep_ms(50);
    }
    snprintf(why, why_len, "interrupted");
    return -1;
}

/* SIGTERM, then SIGKILL if it does not stop in time. Returns 0 if it stopped cleanly. */
static int daemon_stop(struct bench *b)
{
    if (b->daemon <= 0)
        return 0;
    if (!daemon_gone(b)) {
        kill(b->daemon, SIGTERM);
        double deadline = now_ms() + DAEMON_STOP_TIMEOUT_MS;
        while (!daemon_gone(b) && now_ms() < deadline)
            sleep_ms(20);
        if (!daemon_gone(b)) {
            fprintf(stderr, "the daemon (pid %ld) did not stop within %d s of SIGTERM; killing "
                            "it\n",
                    (long)b->daemon, DAEMON_STOP_TIMEOUT_MS / 1000);
            kill(b->daemon, SIGKILL);
            int st;
            if (waitpid(b->daemon, &st, 0) == b->daemon) {
                b->daemon_reaped = true;
                b->daemon_status = st;
            }
            return -1;
        }
        if (WIFEXITED(b->daemon_status) && WEXITSTATUS(b->daemon_status) == 0)
            return 0;
    }
    check_daemon(b);
    return -1;
}

/* ---- the daemon's footprint, from /proc ---- */

/* A "Name:   N kB" line of /proc/PID/status, in KiB; NAN if unreadable. */
static double proc_status_kib(pid_t pid, const char *name)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return NAN;
    double v = NAN;
    char line[256];
    size_t nl = strlen(name);
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kib;
        if (strncmp(line, name, nl) == 0 && line[nl] == ':' &&
            sscanf(line + nl + 1, "%llu", &kib) == 1) {
            v = (double)kib;
            break;
        }
    }
    fclose(f);
    return v;
}

/* utime + stime of the whole process (all threads), in clock ticks. */
static int proc_cpu_ticks(pid_t pid, unsigned long long *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold anything, ')' too: the fields start after the last ')'.
     * From there: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt,
     * cmajflt, utime (field 14), stime (15). */
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    *out = ut + st;
    return 0;
}

/* CPU the daemon uses over idle_s seconds of nothing to do, in % of one core; NAN if the
 * window was interrupted or /proc could not be read. */
static double idle_cpu(struct bench *b, const char *what)
{
    unsigned long long c0, c1;
    fprintf(stderr, "idle, %s: %u s ...\n", what, b->idle_s);
    double t0 = now_ms();
    if (proc_cpu_ticks(b->daemon, &c0) < 0)
        return NAN;
    double end = t0 + b->idle_s * 1000.0;
    while (!interrupted && now_ms() < end)
        sleep_ms(100);
    if (interrupted || daemon_gone(b) || proc_cpu_ticks(b->daemon, &c1) < 0)
        return NAN;
    double secs = (now_ms() - t0) / 1000.0;
    long hz = sysconf(_SC_CLK_TCK);
    double pct = (double)(c1 - c0) / (double)(hz > 0 ? hz : 100) / secs * 100.0;
    fprintf(stderr, "idle, %s: %.2f%% of one core, RSS %.0f KiB\n", what, pct,
            proc_status_kib(b->daemon, "VmRSS"));
    return pct;
}

/* ---- 4: what the engine runs for an idle sandbox, from /proc ---- */

/* A process of the host, and the side whose sandbox it serves (-1: neither). */
struct host_proc {
    pid_t pid, ppid;
    int side;
};

/* The parent of pid from /proc/PID/stat; -1 if unreadable (the process is gone). */
static pid_t proc_ppid(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold anything */
    long ppid;
    if (!p || sscanf(p + 1, " %*c %ld", &ppid) != 1)
        return -1;
    return (pid_t)ppid;
}

/* The command line of pid, NULs turned into spaces; "" if unreadable. */
static void proc_cmdline(pid_t pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, len - 1);
    close(fd);
    if (n <= 0)
        return;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\0')
            out[i] = ' ';
    out[n] = '\0';
}

/* The Pss and Rss lines of /proc/PID/smaps_rollup, in KiB; -1 if unreadable. */
static int proc_pss_rss(pid_t pid, double *pss, double *rss)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    unsigned long long v;
    int got = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "Pss: %llu kB", &v) == 1) {
            *pss = (double)v;
            got |= 1;
        } else if (sscanf(line, "Rss: %llu kB", &v) == 1) {
            *rss = (double)v;
            got |= 2;
        }
    }
    fclose(f);
    return got == 3 ? 0 : -1;
}

static double meminfo_kib(const char *name)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return NAN;
    char line[256];
    size_t nl = strlen(name);
    double v = NAN;
    unsigned long long kib;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, name, nl) == 0 && line[nl] == ':' &&
            sscanf(line + nl + 1, "%llu", &kib) == 1) {
            v = (double)kib;
            break;
        }
    fclose(f);
    return v;
}

/* The memory of every process the engine runs for the idle sandboxes of each side: the
 * containerd shim, whose command line names the container's full id, and everything below it
 * (runsc's gofer, the sentry and its systrap stub processes, `runsc wait`). PSS shares what
 * processes share (the runsc binary, the sandbox's memory file mapped by the sentry and its
 * stubs) among them, so the sum over N sandboxes is what N sandboxes cost; RSS counts shared
 * pages in each process and overstates it. */
static void sandbox_memory(struct bench *b)
{
    char ids[SIDE_COUNT][MAX_CLIENTS][72];
    unsigned nids[SIDE_COUNT] = {0, 0};
    memset(ids, 0, sizeof(ids));
    for (unsigned i = 0; i < b->nsandboxes; i++)
        if (b->raw_id[i][0])
            snprintf(ids[SIDE_RAW][nids[SIDE_RAW]++], sizeof(ids[0][0]), "%s", b->raw_id[i]);
    clr_sandbox_info *list = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_list(&list, &n, b->eng, &err) < 0) {
        fprintf(stderr, "memory: listing sandboxes: %s\n", err.message);
        return;
    }
    for (size_t i = 0; i < n; i++)
        for (unsigned k = 0; k < b->nsandboxes; k++)
            if (strcmp(list[i].id, b->sandbox[k]) == 0 && list[i].container_id[0] &&
                nids[SIDE_CLEARING] < MAX_CLIENTS)
                snprintf(ids[SIDE_CLEARING][nids[SIDE_CLEARING]++], sizeof(ids[0][0]), "%s",
                         list[i].container_id);
    free(list);

    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct host_proc *ps = NULL;
    size_t np = 0, cap = 0;
    static char cmd[16384];
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (np == cap) {
            cap = cap ? cap * 2 : 1024;
            void *p = realloc(ps, cap * sizeof(*ps));
            if (!p)
                break;
            ps = p;
        }
        struct host_proc *hp = &ps[np];
        hp->pid = (pid_t)pid;
        hp->ppid = proc_ppid(hp->pid);
        hp->side = -1;
        proc_cmdline(hp->pid, cmd, sizeof(cmd));
        /* Only a shim names the container with -id; runsc's processes name it in paths. */
        if (strncmp(cmd, "/usr/bin/containerd-shim", 24) == 0 ||
            strstr(cmd, "containerd-shim-runc-v2 ")) {
            for (int sd = 0; sd < SIDE_COUNT && hp->side < 0; sd++)
                for (unsigned k = 0; k < nids[sd]; k++)
                    if (strstr(cmd, ids[sd][k])) {
                        hp->side = sd;
                        break;
                    }
        }
        np++;
    }
    closedir(d);
    /* Everything below a shim serves its sandbox: spread the side down the tree. */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < np; i++) {
            if (ps[i].side >= 0)
                continue;
            for (size_t k = 0; k < np; k++)
                if (ps[k].pid == ps[i].ppid && ps[k].side >= 0) {
                    ps[i].side = ps[k].side;
                    changed = true;
                    break;
                }
        }
    }
    for (int sd = 0; sd < SIDE_COUNT; sd++)
        b->mem[sd] = (struct sandbox_memory){.sandboxes = nids[sd]};
    for (size_t i = 0; i < np; i++) {
        double pss = 0, rss = 0;
        if (ps[i].side < 0 || proc_pss_rss(ps[i].pid, &pss, &rss) < 0)
            continue;
        struct sandbox_memory *m = &b->mem[ps[i].side];
        m->processes++;
        m->pss_kib += pss;
        m->rss_kib += rss;
    }
    free(ps);
    b->host_mem_kib = meminfo_kib("MemTotal");
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct sandbox_memory *m = &b->mem[sd];
        fprintf(stderr, "memory, %s: %u idle sandboxes, %u processes, PSS %.0f KiB, RSS %.0f KiB\n",
                side_names[sd], m->sandboxes, m->processes, m->pss_kib, m->rss_kib);
    }
}

/* ---- setup: sandboxes through the daemon, plain containers through the engine ---- */

static int setup(struct bench *b)
{
    char why[1100];
    int rc = 0;
    for (int i = 0; i < (int)b->nsandboxes && !interrupted; i++) {
        int st = api_call(&b->api, "POST", "/v1/sandboxes", SANDBOX_REQUEST, why, sizeof(why));
        const char *id = NULL;
        json_t *j = NULL;
        if (st == 201) {
            j = json_loads(api_answer(&b->api), 0, NULL);
            id = json_string_value(json_object_get(j, "id"));
            if (id && clr_sandbox_id_valid(id))
                snprintf(b->sandbox[i], sizeof(b->sandbox[i]), "%s", id);
            else
                snprintf(why, sizeof(why), "POST /v1/sandboxes answered without a valid id");
        } else if (st > 0) {
            api_unexpected(&b->api, "POST", "/v1/sandboxes", st, why, sizeof(why));
        }
        json_decref(j);
        if (!b->sandbox[i][0]) {
            fprintf(stderr, "setup: creating sandbox %d through the daemon: %s\n", i + 1, why);
            check_daemon(b);
            return -1;
        }
        if (raw_create(b->eng, b->raw_name[i], b->raw_id[i], sizeof(b->raw_id[i]), why,
                       sizeof(why)) < 0) {
            fprintf(stderr, "setup: creating raw container %s: %s\n", b->raw_name[i], why);
            return -1;
        }
    }
    /* One untimed exec on each: any start-up cost is not what this benchmark is about
     * (bench_lifecycle measures the first exec), and a broken sandbox shows here. */
    for (int i = 0; i < (int)b->nsandboxes && !interrupted; i++) {
        char eid[72];
        if (api_exec_true(&b->api, b->sandbox[i], NULL, why, sizeof(why)) < 0) {
            fprintf(stderr, "setup: warm-up exec in sandbox %s: %s\n", b->sandbox[i], why);
            check_daemon(b);
            rc = -1;
        }
        if (raw_exec(b->eng, b->raw_id[i], eid, sizeof(eid), why, sizeof(why)) < 0 ||
            raw_exec_check(b->eng, eid, why, sizeof(why)) < 0) {
            fprintf(stderr, "setup: warm-up exec in raw container %s: %s\n", b->raw_name[i], why);
            rc = -1;
        }
    }
    return interrupted ? -1 : rc;
}

/* ---- 1: exec latency, interleaved round by round ---- */

static void latency(struct bench *b)
{
    /* A dead daemon makes the rest meaningless: stop there (the cleanup still runs). */
    for (unsigned i = 0; i < b->rounds && !interrupted && !b->daemon_failed; i++) {
        char why[1100], eid[72];
        double ms[SIDE_COUNT] = {NAN, NAN};

        if (api_exec_true(&b->api, b->sandbox[0], &ms[SIDE_CLEARING], why, sizeof(why)) < 0) {
            fprintf(stderr, "round %u: clearing exec failed: %s\n", i + 1, why);
            b->lat[SIDE_CLEARING].failed++;
            ms[SIDE_CLEARING] = NAN;
            check_daemon(b);
        } else {
            b->lat[SIDE_CLEARING].ms[b->lat[SIDE_CLEARING].n++] = ms[SIDE_CLEARING];
        }

        double t0 = now_ms();
        if (raw_exec(b->eng, b->raw_id[0], eid, sizeof(eid), why, sizeof(why)) < 0) {
            fprintf(stderr, "round %u: raw docker exec failed: %s\n", i + 1, why);
            b->lat[SIDE_RAW].failed++;
        } else {
            double t = now_ms() - t0;
            if (raw_exec_check(b->eng, eid, why, sizeof(why)) < 0) {
                fprintf(stderr, "round %u: raw docker exec failed: %s\n", i + 1, why);
                b->lat[SIDE_RAW].failed++;
            } else {
                ms[SIDE_RAW] = t;
                b->lat[SIDE_RAW].ms[b->lat[SIDE_RAW].n++] = t;
            }
        }
        b->rounds_done++;
        fprintf(stderr, "round %u/%u:", i + 1, b->rounds);
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            if (isnan(ms[sd]))
                fprintf(stderr, "%s %s exec -", sd ? " |" : "", side_names[sd]);
            else
                fprintf(stderr, "%s %s exec %.1f", sd ? " |" : "", side_names[sd], ms[sd]);
        }
        fprintf(stderr, " (ms)\n");
    }
}

/* ---- 2: throughput, N clients back to back, sides alternating by slice ---- */

/* Lines the clients of one slice up: all start together, and every clock has stopped before
 * the raw side's checks add calls to the engine. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int phase;  /* 0 wait, 1 run, 2 check */
    bool abort; /* the slice could not start: return at once */
    int timed;  /* clients whose clock has stopped */
};

struct worker {
    struct bench *b;
    enum side side;
    int idx;
    struct api api;  /* clearing: its own connection to the daemon */
    clr_engine *eng; /* raw: its own engine connection (a clr_engine is not thread-safe) */
    struct gate *gate;
    double slice_ms;
    /* this slice */
    double t_start, t_end;
    unsigned long execs, failed;
    char (*eids)[72]; /* raw: execs to check once the slice is over */
    size_t neids, cap_eids;
};

/* Waits for the gate to reach phase; false if the slice was called off. */
static bool gate_wait(struct gate *g, int phase)
{
    pthread_mutex_lock(&g->lock);
    while (g->phase < phase && !g->abort)
        pthread_cond_wait(&g->changed, &g->lock);
    bool go = !g->abort;
    pthread_mutex_unlock(&g->lock);
    return go;
}

static void gate_set(struct gate *g, int phase, bool abort)
{
    pthread_mutex_lock(&g->lock);
    g->phase = phase;
    g->abort = abort;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    char why[1100];
    w->execs = w->failed = 0;
    w->neids = 0;
    w->t_start = w->t_end = 0;
    if (!gate_wait(w->gate, 1))
        return NULL;
    w->t_start = now_ms();
    double deadline = w->t_start + w->slice_ms;
    while (!interrupted && now_ms() < deadline) {
        int rc;
        if (w->side == SIDE_CLEARING) {
            rc = api_exec_true(&w->api, w->b->sandbox[w->idx], NULL, why, sizeof(why));
        } else {
            if (w->neids == w->cap_eids) {
                size_t cap = w->cap_eids ? w->cap_eids * 2 : 1024;
                void *p = realloc(w->eids, cap * sizeof(w->eids[0]));
                if (!p) {
                    snprintf(why, sizeof(why), "out of memory");
                    w->failed++;
                    break;
                }
                w->eids = p;
                w->cap_eids = cap;
            }
            rc = raw_exec(w->eng, w->b->raw_id[w->idx], w->eids[w->neids],
                          sizeof(w->eids[0]), why, sizeof(why));
            if (rc == 0)
                w->neids++;
        }
        if (rc < 0) {
            /* Stop this client for the rest of the slice rather than spin on an error. */
            fprintf(stderr, "throughput: %s client %d: exec failed: %s\n",
                    side_names[w->side], w->idx + 1, why);
            w->failed++;
            break;
        }
        w->execs++;
    }
    w->t_end = now_ms();
    pthread_mutex_lock(&w->gate->lock);
    w->gate->timed++;
    pthread_cond_broadcast(&w->gate->changed);
    pthread_mutex_unlock(&w->gate->lock);
    if (!gate_wait(w->gate, 2))
        return NULL;
    unsigned reported = 0;
    for (size_t i = 0; i < w->neids; i++) {
        if (raw_exec_check(w->eng, w->eids[i], why, sizeof(why)) == 0)
            continue;
        if (reported++ == 0)
            fprintf(stderr, "throughput: raw docker client %d: exec failed: %s\n", w->idx + 1,
                    why);
        w->execs--;
        w->failed++;
    }
    return NULL;
}

/* One slice of one side; -1 if its threads could not be started. */
static int throughput_slice(struct bench *b, struct worker *ws, enum side side, double slice_ms,
                            unsigned ci)
{
    struct gate g = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
    pthread_t th[MAX_CLIENTS];
    const int clients = (int)b->clients[ci];
    int started = 0;
    for (int i = 0; i < clients; i++) {
        ws[i].gate = &g;
        ws[i].slice_ms = slice_ms;
        if (pthread_create(&th[i], NULL, worker_run, &ws[i]) != 0)
            break;
        started++;
    }
    if (started < clients) {
        gate_set(&g, 0, true);
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        return -1;
    }
    gate_set(&g, 1, false);
    pthread_mutex_lock(&g.lock);
    while (g.timed < clients)
        pthread_cond_wait(&g.changed, &g.lock);
    pthread_mutex_unlock(&g.lock);
    gate_set(&g, 2, false);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);

    double t0 = ws[0].t_start, t1 = ws[0].t_end;
    unsigned long execs = 0, failed = 0;
    for (int i = 0; i < clients; i++) {
        t0 = fmin(t0, ws[i].t_start);
        t1 = fmax(t1, ws[i].t_end);
        execs += ws[i].execs;
        failed += ws[i].failed;
    }
    struct throughput *tp = &b->tp[ci][side];
    double secs = (t1 - t0) / 1000.0;
    tp->execs += execs;
    tp->failed += failed;
    tp->seconds += secs;
    double rate = secs > 0 ? (double)execs / secs : NAN;
    tp->slice_rate[tp->slices++] = rate;
    fprintf(stderr,
            "throughput, %d clients, slice %u/%u: %s %.1f execs/s (%lu execs in %.2f s, %lu "
            "failed)\n",
            clients, tp->slices, b->slices_per_side, side_names[side], rate, execs, secs, failed);
    return 0;
}

/* The throughput with b->clients[ci] clients. */
static void throughput_at(struct bench *b, unsigned ci)
{
    static struct worker ws[SIDE_COUNT][MAX_CLIENTS]; /* large: one libcurl error buffer each */
    memset(ws, 0, sizeof(ws));
    const int clients = (int)b->clients[ci];
    struct throughput *tp = b->tp[ci];
    char why[1100];
    bool ok = true;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        for (int i = 0; i < clients; i++) {
            struct worker *w = &ws[sd][i];
            w->b = b;
            w->side = (enum side)sd;
            w->idx = i;
            if (sd == SIDE_CLEARING) {
                if (api_open(&w->api, b->sock, why, sizeof(why)) < 0) {
                    fprintf(stderr, "throughput: %s\n", why);
                    ok = false;
                }
            } else {
                clr_error err = CLR_ERROR_INIT;
                clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
                if (clr_engine_open(&w->eng, &eo, &err) < 0) {
                    fprintf(stderr, "throughput: engine connection: %s\n", err.message);
                    ok = false;
                }
            }
        }
    }
    if (!ok) {
        tp[SIDE_CLEARING].failed++;
        tp[SIDE_RAW].failed++;
    }
    /* Slices of equal length, at most SLICE_MAX_S each, clearing first, then alternating. */
    unsigned slices = (b->duration_s + SLICE_MAX_S - 1) / SLICE_MAX_S;
    double slice_ms = b->duration_s * 1000.0 / slices;
    b->slices_per_side = slices;
    for (unsigned s = 0; ok && s < slices && !interrupted && !b->daemon_failed; s++) {
        for (int sd = 0; sd < SIDE_COUNT && !interrupted; sd++) {
            if (throughput_slice(b, ws[sd], (enum side)sd, slice_ms, ci) < 0) {
                fprintf(stderr, "throughput: cannot start %d threads\n", clients);
                tp[sd].failed++;
                ok = false;
                break;
            }
            if (sd == SIDE_CLEARING && tp[sd].failed)
                check_daemon(b);
            if (b->daemon_failed)
                break;
        }
    }
    if (tp[SIDE_CLEARING].failed)
        check_daemon(b);
    /* Closed before the idle measurement: an open connection is a thread in the daemon. */
    for (int i = 0; i < clients; i++) {
        api_close(&ws[SIDE_CLEARING][i].api);
        clr_engine_free(ws[SIDE_RAW][i].eng);
        free(ws[SIDE_RAW][i].eids);
    }
}

/* Each client count in turn, in the order given. */
static void throughput(struct bench *b)
{
    for (unsigned ci = 0; ci < b->client_counts && !interrupted && !b->daemon_failed; ci++)
        throughput_at(b, ci);
}

/* ---- cleanup ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (rc < 0 && errno != ENOENT)
        fprintf(stderr, "removing %s: %s\n", path, strerror(errno));
    return 0;
}

/* Removes everything this run made; returns how many things are still there. */
static unsigned cleanup(struct bench *b)
{
    unsigned still = 0;
    char why[1100];

    /* Sandboxes through the daemon that made them, as a client would. */
    for (int i = 0; i < (int)b->nsandboxes; i++) {
        if (!b->sandbox[i][0])
            continue;
        char path[128];
        snprintf(path, sizeof(path), "/v1/sandboxes/%s", b->sandbox[i]);
        int st = daemon_gone(b) ? -1 : api_call(&b->api, "DELETE", path, NULL, why, sizeof(why));
        if (st == 204 || st == 404)
            continue;
        if (st > 0)
            api_unexpected(&b->api, "DELETE", path, st, why, sizeof(why));
        else if (daemon_gone(b))
            snprintf(why, sizeof(why), "the daemon is gone");
        fprintf(stderr, "cleanup: removing sandbox %s through the daemon: %s; removing it "
                        "directly\n",
                b->sandbox[i], why);
        b->sandbox_left[i] = true;
    }
    api_close(&b->api);
    if (daemon_stop(b) < 0)
        b->daemon_failed = true;

    /* What the daemon did not remove, directly with the library: the ones we know, then any
     * other container of this daemon (its owner label names its database), such as one whose
     * create answer was lost. */
    if (b->eng) {
        for (int i = 0; i < (int)b->nsandboxes; i++) {
            if (!b->sandbox_left[i])
                continue;
            clr_error err = CLR_ERROR_INIT;
            if (clr_sandbox_destroy(b->eng, b->sandbox[i], "bench", b->state, &err) < 0) {
                fprintf(stderr,
                        "left behind: sandbox %s (%s); remove it with `clearing --state-dir %s rm "
                        "--engine %s`\n",
                        b->sandbox[i], err.message, b->state, b->sandbox[i]);
                still++;
            }
        }
        char owner[sizeof(b->state) + 32];
        snprintf(owner, sizeof(owner), "daemon:%s/clearing.db", b->state);
        clr_sandbox_info *list = NULL;
        size_t n = 0;
        clr_error err = CLR_ERROR_INIT;
        if (clr_sandbox_list(&list, &n, b->eng, &err) < 0) {
            fprintf(stderr, "cleanup: listing sandboxes: %s\n", err.message);
            still++;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(list[i].owner, owner) != 0)
                continue;
            bool known = false;
            for (int k = 0; k < (int)b->nsandboxes; k++)
                known = known || (b->sandbox_left[k] && strcmp(b->sandbox[k], list[i].id) == 0);
            if (known)
                continue; /* already counted above */
            err = (clr_error)CLR_ERROR_INIT;
            if (clr_sandbox_destroy(b->eng, list[i].id, "bench", b->state, &err) < 0) {
                fprintf(stderr,
                        "left behind: sandbox %s (%s); remove it with `clearing --state-dir %s rm "
                        "--engine %s`\n",
                        list[i].id, err.message, b->state, list[i].id);
                still++;
            } else {
                fprintf(stderr, "cleanup: removed sandbox %s, which the daemon had not\n",
                        list[i].id);
            }
        }
        free(list);

        /* Plain containers by name, which also covers one whose create answer was lost. */
        for (int i = 0; i < (int)b->nsandboxes; i++) {
            if (!b->raw_name[i][0])
                continue;
            if (raw_remove(b->eng, b->raw_name[i], why, sizeof(why)) < 0) {
                fprintf(stderr,
                        "left behind: container %s (%s); remove it with `docker rm -f %s`\n",
                        b->raw_name[i], why, b->raw_name[i]);
                still++;
            }
        }
    }

    /* The temporary directory: the log, the socket, the database, the (empty) workspaces
     * directory. FTW_MOUNT: never into a workspace that is still mounted. */
    if (b->dir[0]) {
        if (b->daemon_failed)
            print_daemon_log(b);
        nftw(b->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        if (access(b->dir, F_OK) == 0) {
            fprintf(stderr, "left behind: %s; remove it with `rm -rf %s` (unmount what is mounted "
                            "under it first)\n",
                    b->dir, b->dir);
            still++;
        }
    }
    return still;
}

/* ---- figures ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p% of the samples at or below it. NAN if
 * there are none. The series must be sorted. */
static double percentile(const struct series *s, unsigned p)
{
    if (s->n == 0)
        return NAN;
    size_t rank = (p * s->n + 99) / 100;
    if (rank < 1)
        rank = 1;
    return s->ms[rank - 1];
}

static double ratio(double a, double b)
{
    return b > 0 && !isnan(a) ? a / b : NAN;
}

static double rate_of(const struct throughput *tp)
{
    return tp->seconds > 0 ? (double)tp->execs / tp->seconds : NAN;
}

static void cell(double v, int width, int decimals)
{
    if (isnan(v))
        printf(" %*s |", width, "-");
    else
        printf(" %*.*f |", width, decimals, v);
}

static void cell_ratio(double v)
{
    if (isnan(v))
        printf(" %9s\n", "-");
    else
        printf(" %8.2fx\n", v);
}

static void value_row(const char *label, double v, int decimals, const char *unit)
{
    if (isnan(v))
        printf("%-27s | %12s\n", label, "-");
    else
        printf("%-27s | %8.*f %s\n", label, decimals, v, unit);
}

static void print_table(struct bench *b, unsigned left_behind)
{
    printf("api: daemon clearing %s over a unix socket against raw docker exec; image %s, runtime "
           "runsc, engine API %s\n",
           b->daemon_version[0] ? b->daemon_version : "?", CLR_DEFAULT_IMAGE,
           clr_engine_api_version(b->eng));
    unsigned long tp_failed[SIDE_COUNT] = {0, 0};
    for (unsigned ci = 0; ci < b->client_counts; ci++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            tp_failed[sd] += b->tp[ci][sd].failed;
    printf("failed: latency clearing %u, raw docker %u; throughput clearing %lu, raw docker %lu; "
           "left behind %u\n\n",
           b->lat[SIDE_CLEARING].failed, b->lat[SIDE_RAW].failed, tp_failed[SIDE_CLEARING],
           tp_failed[SIDE_RAW], left_behind);

    double p50[SIDE_COUNT], p95[SIDE_COUNT], p99[SIDE_COUNT];
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        p50[sd] = percentile(&b->lat[sd], 50);
        p95[sd] = percentile(&b->lat[sd], 95);
        p99[sd] = percentile(&b->lat[sd], 99);
    }
    double lat_ratio = ratio(p50[SIDE_CLEARING], p50[SIDE_RAW]);
    printf("%-9s | %12s | %12s | %12s | %14s | %14s | %14s | %9s\n", "latency", "clearing p50",
           "clearing p95", "clearing p99", "raw docker p50", "raw docker p95", "raw docker p99",
           "ratio p50");
    printf("----------+--------------+--------------+--------------+----------------+-------------"
           "---+----------------+----------\n");
    printf("%-9s |", "exec");
    cell(p50[SIDE_CLEARING], 12, 1);
    cell(p95[SIDE_CLEARING], 12, 1);
    cell(p99[SIDE_CLEARING], 12, 1);
    cell(p50[SIDE_RAW], 14, 1);
    cell(p95[SIDE_RAW], 14, 1);
    cell(p99[SIDE_RAW], 14, 1);
    cell_ratio(lat_ratio);
    printf("(milliseconds, exec of `true`, %u rounds interleaved; percentiles by nearest rank over "
           "the execs that succeeded)\n\n",
           b->rounds_done);

    double rate[MAX_CLIENT_COUNTS][SIDE_COUNT], tp_ratio[MAX_CLIENT_COUNTS];
    printf("%-10s | %7s | %12s | %14s | %9s\n", "throughput", "clients", "clearing",
           "raw docker", "ratio");
    printf("-----------+---------+--------------+----------------+----------\n");
    for (unsigned ci = 0; ci < b->client_counts; ci++) {
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            rate[ci][sd] = rate_of(&b->tp[ci][sd]);
        tp_ratio[ci] = ratio(rate[ci][SIDE_CLEARING], rate[ci][SIDE_RAW]);
        printf("%-10s | %7u |", "execs/s", b->clients[ci]);
        cell(rate[ci][SIDE_CLEARING], 12, 1);
        cell(rate[ci][SIDE_RAW], 14, 1);
        cell_ratio(tp_ratio[ci]);
    }
    printf("(each client back to back in its own sandbox or container; per client count %.1f s "
           "clearing, %.1f s raw docker, %u slice%s per side, alternating; exec of `true`; "
           "ratio below 1: clearing is slower)\n\n",
           b->tp[0][SIDE_CLEARING].seconds, b->tp[0][SIDE_RAW].seconds, b->slices_per_side,
           b->slices_per_side == 1 ? "" : "s");

    const struct footprint *f = &b->fp;
    char rss_labels[RSS_COUNT][40], idle_labels[IDLE_COUNT][40];
    snprintf(rss_labels[RSS_EMPTY], sizeof(rss_labels[0]), "RSS, 0 sandboxes");
    snprintf(rss_labels[RSS_IDLE], sizeof(rss_labels[0]), "RSS, %u idle sandboxes",
             b->nsandboxes);
    snprintf(rss_labels[RSS_AFTER_LOAD], sizeof(rss_labels[0]), "RSS, %u idle, after the load",
             b->nsandboxes);
    snprintf(idle_labels[IDLE_EMPTY], sizeof(idle_labels[0]), "idle CPU, 0 sandboxes");
    snprintf(idle_labels[IDLE_SANDBOXES], sizeof(idle_labels[0]), "idle CPU, %u idle sandboxes",
             b->nsandboxes);
    printf("%-27s | %12s\n", "daemon footprint", "value");
    printf("----------------------------+-------------\n");
    for (int i = 0; i < RSS_COUNT; i++)
        value_row(rss_labels[i], f->rss_kib[i] / 1024.0, 1, "MiB");
    value_row("peak RSS (VmHWM)", f->peak_rss_kib / 1024.0, 1, "MiB");
    for (int i = 0; i < IDLE_COUNT; i++)
        value_row(idle_labels[i], f->idle_cpu_pct[i], 2, "%");
    printf("(VmRSS of the daemon process; idle CPU: utime+stime over %u s with nothing to do, in "
           "%% of one core, resolution %.1f%%)\n\n",
           b->idle_s, 100.0 / (double)sysconf(_SC_CLK_TCK) / (b->idle_s ? b->idle_s : 1));

    /* Per idle sandbox, and what it means for this host: how many idle ones fit in its memory
     * by PSS (nothing else running), how many at clearing's default memory limit (what the
     * sandboxes may grow to), and the daemon's own share. */
    const double host = b->host_mem_kib;
    double pss_each[SIDE_COUNT], rss_each[SIDE_COUNT];
    printf("%-27s | %12s | %14s\n", "memory per idle sandbox", "clearing", "raw docker");
    printf("----------------------------+--------------+---------------\n");
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct sandbox_memory *m = &b->mem[sd];
        pss_each[sd] = m->sandboxes && m->processes ? m->pss_kib / m->sandboxes : NAN;
        rss_each[sd] = m->sandboxes && m->processes ? m->rss_kib / m->sandboxes : NAN;
    }
    printf("%-27s |", "PSS (MiB)");
    cell(pss_each[SIDE_CLEARING] / 1024.0, 12, 1);
    cell(pss_each[SIDE_RAW] / 1024.0, 14, 1);
    printf("\n%-27s |", "RSS (MiB, shared counted)");
    cell(rss_each[SIDE_CLEARING] / 1024.0, 12, 1);
    cell(rss_each[SIDE_RAW] / 1024.0, 14, 1);
    printf("\n%-27s |", "processes");
    cell(b->mem[SIDE_CLEARING].sandboxes ? (double)b->mem[SIDE_CLEARING].processes /
                                               b->mem[SIDE_CLEARING].sandboxes
                                         : NAN,
         12, 1);
    cell(b->mem[SIDE_RAW].sandboxes ? (double)b->mem[SIDE_RAW].processes /
                                          b->mem[SIDE_RAW].sandboxes
                                    : NAN,
         14, 1);
    printf("\n%-27s |", "idle ones in host memory");
    cell(floor(host / pss_each[SIDE_CLEARING]), 12, 0);
    cell(floor(host / pss_each[SIDE_RAW]), 14, 0);
    const clr_limits defaults = CLR_LIMITS_INIT;
    const double limit_kib = (double)defaults.memory_bytes / 1024.0;
    printf("\n(%u idle sandboxes per side, warmed up: the containerd shim and every process "
           "below it, runsc's gofer, sentry and stubs; host MemTotal %.1f GiB; at clearing's "
           "default limit of %.0f MiB each, %.0f sandboxes fit; the daemon's RSS with %u "
           "sandboxes is %.3f%% of the host)\n\n",
           b->mem[SIDE_CLEARING].sandboxes, host / 1048576.0, limit_kib / 1024.0,
           floor(host / (limit_kib + pss_each[SIDE_CLEARING])), b->nsandboxes,
           f->rss_kib[RSS_IDLE] / host * 100.0);

    /* One line per measurement for scripts: grep '^BENCH api '. */
    printf("BENCH api op=exec clearing_p50_ms=%.1f clearing_p95_ms=%.1f clearing_p99_ms=%.1f "
           "raw_p50_ms=%.1f raw_p95_ms=%.1f raw_p99_ms=%.1f ratio_p50=%.2f clearing_n=%zu "
           "raw_n=%zu clearing_failed=%u raw_failed=%u\n",
           p50[SIDE_CLEARING], p95[SIDE_CLEARING], p99[SIDE_CLEARING], p50[SIDE_RAW],
           p95[SIDE_RAW], p99[SIDE_RAW], lat_ratio, b->lat[SIDE_CLEARING].n, b->lat[SIDE_RAW].n,
           b->lat[SIDE_CLEARING].failed, b->lat[SIDE_RAW].failed);
    for (unsigned ci = 0; ci < b->client_counts; ci++) {
        const struct throughput *tp = b->tp[ci];
        printf("BENCH api op=throughput clearing_execs_per_s=%.1f raw_execs_per_s=%.1f ratio=%.2f "
               "clients=%u clearing_s=%.1f raw_s=%.1f clearing_execs=%lu raw_execs=%lu "
               "clearing_failed=%lu raw_failed=%lu\n",
               rate[ci][SIDE_CLEARING], rate[ci][SIDE_RAW], tp_ratio[ci], b->clients[ci],
               tp[SIDE_CLEARING].seconds, tp[SIDE_RAW].seconds, tp[SIDE_CLEARING].execs,
               tp[SIDE_RAW].execs, tp[SIDE_CLEARING].failed, tp[SIDE_RAW].failed);
    }
    printf("BENCH api op=footprint rss_0_kib=%.0f rss_%u_kib=%.0f rss_%u_after_load_kib=%.0f "
           "peak_rss_kib=%.0f idle_cpu_0_pct=%.2f idle_cpu_%u_pct=%.2f idle_s=%u "
           "rss_%u_host_pct=%.4f\n",
           f->rss_kib[RSS_EMPTY], b->nsandboxes, f->rss_kib[RSS_IDLE], b->nsandboxes,
           f->rss_kib[RSS_AFTER_LOAD], f->peak_rss_kib, f->idle_cpu_pct[IDLE_EMPTY],
           b->nsandboxes, f->idle_cpu_pct[IDLE_SANDBOXES], b->idle_s, b->nsandboxes,
           f->rss_kib[RSS_IDLE] / host * 100.0);
    printf("BENCH api op=memory sandboxes=%u clearing_pss_kib=%.0f clearing_rss_kib=%.0f "
           "raw_pss_kib=%.0f raw_rss_kib=%.0f clearing_processes=%u raw_processes=%u "
           "host_kib=%.0f clearing_idle_fit=%.0f raw_idle_fit=%.0f\n",
           b->mem[SIDE_CLEARING].sandboxes, pss_each[SIDE_CLEARING], rss_each[SIDE_CLEARING],
           pss_each[SIDE_RAW], rss_each[SIDE_RAW], b->mem[SIDE_CLEARING].processes,
           b->mem[SIDE_RAW].processes, host, floor(host / pss_each[SIDE_CLEARING]),
           floor(host / pss_each[SIDE_RAW]));
}

/* v rounded to `scale` (1000: three decimals), or null when there is no figure. */
static json_t *num_json(double v, double scale)
{
    return isnan(v) ? json_null() : json_real(round(v * scale) / scale);
}

static json_t *kib_json(double v)
{
    return isnan(v) ? json_null() : json_integer((json_int_t)v);
}

static void print_json(struct bench *b, unsigned left_behind)
{
    json_t *lat = json_object();
    double p50[SIDE_COUNT];
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct series *s = &b->lat[sd];
        json_t *samples = json_array();
        for (size_t i = 0; i < s->n; i++)
            json_array_append_new(samples, num_json(s->ms[i], 1000));
        p50[sd] = percentile(s, 50);
        json_t *o = json_pack("{s:o, s:o, s:o, s:I, s:i, s:o}", "p50_ms",
                              num_json(p50[sd], 1000), "p95_ms",
                              num_json(percentile(s, 95), 1000), "p99_ms",
                              num_json(percentile(s, 99), 1000), "n", (json_int_t)s->n,
                              "failed", (int)s->failed, "samples_ms", samples);
        json_object_set_new(lat, side_keys[sd], o);
    }
    json_object_set_new(lat, "ratio_p50", num_json(ratio(p50[SIDE_CLEARING], p50[SIDE_RAW]), 1000));

    /* "throughput" is the first client count's (8 by default), as before there was a list;
     * "throughput_by_clients" has every count's. */
    json_t *tp_all = json_array();
    for (unsigned ci = 0; ci < b->client_counts; ci++) {
        json_t *tp = json_object();
        double rate[SIDE_COUNT];
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            const struct throughput *t = &b->tp[ci][sd];
            json_t *slices = json_array();
            for (unsigned i = 0; i < t->slices; i++)
                json_array_append_new(slices, num_json(t->slice_rate[i], 1000));
            rate[sd] = rate_of(t);
            json_object_set_new(tp, side_keys[sd],
                                json_pack("{s:o, s:I, s:I, s:o, s:o}", "execs_per_s",
                                          num_json(rate[sd], 1000), "execs",
                                          (json_int_t)t->execs, "failed", (json_int_t)t->failed,
                                          "seconds", num_json(t->seconds, 1000),
                                          "slices_execs_per_s", slices));
        }
        json_object_set_new(tp, "ratio",
                            num_json(ratio(rate[SIDE_CLEARING], rate[SIDE_RAW]), 1000));
        json_object_set_new(tp, "clients", json_integer(b->clients[ci]));
        json_array_append_new(tp_all, tp);
    }
    json_t *tp = json_incref(json_array_get(tp_all, 0));

    char rss_keys[RSS_COUNT][40], idle_keys[IDLE_COUNT][40];
    snprintf(rss_keys[RSS_EMPTY], sizeof(rss_keys[0]), "sandboxes_0");
    snprintf(rss_keys[RSS_IDLE], sizeof(rss_keys[0]), "sandboxes_%u", b->nsandboxes);
    snprintf(rss_keys[RSS_AFTER_LOAD], sizeof(rss_keys[0]), "sandboxes_%u_after_load",
             b->nsandboxes);
    snprintf(idle_keys[IDLE_EMPTY], sizeof(idle_keys[0]), "sandboxes_0");
    snprintf(idle_keys[IDLE_SANDBOXES], sizeof(idle_keys[0]), "sandboxes_%u", b->nsandboxes);
    json_t *rss = json_object(), *cpu = json_object();
    for (int i = 0; i < RSS_COUNT; i++)
        json_object_set_new(rss, rss_keys[i], kib_json(b->fp.rss_kib[i]));
    json_object_set_new(rss, "peak", kib_json(b->fp.peak_rss_kib));
    for (int i = 0; i < IDLE_COUNT; i++)
        json_object_set_new(cpu, idle_keys[i], num_json(b->fp.idle_cpu_pct[i], 1000));
    json_t *mem = json_object();
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct sandbox_memory *m = &b->mem[sd];
        json_object_set_new(mem, side_keys[sd],
                            json_pack("{s:i, s:i, s:o, s:o}", "sandboxes", (int)m->sandboxes,
                                      "processes", (int)m->processes, "pss_kib",
                                      kib_json(m->processes ? m->pss_kib : NAN), "rss_kib",
                                      kib_json(m->processes ? m->rss_kib : NAN)));
    }
    json_object_set_new(mem, "host_mem_total_kib", kib_json(b->host_mem_kib));

    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:b, s:s, s:{s:o}, s:o, "
        "s:{s:o, s:o, s:i}}",
        "benchmark", "api", "daemon_version", b->daemon_version, "image", CLR_DEFAULT_IMAGE,
        "runtime", "runsc", "engine_api", clr_engine_api_version(b->eng), "rounds",
        (int)b->rounds_done, "clients", (int)b->clients[0], "duration_s", (int)b->duration_s,
        "slices_per_side", (int)b->slices_per_side, "left_behind", (int)left_behind,
        "interrupted", interrupted ? 1 : 0, "percentile_method", "nearest-rank",
        "latency", "exec", lat, "throughput", tp, "footprint", "rss_kib", rss, "idle_cpu_pct",
        cpu, "idle_s", (int)b->idle_s);
    if (j) {
        json_object_set_new(j, "throughput_by_clients", tp_all);
        json_object_set_new(j, "sandbox_memory", mem);
    } else {
        json_decref(tp_all);
        json_decref(mem);
    }
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12))
                : NULL;
    if (s) {
        puts(s);
        free(s);
    } else {
        fprintf(stderr, "clearing-bench-api: cannot encode the JSON report\n");
    }
    json_decref(j);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: clearing-bench-api [--rounds N] [--duration S] [--idle S] [--quick] [--json]\n"
            "                          [--clients N[,N...]] [--clearing PATH] [--agent PATH]\n\n"
            "Starts its own `clearing serve` and measures, against raw Docker Engine API execs\n"
            "in plain runsc containers (`sleep infinity`) in the same run: the latency of an exec\n"
            "of `true` through the daemon's REST API (interleaved round by round), the exec\n"
            "throughput of %d concurrent clients, the daemon's RSS and idle CPU, and the memory\n"
            "of an idle sandbox. Needs root,\n"
            "a running dockerd with runsc registered and the image " CLR_DEFAULT_IMAGE ".\n\n"
            "  --rounds N      latency rounds (default %d; at least %d unless --quick)\n"
            "  --duration S    throughput seconds per side (default %d, at most %d)\n"
            "  --idle S        seconds of idleness for the idle CPU (default %d, at most %d)\n"
            "  --quick         smoke test: %d rounds, %d s, %d s idle by default; any values\n"
            "  --clients LIST  throughput at each of these client counts, comma-separated, at\n"
            "                  most %d counts of 1..%d (default %d); as many sandboxes and\n"
            "                  containers as the largest count are created\n"
            "  --json          print the figures (and every latency sample) as one JSON object\n"
            "  --clearing PATH the clearing binary (default $CLEARING_BIN, else ../src/clearing\n"
            "                  next to this program, as in a build directory)\n"
            "  --agent PATH    clearing-agent for the daemon (default $CLEARING_AGENT, else\n"
            "                  ../agent/clearing-agent next to this program)\n"
            "\nExit status: 0 all went well, 1 an operation failed or something was left\n"
            "behind, 2 bad usage or the host is not ready.\n",
            DEFAULT_CLIENTS, DEFAULT_ROUNDS, MIN_ROUNDS, DEFAULT_DURATION_S, MAX_DURATION_S,
            DEFAULT_IDLE_S, MAX_IDLE_S, QUICK_ROUNDS, QUICK_DURATION_S, QUICK_IDLE_S,
            MAX_CLIENT_COUNTS, MAX_CLIENTS, DEFAULT_CLIENTS);
}

/* Fails early, with the fix, rather than with the same error in every round. */
static int preflight(clr_engine *eng, clr_error *err)
{
    if (geteuid() != 0)
        return clr_error_set(err, CLR_E_DENIED, EPERM,
                             "clearing mounts a tmpfs workspace per sandbox: run the benchmark as "
                             "root");
    bool have = false;
    if (clr_engine_has_runtime(eng, "runsc", &have, err) < 0)
        return -1;
    if (!have)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the runsc runtime is not registered with the Docker engine: run "
                             "scripts/setup.sh");
    int st = clr_engine_call(eng, "GET", "/images/" CLR_DEFAULT_IMAGE "/json", NULL, NULL, err);
    if (st == 404)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                             "image " CLR_DEFAULT_IMAGE " is missing: build it with "
                             "images/build.sh (scripts/setup.sh does)");
    return st == 200 ? 0 : -1;
}

/* An executable given by option, else by environment variable, else at rel from the
 * directory of this program; the absolute path goes to out. */
static int find_program(char *out, const char *given, const char *env, const char *rel,
                        const char *what)
{
    char guess[PATH_MAX];
    const char *p = given ? given : getenv(env);
    if (!p || !*p) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            fprintf(stderr, "clearing-bench-api: no %s: set %s\n", what, env);
            return -1;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        int len = snprintf(guess, sizeof(guess), "%s/%s", self, rel);
        if (len < 0 || (size_t)len >= sizeof(guess)) {
            fprintf(stderr, "clearing-bench-api: no %s: set %s\n", what, env);
            return -1;
        }
        p = guess;
    }
    if (!realpath(p, out) || access(out, X_OK) < 0) {
        fprintf(stderr, "clearing-bench-api: %s %s: %s (give it with the option or %s)\n", what,
                p, strerror(errno), env);
        return -1;
    }
    return 0;
}

static int parse_count(const char *opt, const char *text, unsigned max, unsigned *out)
{
    uint64_t v;
    clr_error err = CLR_ERROR_INIT;
    if (clr_parse_uint(&v, text, &err) < 0 || v == 0 || v > max) {
        fprintf(stderr, "clearing-bench-api: %s '%s': expected 1..%u\n", opt, text, max);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* "1,8,32": at most MAX_CLIENT_COUNTS counts of 1..MAX_CLIENTS. */
static int parse_clients(const char *text, struct bench *b)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", text);
    b->client_counts = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (b->client_counts == MAX_CLIENT_COUNTS) {
            fprintf(stderr, "clearing-bench-api: --clients: at most %d counts\n",
                    MAX_CLIENT_COUNTS);
            return -1;
        }
        if (parse_count("--clients", t, MAX_CLIENTS, &b->clients[b->client_counts]) < 0)
            return -1;
        b->client_counts++;
    }
    if (b->client_counts == 0) {
        fprintf(stderr, "clearing-bench-api: --clients '%s': expected N[,N...]\n", text);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"rounds", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"idle", required_argument, NULL, 'i'},
        {"quick", no_argument, NULL, 'q'},
        {"clients", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"clearing", required_argument, NULL, 'c'},
        {"agent", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned rounds = 0, duration = 0, idle = 0;
    const char *clearing_opt = NULL, *agent_opt = NULL, *clients_opt = NULL;
    bool quick = false, json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (parse_count("--rounds", optarg, MAX_ROUNDS, &rounds) < 0)
                return EXIT_USAGE;
            break;
        case 'd':
            if (parse_count("--duration", optarg, MAX_DURATION_S, &duration) < 0)
                return EXIT_USAGE;
            break;
        case 'i':
            if (parse_count("--idle", optarg, MAX_IDLE_S, &idle) < 0)
                return EXIT_USAGE;
            break;
        case 'q': quick = true; break;
        case 'n': clients_opt = optarg; break;
        case 'j': json = true; break;
        case 'c': clearing_opt = optarg; break;
        case 'a': agent_opt = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "clearing-bench-api: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (rounds == 0)
        rounds = quick ? QUICK_ROUNDS : DEFAULT_ROUNDS;
    if (duration == 0)
        duration = quick ? QUICK_DURATION_S : DEFAULT_DURATION_S;
    if (idle == 0)
        idle = quick ? QUICK_IDLE_S : DEFAULT_IDLE_S;
    /* A p95 over fewer than 30 samples is the maximum, not a percentile. */
    if (rounds < MIN_ROUNDS && !quick) {
        fprintf(stderr,
                "clearing-bench-api: --rounds %u is below the minimum of %d (p95 needs it); use "
                "--quick for a smoke test\n",
                rounds, MIN_ROUNDS);
        return EXIT_USAGE;
    }

    static struct bench b; /* large: the throughput slice rates */
    b.clients[0] = DEFAULT_CLIENTS;
    b.client_counts = 1;
    if (clients_opt && parse_clients(clients_opt, &b) < 0)
        return EXIT_USAGE;
    for (unsigned ci = 0; ci < b.client_counts; ci++)
        if (b.clients[ci] > b.nsandboxes)
            b.nsandboxes = b.clients[ci];
    b.rounds = rounds;
    b.duration_s = duration;
    b.idle_s = idle;
    b.fp = (struct footprint){.rss_kib = {NAN, NAN, NAN},
                              .peak_rss_kib = NAN,
                              .idle_cpu_pct = {NAN, NAN}};
    if (find_program(b.clearing_bin, clearing_opt, "CLEARING_BIN", "../src/clearing",
                     "clearing binary") < 0 ||
        find_program(b.agent, agent_opt, "CLEARING_AGENT", "../agent/clearing-agent",
                     "agent") < 0)
        return EXIT_USAGE;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        b.lat[sd].ms = calloc(rounds, sizeof(double));
        if (!b.lat[sd].ms) {
            fprintf(stderr, "clearing-bench-api: out of memory\n");
            return EXIT_FAILED;
        }
    }

    clr_error err = CLR_ERROR_INIT;
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    if (clr_engine_open(&b.eng, &eo, &err) < 0 || preflight(b.eng, &err) < 0) {
        fprintf(stderr, "clearing-bench-api: %s: %s\n", clr_error_code_name(err.code),
                err.message);
        clr_engine_free(b.eng);
        return EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "clearing-bench-api: cannot initialise libcurl\n");
        clr_engine_free(b.eng);
        return EXIT_FAILED;
    }

    /* Stop after the current round or slice, which still cleans up; a second signal kills the
     * process (SA_RESETHAND). */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < (int)b.nsandboxes; i++)
        snprintf(b.raw_name[i], sizeof(b.raw_name[i]), RAW_NAME_PREFIX "%ld-%d", (long)getpid(),
                 i + 1);

    bool failed = false;
    char why[1100];
    snprintf(b.dir, sizeof(b.dir), "/tmp/clearing-bench-api.XXXXXX");
    if (!mkdtemp(b.dir)) {
        fprintf(stderr, "clearing-bench-api: cannot create a temporary directory: %s\n",
                strerror(errno));
        b.dir[0] = '\0';
        failed = true;
    } else {
        snprintf(b.sock, sizeof(b.sock), "%s/clearing.sock", b.dir);
        snprintf(b.state, sizeof(b.state), "%s/state", b.dir);
        snprintf(b.log, sizeof(b.log), "%s/daemon.log", b.dir);
        if (api_open(&b.api, b.sock, why, sizeof(why)) < 0 ||
            daemon_start(&b, why, sizeof(why)) < 0 || daemon_wait(&b, why, sizeof(why)) < 0) {
            fprintf(stderr, "clearing-bench-api: starting the daemon: %s\n", why);
            if (b.daemon > 0 && !interrupted)
                print_daemon_log(&b);
            failed = true;
        } else {
            fprintf(stderr, "daemon: clearing %s, pid %ld, socket %s\n", b.daemon_version,
                    (long)b.daemon, b.sock);
        }
    }

    if (!failed && !interrupted) {
        /* 3: the footprint of a daemon with nothing to manage. */
        b.fp.idle_cpu_pct[IDLE_EMPTY] = idle_cpu(&b, "0 sandboxes");
        b.fp.rss_kib[RSS_EMPTY] = proc_status_kib(b.daemon, "VmRSS");
        if (setup(&b) < 0) {
            b.setup_failed = true;
        } else {
            b.fp.rss_kib[RSS_IDLE] = proc_status_kib(b.daemon, "VmRSS");
            /* 4: the sandboxes idle and warmed up, before the load. */
            sandbox_memory(&b);
            latency(&b);
            if (!interrupted && !b.daemon_failed)
                throughput(&b);
            /* 3 again: the same sandboxes, idle now that they have seen work. */
            if (!interrupted && !b.daemon_failed) {
                b.fp.idle_cpu_pct[IDLE_SANDBOXES] = idle_cpu(&b, "idle sandboxes");
                b.fp.rss_kib[RSS_AFTER_LOAD] = proc_status_kib(b.daemon, "VmRSS");
            }
        }
        /* A daemon that died has no /proc figures: they stay NAN. */
        b.fp.peak_rss_kib = proc_status_kib(b.daemon, "VmHWM");
    }
    if (interrupted)
        fprintf(stderr, "interrupted; cleaning up\n");
    unsigned left_behind = cleanup(&b);

    bool measured = !failed && !b.setup_failed;
    if (measured) {
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            qsort(b.lat[sd].ms, b.lat[sd].n, sizeof(double), cmp_double);
        if (json)
            print_json(&b, left_behind);
        else
            print_table(&b, left_behind);
    }

    failed = failed || !measured || interrupted || left_behind > 0 || b.daemon_failed;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        failed = failed || b.lat[sd].failed > 0;
        for (unsigned ci = 0; ci < b.client_counts; ci++)
            failed = failed || b.tp[ci][sd].failed > 0;
        free(b.lat[sd].ms);
    }
    clr_engine_free(b.eng);
    curl_global_cleanup();
    return failed ? EXIT_FAILED : EXIT_OK;
}
